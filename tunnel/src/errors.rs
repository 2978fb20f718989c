//! How errors are written and printed. Every error type of this crate follows one rule, so
//! that a chain printed link by link says each fact exactly once:
//!
//! - a leaf says everything in its message and has no `source()` (an `IdError`, a config
//!   problem; a value it embeds, such as the `IdError` inside `SvidError::InvalidSpiffeId`,
//!   is part of its message, not a source);
//! - a wrapper is `#[error(transparent)]`, or its message names only its own step
//!   ("failed to mount bpffs at /sys/fs/bpf") and leaves the cause to `source()`.
//!
//! Errors of other crates that print their cause and also return it from `source()` are
//! adapted where they enter (`ebpf::AyaError`).

use std::error::Error;

/// An error with its causes on one line, `outer: inner: innermost`.
pub fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("failed to open {path}")]
    struct Open {
        path: &'static str,
        source: io::Error,
    }

    #[test]
    fn each_link_is_printed_once() {
        let error = Open {
            path: "/x",
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert_eq!(chain(&error), "failed to open /x: entity not found");
    }

    /// The rule, checked over every error type of the workspace's daemon-side crates (this
    /// one, `tunnel-cni`, `tunnel-pod-api`) as written: no `#[error]`
    /// message interpolates the field that `source()` returns (a field named `source`, or
    /// one marked `#[source]` or `#[from]`). A wrapper that did would print its cause twice
    /// in every chain.
    #[test]
    fn no_error_message_prints_its_source() {
        let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut violations = Vec::new();
        let mut checked = 0;
        let files = ["tunnel", "tunnel-cni", "tunnel-pod-api"]
            .iter()
            .flat_map(|name| rust_files(&crates.join(name).join("src")));
        for path in files {
            let text = std::fs::read_to_string(&path).unwrap();
            for (message, declaration) in error_attributes(&text) {
                checked += 1;
                for field in source_fields(declaration) {
                    if message.contains(&format!("{{{field}}}"))
                        || message.contains(&format!("{{{field}:"))
                        || message.contains(&format!(".{field}"))
                    {
                        violations.push(format!("{}: {message}", path.display()));
                    }
                }
            }
        }
        assert!(checked > 100, "only {checked} #[error] attributes found");
        assert!(violations.is_empty(), "{violations:#?}");
    }

    fn rust_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.extend(rust_files(&path));
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
        files
    }

    /// Each `#[error(...)]` attribute's text, and the declaration it belongs to (up to the
    /// next attribute of its kind or the end of the enum).
    fn error_attributes(text: &str) -> Vec<(&str, &str)> {
        let starts: Vec<usize> = text.match_indices("#[error(").map(|(i, _)| i).collect();
        starts
            .iter()
            .enumerate()
            .filter_map(|(n, &start)| {
                let end = text[start..].find(")]\n")? + start;
                let next = starts.get(n + 1).copied().unwrap_or(text.len());
                let rest = &text[end..next];
                let declaration = rest.find("\n}").map_or(rest, |i| &rest[..i]);
                Some((&text[start..end], declaration))
            })
            .collect()
    }

    /// The fields `source()` returns: one named `source`, one marked `#[source]` or
    /// `#[from]` (named, or `0` in a tuple variant).
    fn source_fields(declaration: &str) -> Vec<String> {
        let mut fields = Vec::new();
        if declaration.contains("source:") {
            fields.push("source".to_string());
        }
        for marker in ["#[source]", "#[from]"] {
            for (at, _) in declaration.match_indices(marker) {
                let after = declaration[at + marker.len()..].trim_start();
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if after[name.len()..].trim_start().starts_with(':') {
                    fields.push(name);
                } else {
                    fields.push("0".to_string());
                }
            }
        }
        fields
    }
}
