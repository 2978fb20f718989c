//! What `tunnel check` found, one [`Check`] per line, and its two renderings: text for a
//! person (sections, a status word per line, hints indented below) and one JSON document for
//! scripts.

use std::fmt::{self, Write as _};

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Works now, but needs attention (the daemon starts; peers accept it).
    Warn,
    /// The daemon will not start, or peers will refuse what it presents.
    Fail,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }

    /// Green, yellow, red (ANSI SGR codes).
    fn colour(self) -> &'static str {
        match self {
            Self::Ok => "32",
            Self::Warn => "33",
            Self::Fail => "31",
        }
    }
}

/// The sections, in the order they run and print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Section {
    Config,
    Kernel,
    Trust,
    Certificates,
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Config => "config",
            Self::Kernel => "kernel",
            Self::Trust => "trust",
            Self::Certificates => "certificates",
        })
    }
}

/// One line of the report.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub section: Section,
    /// A short, stable name (`workload frontend: EKU`), for scripts and for grep.
    pub check: String,
    pub status: Status,
    /// What was found, naming the file it was found in.
    pub message: String,
    /// What to do about it (every `fail` has one).
    pub hint: Option<String>,
}

/// Every check, in order.
#[derive(Debug, Default)]
pub struct Report {
    pub checks: Vec<Check>,
    /// The config file itself could not be used (exit 64, as `tunnel run` exits).
    pub config_unusable: bool,
}

impl Report {
    pub fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }

    /// 64 when the config cannot be parsed, 1 when anything failed, 0 otherwise.
    pub fn exit_code(&self) -> u8 {
        if self.config_unusable {
            64
        } else if self.count(Status::Fail) > 0 {
            1
        } else {
            0
        }
    }

    /// The line named `check` (`workload frontend: EKU`).
    pub fn find(&self, check: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.check == check)
    }

    /// `{"checks": [...], "ok": N, "warn": N, "fail": N}`, fields in that order (a
    /// `serde_json::Value` would sort them).
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Document<'a> {
            checks: &'a [Check],
            ok: usize,
            warn: usize,
            fail: usize,
        }
        serde_json::to_string_pretty(&Document {
            checks: &self.checks,
            ok: self.count(Status::Ok),
            warn: self.count(Status::Warn),
            fail: self.count(Status::Fail),
        })
        .expect("the report is plain strings and numbers")
    }

    /// Sections with a header, one line per check, hints indented below their line, and a
    /// summary. `colour` only for a terminal: piped output stays plain text.
    pub fn to_text(&self, colour: bool) -> String {
        let paint = |code: &str, text: &str| {
            if colour {
                format!("\x1b[{code}m{text}\x1b[0m")
            } else {
                text.to_string()
            }
        };
        let mut out = String::new();
        let mut section = None;
        for check in &self.checks {
            if section != Some(check.section) {
                if section.is_some() {
                    out.push('\n');
                }
                section = Some(check.section);
                let name = check.section.to_string();
                let _ = writeln!(out, "{}\n{}", paint("1", &name), "-".repeat(name.len()));
            }
            // Padded before painting, so the escape codes do not count as width.
            let word = format!("{:<4}", check.status.word());
            let _ = writeln!(
                out,
                "{} {}: {}",
                paint(check.status.colour(), &word),
                check.check,
                check.message
            );
            if let Some(hint) = &check.hint {
                let _ = writeln!(out, "     hint: {hint}");
            }
        }
        let (ok, warn, fail) = (
            self.count(Status::Ok),
            self.count(Status::Warn),
            self.count(Status::Fail),
        );
        let verdict = if self.config_unusable {
            "the config file cannot be used: fix it first, the other checks need it"
        } else if fail > 0 {
            "fix each fail above (its hint says how), then run tunnel check again"
        } else if warn > 0 {
            "nothing fails; the warnings need attention before they become failures"
        } else {
            "nothing to fix"
        };
        let _ = write!(
            out,
            "\nsummary: {ok} ok, {} warn, {} fail: {verdict}\n",
            warn,
            if fail > 0 {
                paint(Status::Fail.colour(), &fail.to_string())
            } else {
                fail.to_string()
            }
        );
        out
    }
}

/// Collects the checks of one section.
pub struct Lines<'a> {
    report: &'a mut Report,
    section: Section,
}

impl<'a> Lines<'a> {
    pub fn new(report: &'a mut Report, section: Section) -> Self {
        Self { report, section }
    }

    pub fn push(
        &mut self,
        check: impl Into<String>,
        status: Status,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.report.checks.push(Check {
            section: self.section,
            check: check.into(),
            status,
            message: message.into(),
            hint,
        });
    }

    pub fn ok(&mut self, check: impl Into<String>, message: impl Into<String>) {
        self.push(check, Status::Ok, message, None);
    }

    pub fn warn(&mut self, check: impl Into<String>, message: impl Into<String>, hint: String) {
        self.push(check, Status::Warn, message, Some(hint));
    }

    pub fn fail(&mut self, check: impl Into<String>, message: impl Into<String>, hint: String) {
        self.push(check, Status::Fail, message, Some(hint));
    }
}
