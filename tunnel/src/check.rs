//! `tunnel check`: everything `tunnel run` needs, judged before it runs, each finding as one
//! line that names the file it is about and says what to do. Where `tunnel run` stops at a
//! certificate's first problem (as a peer does), this shows every problem of every
//! certificate at once.
//!
//! Nothing here re-decides what the daemon decides: the config is read by `Config::load`,
//! the host by `kernel::check` and the functions `tunnel run` calls, certificates by the
//! daemon's own verifiers and X.509-SVID rules. This module only adds the words.

mod certificates;
mod chain;
mod crl;
mod host;
mod issuer;
mod leaf;
mod owner;
mod report;
mod trust;

use std::{
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

pub use report::{Check, Report, Section, Status};

use rustls_pki_types::CertificateDer;

use crate::{
    config::{Config, ConfigError, Site},
    credentials::expiry::warning_point,
    tls::Trust,
};

/// Whether to judge this host (the kernel section) or only the files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    Check,
    /// Tests: the files only (the kernel section needs root and a prepared host).
    Skip,
}

/// Runs every check of the config at `config_file`.
pub fn run(config_file: &Path, host: Host) -> Report {
    let mut report = Report::default();
    let Some(config) = config_section(&mut report, config_file) else {
        return report;
    };
    if host == Host::Check {
        host::check(&mut report, &config);
    }
    let now = unix_now();
    let trust = trust::check(&mut report, &config, now);
    certificates::check(&mut report, &config, trust.as_ref(), now);
    report
}

fn config_section(report: &mut Report, file: &Path) -> Option<Config> {
    let mut lines = report::Lines::new(report, Section::Config);
    match Config::load(file) {
        Ok(config) => {
            lines.ok(
                "parses",
                format!(
                    "{} parses: node {}, {} workload(s), trust bundle {}, {} CRL file(s)",
                    file.display(),
                    config.node.spiffe_id,
                    config.workloads.len(),
                    config.trust_bundle.value.display(),
                    config.crl.len()
                ),
            );
            Some(config)
        }
        Err(e) => {
            // Each problem as ConfigError prints it (file:line: key: message).
            for problem in &e.problems {
                let one = ConfigError::new(&e.file, vec![problem.clone()]);
                lines.fail(
                    "parses",
                    one.to_string(),
                    "fix this in the config file (tunnel run would exit 64 with the same \
                     message); the other checks need a config that parses"
                        .into(),
                );
            }
            report.config_unusable = true;
            None
        }
    }
}

/// A config key and where it is, for hints: `workload[0].cert (/etc/tunnel/tunnel.toml:17)`.
fn at(config: &Config, site: &Site) -> String {
    match site.line {
        Some(line) => format!("{} ({}:{line})", site.key, config.file.display()),
        None => format!("{} ({})", site.key, config.file.display()),
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// What certificates are judged by: the trust as the daemon builds it, and the bundle's
/// certificates as read (to name a leaf's missing issuer).
struct Trusted {
    trust: Trust,
    roots: Vec<CertificateDer<'static>>,
}

/// Where `now` falls in a certificate's life, as the daemon's expiry watch sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    NotYet {
        left: i64,
    },
    Fresh,
    /// Past its warning point: it should have been replaced by now.
    Aging,
    Expired {
        ago: i64,
    },
}

fn life(not_before: i64, not_after: i64, now: i64) -> Life {
    if now > not_after {
        Life::Expired {
            ago: now - not_after,
        }
    } else if now < not_before {
        Life::NotYet {
            left: not_before - now,
        }
    } else if now >= warning_point(not_before, not_after) {
        Life::Aging
    } else {
        Life::Fresh
    }
}

/// Roughly how long `seconds` is, in words (`2d 3h`), for either sign.
fn span(seconds: i64) -> String {
    crate::duration::span(seconds.unsigned_abs())
}

#[cfg(test)]
mod tests;
