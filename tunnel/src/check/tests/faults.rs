//! What a certificate can be wrong about besides its dates: its CA, its chain, its EKU,
//! being a CA, its URI SANs, its key, its files.

use super::*;

#[test]
fn a_certificate_of_another_ca_is_refused_by_the_chain_check() {
    let fixture = Fixture::new();
    let other = new_ca(&fixture.path("other-ca"));
    other
        .issue(&good(FRONTEND_ID), &fixture.path("frontend"), true)
        .unwrap();
    let report = fixture.run();
    assert_eq!(
        not_ok(&report),
        [(frontend("chain").as_str(), Status::Fail)]
    );
    let chain = line(&report, &frontend("chain"));
    assert_line(
        &report,
        &frontend("chain"),
        Status::Fail,
        &fixture.path("frontend/cert.pem"),
        "peers refuse it: ",
    );
    assert!(!chain.message.contains("missing intermediate"), "{chain:?}");
    assert!(
        chain
            .hint
            .as_deref()
            .unwrap()
            .starts_with("issue it from the CA whose root is in "),
        "{chain:?}"
    );
}

#[test]
fn a_cert_file_without_its_intermediate_is_said_to_miss_it() {
    let fixture = Fixture::new();
    let cert = fixture.path("frontend/cert.pem");
    let pem = std::fs::read_to_string(&cert).unwrap();
    let end = "-----END CERTIFICATE-----\n";
    let leaf_only = &pem[..pem.find(end).unwrap() + end.len()];
    std::fs::write(&cert, leaf_only).unwrap();
    let report = fixture.run();
    assert_eq!(
        not_ok(&report),
        [(frontend("chain").as_str(), Status::Fail)]
    );
    assert_line(
        &report,
        &frontend("chain"),
        Status::Fail,
        &cert,
        "missing intermediate: the leaf was issued by O=example.org, CN=tunnel intermediate CA \
         for example.org, which is neither a root of",
    );
    assert_eq!(
        line(&report, &frontend("chain")).hint,
        Some(format!(
            "append the intermediate CA certificate (O=example.org, CN=tunnel intermediate CA \
             for example.org) to {}, after the leaf",
            cert.display()
        ))
    );
}

#[test]
fn a_workload_certificate_without_client_auth_fails_its_eku() {
    let fixture = Fixture::new();
    fixture.issue(
        "frontend",
        &LeafSpec {
            extended_key_usages: vec![ExtendedKeyUsagePurpose::ServerAuth],
            ..good(FRONTEND_ID)
        },
    );
    let report = fixture.run();
    assert_eq!(
        not_ok(&report),
        [
            (frontend("chain").as_str(), Status::Fail),
            (&frontend("EKU"), Status::Fail),
        ]
    );
    assert_line(
        &report,
        &frontend("EKU"),
        Status::Fail,
        &fixture.path("frontend/cert.pem"),
        "has no clientAuth extended key usage (it has: serverAuth)",
    );
    let hint = line(&report, &frontend("EKU")).hint.clone().unwrap();
    assert!(
        hint.starts_with(
            "reissue it with the clientAuth EKU: tunnel ca issue --ca CA_DIR \
             --spiffe-id spiffe://example.org/frontend --out "
        ) && hint.contains("extendedKeyUsage=clientAuth,serverAuth"),
        "{hint}"
    );
}

#[test]
fn a_node_certificate_without_server_auth_fails_its_eku() {
    let fixture = Fixture::new();
    fixture.issue(
        "node",
        &LeafSpec {
            extended_key_usages: vec![ExtendedKeyUsagePurpose::ClientAuth],
            ..good(NODE_ID)
        },
    );
    let report = fixture.run();
    assert_eq!(
        not_ok(&report),
        [("node: chain", Status::Fail), ("node: EKU", Status::Fail)]
    );
    assert_line(
        &report,
        "node: EKU",
        Status::Fail,
        &fixture.path("node/cert.pem"),
        "has no serverAuth extended key usage (it has: clientAuth)",
    );
}

#[test]
fn a_ca_certificate_as_a_leaf_fails_the_leaf_check() {
    let fixture = Fixture::new();
    fixture.issue(
        "frontend",
        &LeafSpec {
            is_ca: true,
            ..good(FRONTEND_ID)
        },
    );
    let report = fixture.run();
    assert_eq!(
        not_ok(&report),
        [
            (frontend("chain").as_str(), Status::Fail),
            (&frontend("leaf"), Status::Fail),
        ]
    );
    assert_line(
        &report,
        &frontend("leaf"),
        Status::Fail,
        &fixture.path("frontend/cert.pem"),
        "the certificate is a CA certificate (basicConstraints cA=true)",
    );
}

/// The SPIFFE ID line (and peers' refusal, when they check it) for a frontend certificate
/// with these URI SANs.
fn with_uris(uris: &[&str], words: &str, peers_refuse: bool) {
    let fixture = Fixture::new();
    fixture.issue(
        "frontend",
        &LeafSpec {
            uris: uris.iter().map(ToString::to_string).collect(),
            ..good(FRONTEND_ID)
        },
    );
    let report = fixture.run();
    let mut expected = vec![(frontend("SPIFFE ID"), Status::Fail)];
    if peers_refuse {
        expected.insert(0, (frontend("chain"), Status::Fail));
    }
    let found: Vec<(String, Status)> = not_ok(&report)
        .into_iter()
        .map(|(check, status)| (check.to_string(), status))
        .collect();
    assert_eq!(found, expected, "{uris:?}");
    assert_line(
        &report,
        &frontend("SPIFFE ID"),
        Status::Fail,
        &fixture.path("frontend/cert.pem"),
        words,
    );
    assert_eq!(
        line(&report, &frontend("SPIFFE ID"))
            .hint
            .as_deref()
            .map(|h| h.split(':').next()),
        Some(Some("reissue it with exactly one URI SAN, spiffe"))
    );
}

#[test]
fn a_certificate_without_a_uri_san_fails_its_spiffe_id() {
    with_uris(&[], "the certificate has no URI SAN", true);
}

#[test]
fn a_certificate_with_two_uri_sans_names_both() {
    with_uris(
        &[FRONTEND_ID, "spiffe://example.org/backend"],
        "the certificate has 2 URI SANs (spiffe://example.org/frontend, \
         spiffe://example.org/backend); an X.509-SVID has exactly one",
        true,
    );
}

#[test]
fn a_certificate_of_another_trust_domain_fails_its_spiffe_id() {
    with_uris(
        &["spiffe://other.org/frontend"],
        "spiffe://other.org/frontend is outside the trust domain example.org",
        true,
    );
}

/// A caller's identity is the policy's business, so peers accept a workload certificate of
/// another identity; the daemon does not start with it, and the check says which it is.
#[test]
fn a_certificate_of_another_identity_names_both() {
    with_uris(
        &["spiffe://example.org/backend"],
        "the certificate is for spiffe://example.org/backend, not spiffe://example.org/frontend",
        false,
    );
}

#[test]
fn a_node_certificate_of_another_node_is_refused_by_peers_too() {
    let fixture = Fixture::new();
    fixture.issue("node", &good("spiffe://example.org/node/b"));
    let report = fixture.run();
    assert_eq!(
        not_ok(&report),
        [
            ("node: chain", Status::Fail),
            ("node: SPIFFE ID", Status::Fail)
        ]
    );
    assert_line(
        &report,
        "node: chain",
        Status::Fail,
        &fixture.path("node/cert.pem"),
        "expected the peer to be spiffe://example.org/node/a, but it is \
         spiffe://example.org/node/b",
    );
}

#[test]
fn a_key_of_another_certificate_fails_the_key_check_only() {
    let fixture = Fixture::new();
    fixture.issue("other", &good(FRONTEND_ID));
    std::fs::copy(
        fixture.path("other/key.pem"),
        fixture.path("frontend/key.pem"),
    )
    .unwrap();
    let report = fixture.run();
    assert_eq!(not_ok(&report), [(frontend("key").as_str(), Status::Fail)]);
    assert_line(
        &report,
        &frontend("key"),
        Status::Fail,
        &fixture.path("frontend/key.pem"),
        "does not belong to the certificate in",
    );
}

#[test]
fn missing_files_are_each_named() {
    let fixture = Fixture::new();
    std::fs::remove_file(fixture.path("frontend/cert.pem")).unwrap();
    std::fs::remove_file(fixture.path("frontend/key.pem")).unwrap();
    let report = fixture.run();
    assert_eq!(
        not_ok(&report),
        [
            (frontend("cert file").as_str(), Status::Fail),
            (&frontend("key"), Status::Fail),
        ]
    );
    assert_line(
        &report,
        &frontend("cert file"),
        Status::Fail,
        &fixture.path("frontend/cert.pem"),
        "cannot read certificates from",
    );
    assert_line(
        &report,
        &frontend("key"),
        Status::Fail,
        &fixture.path("frontend/key.pem"),
        "cannot read a private key from",
    );
    let hint = line(&report, &frontend("cert file")).hint.clone().unwrap();
    assert!(
        hint.ends_with(&format!(
            "fix workload[0].cert ({}:17)",
            fixture.path("tunnel.toml").display()
        )),
        "{hint}"
    );
}
