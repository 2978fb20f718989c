//! CRLs (revocation, staleness, a bad signature) and certificates the daemon issues
//! itself.

use super::*;

/// A CRL signed by the CA in `ca_dir`'s intermediate, listing `revoked` (PEM certificate
/// files), published two days ago and due yesterday.
fn stale_crl(ca_dir: &Path, revoked: &[PathBuf]) -> String {
    use rcgen::{
        CertificateRevocationListParams, Issuer, KeyIdMethod, KeyPair, RevocationReason,
        RevokedCertParams, SerialNumber,
    };
    let files = ca::CaFiles::new(ca_dir);
    let key =
        KeyPair::from_pem(&std::fs::read_to_string(&files.intermediate_key).unwrap()).unwrap();
    let pem = std::fs::read_to_string(&files.intermediate_cert).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&pem, key).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let revoked_certs = revoked
        .iter()
        .map(|file| {
            let der = crate::tls::read_certificates(file).unwrap().remove(0);
            let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
            RevokedCertParams {
                serial_number: SerialNumber::from_slice(cert.raw_serial()),
                revocation_time: now - time::Duration::hours(1),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            }
        })
        .collect();
    CertificateRevocationListParams {
        this_update: now - time::Duration::days(2),
        next_update: now - time::Duration::days(1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&issuer)
    .unwrap()
    .pem()
    .unwrap()
}

fn with_crl() -> Fixture {
    let config = CONFIG.replace(
        "trust_bundle = \"ca/bundle.pem\"\n",
        "trust_bundle = \"ca/bundle.pem\"\ncrl = [\"crl.pem\"]\n",
    );
    Fixture::with_config(&config)
}

#[test]
fn a_revoked_certificate_fails_and_a_stale_crl_is_a_warning() {
    let fixture = with_crl();
    let crl = stale_crl(&fixture.path("ca"), &[fixture.path("frontend/cert.pem")]);
    std::fs::write(fixture.path("crl.pem"), crl).unwrap();
    let report = fixture.run();
    assert_eq!(
        not_ok(&report),
        [
            ("crl[0]: nextUpdate", Status::Warn),
            (&frontend("chain"), Status::Fail),
            (&frontend("revocation"), Status::Fail),
        ]
    );
    let crl = fixture.path("crl.pem");
    assert_line(
        &report,
        "crl[0]: nextUpdate",
        Status::Warn,
        &crl,
        "stale: still enforced; publish a new one",
    );
    assert_line(
        &report,
        "crl[0]: signer",
        Status::Ok,
        &crl,
        &format!(
            "signed by the intermediate CA in {}",
            fixture.path("node/cert.pem").display()
        ),
    );
    assert_line(
        &report,
        "crl[0]: entries",
        Status::Ok,
        &crl,
        "1 revoked certificate(s)",
    );
    assert_line(
        &report,
        &frontend("revocation"),
        Status::Fail,
        &fixture.path("frontend/cert.pem"),
        "(the leaf) revoked at ",
    );
    assert_line(
        &report,
        "node: revocation",
        Status::Ok,
        &fixture.path("node/cert.pem"),
        "no certificate of its chain",
    );
}

#[test]
fn a_crl_signed_by_another_key_of_the_same_name_fails() {
    let fixture = with_crl();
    // The second CA's names are the same as the first's; only the keys differ.
    new_ca(&fixture.path("other-ca"));
    std::fs::write(
        fixture.path("crl.pem"),
        stale_crl(&fixture.path("other-ca"), &[]),
    )
    .unwrap();
    let report = fixture.run();
    assert_line(
        &report,
        "crl[0]: signer",
        Status::Fail,
        &fixture.path("crl.pem"),
        &format!(
            "but its signature does not verify with the key of the intermediate CA in {}",
            fixture.path("node/cert.pem").display()
        ),
    );
    // webpki checks a CRL's signature when it judges a certificate of the CA it names: every
    // certificate of that CA is refused.
    assert_eq!(
        not_ok(&report),
        [
            ("crl[0]: signer", Status::Fail),
            ("crl[0]: nextUpdate", Status::Warn),
            ("node: chain", Status::Fail),
            (&frontend("chain"), Status::Fail),
        ]
    );
    for check in ["node: chain", &frontend("chain")] {
        let hint = line(&report, check).hint.as_deref().unwrap();
        assert!(hint.starts_with("a configured CRL is refused"), "{hint}");
    }
    assert_eq!(report.exit_code(), 1);
}

fn with_issuer(ttl: &str) -> Fixture {
    let config = format!(
        "{CONFIG}\n[[workload]]\nname = \"batch\"\nspiffe_id = \"spiffe://example.org/batch\"\n\
         issuer = \"ca\"\nttl = \"{ttl}\"\nports = [9090]\n"
    );
    Fixture::with_config(&config)
}

#[test]
fn an_issuer_is_checked_by_issuing_as_the_daemon_does() {
    let fixture = with_issuer("1h");
    let report = fixture.run();
    assert_eq!(not_ok(&report), [], "{}", report.to_text(false));
    assert_line(
        &report,
        "workload batch: chain",
        Status::Ok,
        &fixture.path("ca"),
        "peers' verifier accepts it as a caller",
    );
    assert_line(
        &report,
        "workload batch: issuer CA",
        Status::Ok,
        &fixture.path("ca/intermediate.pem"),
        "is a CA certificate",
    );
}

#[test]
fn an_issuer_that_expires_within_the_ttl_is_a_warning() {
    let fixture = with_issuer("1000d");
    let report = fixture.run();
    assert_eq!(
        not_ok(&report),
        [("workload batch: issuer ttl", Status::Warn)]
    );
    assert_line(
        &report,
        "workload batch: issuer ttl",
        Status::Warn,
        &fixture.path("ca/intermediate.pem"),
        "sooner than the ttl of 1000d",
    );
}

#[test]
fn an_issuer_directory_without_its_files_fails() {
    let fixture = with_issuer("1h");
    std::fs::remove_file(fixture.path("ca/intermediate.key")).unwrap();
    let report = fixture.run();
    assert_eq!(
        not_ok(&report),
        [("workload batch: issuer files", Status::Fail)]
    );
    assert_line(
        &report,
        "workload batch: issuer files",
        Status::Fail,
        &fixture.path("ca/intermediate.key"),
        "is missing",
    );
}
