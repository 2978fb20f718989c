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
}
