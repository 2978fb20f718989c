//! Each fault a certificate can have, made with the built-in CA, and the exact lines
//! `tunnel check` gives for it: the fixture and the whole-report tests here, the faults by
//! theme in `tests/` (dates, the certificate itself, CRLs and issuers). The kernel section
//! is skipped (it judges the host, not the files).

use std::path::{Path, PathBuf};

use rcgen::ExtendedKeyUsagePurpose;

use super::*;
use crate::{
    ca::{self, LeafSpec},
    test_support::{CONFIG, FRONTEND_ID, Fixture, NODE_ID, good, new_ca},
};

/// `tunnel check` on the fixture's config, without the host section.
trait RunCheck {
    fn run(&self) -> Report;
}

impl RunCheck for Fixture {
    fn run(&self) -> Report {
        run(&self.path("tunnel.toml"), Host::Skip)
    }
}

/// Not valid for another `minutes`.
fn from_the_future(minutes: i64) -> LeafSpec {
    let mut spec = good(FRONTEND_ID);
    spec.not_before = time::OffsetDateTime::now_utc() + time::Duration::minutes(minutes);
    spec
}

/// Every line that is not ok, as (check, status).
fn not_ok(report: &Report) -> Vec<(&str, Status)> {
    report
        .checks
        .iter()
        .filter(|c| c.status != Status::Ok)
        .map(|c| (c.check.as_str(), c.status))
        .collect()
}

/// The line named `check`, which must exist.
fn line<'a>(report: &'a Report, check: &str) -> &'a Check {
    report
        .find(check)
        .unwrap_or_else(|| panic!("no line {check:?} in:\n{}", report.to_text(false)))
}

/// Asserts the line's status, that its message names `file` and says `words`, and that a
/// line that is not ok has a hint.
fn assert_line(report: &Report, check: &str, status: Status, file: &Path, words: &str) {
    let found = line(report, check);
    let text = report.to_text(false);
    assert_eq!(found.status, status, "{check}:\n{text}");
    assert!(
        found.message.contains(&file.display().to_string()),
        "{check} does not name {}:\n{text}",
        file.display()
    );
    assert!(
        found.message.contains(words),
        "{check} lacks {words:?}:\n{text}"
    );
    if status != Status::Ok {
        assert!(found.hint.is_some(), "{check} has no hint:\n{text}");
    }
}

const FRONTEND: &str = "workload frontend";

fn frontend(rule: &str) -> String {
    format!("{FRONTEND}: {rule}")
}

#[test]
fn good_certificates_pass_every_check() {
    let fixture = Fixture::new();
    let report = fixture.run();
    assert_eq!(not_ok(&report), [], "{}", report.to_text(false));
    assert_eq!(report.exit_code(), 0);
    let cert = fixture.path("frontend/cert.pem");
    assert_line(
        &report,
        &frontend("chain"),
        Status::Ok,
        &cert,
        "peers' verifier accepts it",
    );
    assert_line(
        &report,
        &frontend("expiry"),
        Status::Ok,
        &cert,
        "expires in 1d",
    );
    let node = fixture.path("node/cert.pem");
    assert_line(&report, "node: EKU", Status::Ok, &node, "allows serverAuth");
    assert!(
        report
            .to_text(false)
            .ends_with("summary: 20 ok, 0 warn, 0 fail: nothing to fix\n")
    );
}

#[test]
fn the_json_document_parses_and_counts_each_status() {
    let fixture = Fixture::new();
    fixture.issue("frontend", &from_the_future(2));
    let report = fixture.run();
    let text = report.to_json();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(text.starts_with("{\n  \"checks\": ["), "{text}");
    let checks = json["checks"].as_array().unwrap();
    assert_eq!(checks.len(), report.checks.len());
    assert_eq!(json["ok"], 18);
    assert_eq!(json["warn"], 0);
    assert_eq!(json["fail"], 2);
    let validity = checks
        .iter()
        .find(|c| c["check"] == "workload frontend: validity")
        .unwrap();
    assert_eq!(validity["section"], "certificates");
    assert_eq!(validity["status"], "fail");
    assert!(validity["hint"].is_string());
    assert!(checks[0]["hint"].is_null(), "{}", checks[0]);
}

#[test]
fn a_config_that_does_not_parse_is_a_failed_check_and_exit_64() {
    let fixture = Fixture::with_config("trust_domain = \"Example.org\"\n");
    let report = fixture.run();
    assert_eq!(report.exit_code(), 64);
    assert!(
        report
            .checks
            .iter()
            .all(|c| c.section == Section::Config && c.status == Status::Fail)
    );
    assert!(
        report.checks[0]
            .message
            .starts_with(&fixture.path("tunnel.toml").display().to_string()),
        "{:?}",
        report.checks
    );
}

mod faults;
mod sources;
mod validity;
