use std::{os::unix::fs::PermissionsExt as _, time::Duration};

use rustls_pki_types::{CertificateDer, pem::PemObject};

use super::*;
use crate::{
    identity::{Purpose, SvidError, svid_identity},
    tls,
};

fn init_options(dir: &Path) -> InitOptions {
    InitOptions {
        trust_domain: "example.org".parse().unwrap(),
        out: dir.join("ca"),
        force: false,
        root_ttl: DEFAULT_ROOT_TTL,
        intermediate_ttl: DEFAULT_INTERMEDIATE_TTL,
    }
}

fn new_ca(dir: &Path) -> files::CaFiles {
    init(&init_options(dir)).unwrap()
}

/// The CA in `dir` issues the frontend's SVID with the default lifetime.
fn issue_frontend(dir: &Path) -> files::IssuedFiles {
    issue(&issue_options(
        dir,
        "spiffe://example.org/frontend",
        DEFAULT_LEAF_TTL,
    ))
    .unwrap()
}

fn issue_options(dir: &Path, id: &str, ttl: Duration) -> IssueOptions {
    IssueOptions {
        ca: dir.join("ca"),
        spiffe_id: id.into(),
        ttl,
        out: dir.join("leaf"),
        force: true,
    }
}

fn leaf_der(path: &Path) -> CertificateDer<'static> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
}

#[test]
fn issued_leaves_are_svids_that_chain_to_the_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(dir.path());
    let issued = issue_frontend(dir.path());

    let leaf = leaf_der(&issued.cert);
    for purpose in [Purpose::ClientAuth, Purpose::ServerAuth] {
        assert_eq!(
            svid_identity(leaf.as_ref(), purpose).unwrap().to_string(),
            "spiffe://example.org/frontend"
        );
    }
    // The chain verifies with the same verifier the inbound side uses.
    let trust = tls::Trust::load_bundle(&ca.bundle).unwrap();
    let credential = tls::Credential::load(&issued.cert, &issued.key).unwrap();
    let chain = credential.key.cert.clone();
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(trust.roots, tls::provider())
            .build()
            .unwrap();
    verifier
        .verify_client_cert(&chain[0], &chain[1..], rustls_pki_types::UnixTime::now())
        .expect("the leaf chains to the bundle");
    assert!(
        credential
            .problems(
                &"spiffe://example.org/frontend".parse().unwrap(),
                Purpose::ClientAuth
            )
            .is_empty()
    );
}

#[test]
fn keys_are_private_and_directories_closed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(dir.path());
    let issued = issue_frontend(dir.path());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&ca.root_key), 0o600);
    assert_eq!(mode(&ca.intermediate_key), 0o600);
    assert_eq!(mode(&issued.key), 0o600);
    assert_eq!(mode(&ca.dir), 0o700);
}

#[test]
fn refusals_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    new_ca(dir.path());
    let error = |id: &str, ttl: Duration| {
        issue(&issue_options(dir.path(), id, ttl))
            .unwrap_err()
            .to_string()
    };
    assert!(
        error("spiffe://other.org/x", DEFAULT_LEAF_TTL)
            .contains("not in the CA's trust domain example.org")
    );
    assert!(error("spiffe://example.org/", DEFAULT_LEAF_TTL).contains("needs a path"));
    assert!(error("spiffe://example.org/x", Duration::ZERO).contains("never valid"));
    assert!(
        error(
            "spiffe://example.org/x",
            Duration::from_secs(10 * 365 * 86_400)
        )
        .contains("past the intermediate's expiry")
    );
    let again = init(&init_options(dir.path()));
    assert!(
        again
            .unwrap_err()
            .to_string()
            .contains("already exists; pass --force")
    );
    let missing = issue(&IssueOptions {
        ca: dir.path().join("nope"),
        ..issue_options(dir.path(), "spiffe://example.org/x", DEFAULT_LEAF_TTL)
    });
    assert!(
        missing
            .unwrap_err()
            .to_string()
            .contains("cannot read the CA file")
    );
}

#[test]
fn the_svid_rules_catch_each_broken_leaf() {
    let dir = tempfile::tempdir().unwrap();
    new_ca(dir.path());
    let ca = Ca::load(&dir.path().join("ca")).unwrap();
    let id: SpiffeId = "spiffe://example.org/w".parse().unwrap();
    let check = |spec: LeafSpec, purpose: Purpose| -> Result<SpiffeId, SvidError> {
        let issued = ca.issue(&spec, &dir.path().join("bad"), true).unwrap();
        svid_identity(leaf_der(&issued.cert).as_ref(), purpose)
    };
    let base = LeafSpec::workload(&id, DEFAULT_LEAF_TTL);
    assert!(matches!(
        check(
            LeafSpec {
                uris: vec![],
                ..base.clone()
            },
            Purpose::ClientAuth
        ),
        Err(SvidError::NoUriSan)
    ));
    let two = vec![id.to_string(), "spiffe://example.org/v".into()];
    assert!(matches!(
        check(
            LeafSpec {
                uris: two,
                ..base.clone()
            },
            Purpose::ClientAuth
        ),
        Err(SvidError::MultipleUriSans(2))
    ));
    assert!(matches!(
        check(
            LeafSpec {
                is_ca: true,
                ..base.clone()
            },
            Purpose::ClientAuth
        ),
        Err(SvidError::LeafIsCa)
    ));
    let server_only = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let result = check(
        LeafSpec {
            extended_key_usages: server_only,
            ..base.clone()
        },
        Purpose::ClientAuth,
    );
    assert!(matches!(
        result,
        Err(SvidError::MissingExtendedKeyUsage(Purpose::ClientAuth))
    ));
    let no_eku = check(
        LeafSpec {
            extended_key_usages: vec![],
            ..base.clone()
        },
        Purpose::ServerAuth,
    );
    assert!(
        matches!(
            no_eku,
            Err(SvidError::MissingExtendedKeyUsage(Purpose::ServerAuth))
        ),
        "a leaf without EKU is refused"
    );
    let http = vec!["https://example.org/w".into()];
    assert!(matches!(
        check(LeafSpec { uris: http, ..base }, Purpose::ClientAuth),
        Err(SvidError::InvalidSpiffeId(_))
    ));
}

#[test]
fn a_new_ca_has_an_empty_crl_that_revoke_extends() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(dir.path());
    let issued = issue_frontend(dir.path());
    // Usable in `crl = [...]` from the first day: it loads and revokes nothing.
    let trust = tls::Trust::load(&ca.bundle, std::slice::from_ref(&ca.crl)).unwrap();
    let credential = tls::Credential::load(&issued.cert, &issued.key).unwrap();
    let (leaf, intermediates) = credential.chain();
    let verifier = tls::SpiffeClientVerifier::new(&trust, "example.org".parse().unwrap()).unwrap();
    use rustls::server::danger::ClientCertVerifier as _;
    verifier
        .verify_client_cert(leaf, intermediates, rustls_pki_types::UnixTime::now())
        .expect("an empty CRL revokes nothing");
    let revoked = revoke(&RevokeOptions {
        ca: ca.dir.clone(),
        cert: issued.cert.clone(),
        crl: ca.crl.clone(),
        reason: rcgen::RevocationReason::KeyCompromise,
        next_update: DEFAULT_NEXT_UPDATE,
    })
    .expect("revoke extends the CRL init wrote");
    assert_eq!(
        (revoked.entries, revoked.crl_number.to_string()),
        (1, "2".to_string())
    );
}

/// Found while writing the `config` fuzz target: a config's `ttl` (or `tunnel ca issue
/// --ttl`, `tunnel ca init --root-ttl`) may be any length, and `now + ttl` overflowed the
/// date: `ttl = "18446744073709551615ms"` validated, then the daemon panicked issuing its
/// first certificate. Such a certificate now lasts until the last second X.509 can name.
#[test]
fn a_ttl_past_the_end_of_x509_time_stops_there() {
    let last = time::Date::from_calendar_date(9999, time::Month::December, 31)
        .unwrap()
        .with_hms(23, 59, 59)
        .unwrap()
        .assume_utc();
    let id: SpiffeId = "spiffe://example.org/frontend".parse().unwrap();
    for ttl in [
        Duration::MAX,
        Duration::from_millis(u64::MAX),
        Duration::from_secs(1 << 40),
    ] {
        assert_eq!(LeafSpec::workload(&id, ttl).not_after, last, "{ttl:?}");
    }
    let now = OffsetDateTime::now_utc();
    assert_eq!(
        valid_until(now, Duration::from_secs(3600)),
        now + Duration::from_secs(3600)
    );

    let dir = tempfile::tempdir().unwrap();
    init(&InitOptions {
        root_ttl: Duration::MAX,
        intermediate_ttl: Duration::MAX,
        ..init_options(dir.path())
    })
    .unwrap();
    let issued = issue(&issue_options(
        dir.path(),
        "spiffe://example.org/frontend",
        Duration::MAX,
    ))
    .unwrap();
    let leaf = crate::identity::CertSummary::parse(leaf_der(&issued.cert).as_ref()).unwrap();
    assert_eq!(leaf.not_after, last.unix_timestamp());
}
