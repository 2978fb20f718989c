//! Config errors that point at the file, line and key, e.g.
//! `tunnel.toml:12: capture.destinations[1]: invalid CIDR "10.0.0.1/33": ...`.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use toml::de::{DeTable, DeValue};

/// Where a value came from, kept on typed values whose problems only show at startup (a cert
/// file that is unreadable, a cgroup that is not cgroup v2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    pub key: String,
    pub line: Option<usize>,
}

/// A value and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located<T> {
    pub value: T,
    pub site: Site,
}

/// One thing wrong with the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

/// A config that cannot be used; `tunnel run` exits 64 (EX_USAGE) with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl Problem {
    /// A problem with the value the config set at `site`.
    pub fn at(site: &Site, message: impl Into<String>) -> Self {
        Self {
            line: site.line,
            key: Some(site.key.clone()),
            message: message.into(),
        }
    }
}

impl ConfigError {
    pub fn new(file: &Path, problems: Vec<Problem>) -> Self {
        Self {
            file: file.into(),
            problems,
        }
    }

    pub fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            problems: vec![Problem {
                line: None,
                key: None,
                message: message.into(),
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.file.display())?;
            if let Some(line) = problem.line {
                write!(f, ":{line}")?;
            }
            if let Some(key) = &problem.key {
                write!(f, ": {key}")?;
            }
            write!(f, ": {}", problem.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// One step of a key path: `workload[1].cert` is `[Key("workload"), Index(1), Key("cert")]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// Renders a path the way a reader finds it in the file: `workload[1].cert`.
pub fn render(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Step::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

/// Finds the line of a key path in the document (the deepest part of the path that exists,
/// so a missing key points at its table).
pub struct Locator<'a> {
    text: &'a str,
    root: Option<DeTable<'a>>,
}

impl<'a> Locator<'a> {
    pub fn new(text: &'a str) -> Self {
        let root = DeTable::parse(text).ok().map(toml::Spanned::into_inner);
        Self { text, root }
    }

    pub fn line_of(&self, path: &[Step]) -> Option<usize> {
        let root = self.root.as_ref()?;
        let mut span = None;
        let mut table = Some(root);
        let mut value: Option<&DeValue<'_>> = None;
        for step in path {
            let next = match (step, table, value) {
                (Step::Key(key), Some(t), _) => t.get(key.as_str()),
                (Step::Index(i), _, Some(DeValue::Array(items))) => items.get(*i),
                _ => None,
            };
            let Some(next) = next else { break };
            span = Some(next.span());
            value = Some(next.get_ref());
            table = match next.get_ref() {
                DeValue::Table(t) => Some(t),
                _ => None,
            };
        }
        span.map(|span| self.line_at(span.start))
    }

    /// The document being located in.
    pub fn text(&self) -> &'a str {
        self.text
    }

    pub fn line_at(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_nested_keys_and_array_items() {
        let text = "a = 1\n[capture]\ncgroup = \"/x\"\ndestinations = [\n  \"10.0.0.0/24\",\n  \"bad\",\n]\n[[workload]]\nname = \"w\"\n[[workload]]\nname = \"v\"\n";
        let locator = Locator::new(text);
        let key = |s: &str| Step::Key(s.into());
        assert_eq!(locator.line_of(&[key("capture"), key("cgroup")]), Some(3));
        assert_eq!(
            locator.line_of(&[key("capture"), key("destinations"), Step::Index(1)]),
            Some(6)
        );
        assert_eq!(
            locator.line_of(&[key("workload"), Step::Index(1), key("name")]),
            Some(11)
        );
        // A missing key points at the deepest part that exists.
        assert_eq!(locator.line_of(&[key("capture"), key("ports")]), Some(2));
    }

    #[test]
    fn renders_paths_as_written() {
        let path = [
            Step::Key("workload".into()),
            Step::Index(1),
            Step::Key("cert".into()),
        ];
        assert_eq!(render(&path), "workload[1].cert");
    }
}
