//! Dates: expired, not valid yet (by minutes: the clock; by a day: not the clock), and
//! past the warning point.

use super::*;

#[test]
fn an_expired_certificate_fails_its_validity_and_expiry() {
    let fixture = Fixture::new();
    let mut spec = good(FRONTEND_ID);
    spec.not_before -= time::Duration::days(2);
    spec.not_after = spec.not_before + time::Duration::days(1);
    fixture.issue("frontend", &spec);
    let report = fixture.run();
    assert_eq!(
        not_ok(&report),
        [
            (frontend("chain").as_str(), Status::Fail),
            (&frontend("validity"), Status::Fail),
            (&frontend("expiry"), Status::Fail),
        ]
    );
    let cert = fixture.path("frontend/cert.pem");
    assert_line(
        &report,
        &frontend("validity"),
        Status::Fail,
        &cert,
        " expired 1d",
    );
    assert_line(
        &report,
        &frontend("chain"),
        Status::Fail,
        &cert,
        "the certificate has expired",
    );
    assert_eq!(
        line(&report, &frontend("chain")).hint.as_deref(),
        Some("see the workload frontend: validity line below")
    );
    assert_eq!(report.exit_code(), 1);
}

#[test]
fn a_certificate_valid_in_two_minutes_suggests_clock_skew() {
    let fixture = Fixture::new();
    fixture.issue("frontend", &from_the_future(2));
    let report = fixture.run();
    assert_eq!(
        not_ok(&report),
        [
            (frontend("chain").as_str(), Status::Fail),
            (&frontend("validity"), Status::Fail),
        ]
    );
    assert_line(
        &report,
        &frontend("validity"),
        Status::Fail,
        &fixture.path("frontend/cert.pem"),
        "clock skew suspected: check NTP on this host and the issuer",
    );
}

#[test]
fn a_certificate_valid_in_a_day_is_not_blamed_on_the_clock() {
    let fixture = Fixture::new();
    fixture.issue("frontend", &from_the_future(24 * 60));
    let report = fixture.run();
    assert_eq!(
        not_ok(&report),
        [
            (frontend("chain").as_str(), Status::Fail),
            (&frontend("validity"), Status::Fail),
        ]
    );
    let validity = line(&report, &frontend("validity"));
    assert_line(
        &report,
        &frontend("validity"),
        Status::Fail,
        &fixture.path("frontend/cert.pem"),
        // 1d, or 23h 59m if a second passed since it was issued
        "is not valid for another ",
    );
    assert!(!validity.message.contains("clock"), "{validity:?}");
}

#[test]
fn a_certificate_past_its_warning_point_is_a_warning() {
    let fixture = Fixture::new();
    let mut spec = good(FRONTEND_ID);
    spec.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(20);
    spec.not_after = spec.not_before + time::Duration::hours(24);
    fixture.issue("frontend", &spec);
    let report = fixture.run();
    assert_eq!(
        not_ok(&report),
        [(frontend("expiry").as_str(), Status::Warn)]
    );
    assert_line(
        &report,
        &frontend("expiry"),
        Status::Warn,
        &fixture.path("frontend/cert.pem"),
        "past its warning point",
    );
    assert_eq!(report.exit_code(), 0);
}
