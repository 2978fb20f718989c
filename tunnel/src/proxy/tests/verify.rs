//! The certificate verifiers (tls/verify.rs) in real handshakes between the pool and the
//! inbound side: every refusal, caused by a certificate made to break one rule, and the
//! sentence a user reads about it (the daemon's log for a caller's certificate, the
//! caller's error for a node's).

use std::{sync::Arc, time::Duration};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls::sign::CertifiedKey;

use super::kit::{Daemon, FRONTEND, Kit, Logs, NODE, Pki, limits, pool_settings};
use crate::{
    ca::{self, LeafSpec},
    proxy::pool::{Pool, PoolError},
    tls::Credential,
};

/// The X.509-SVID the CA would issue for `id`, before a test breaks one field.
fn svid(id: &str) -> LeafSpec {
    LeafSpec::workload(&id.parse().unwrap(), ca::DEFAULT_LEAF_TTL)
}

/// A leaf whose key usage allows signing certificates although it is not a CA: `LeafSpec`
/// only sets that bit on CA leaves, so this one is made with rcgen and the CA's files.
fn key_cert_sign_leaf(pki: &Pki, id: &str) -> Arc<CertifiedKey> {
    let ca_dir = pki.dir().join("ca");
    let read = |name: &str| std::fs::read_to_string(ca_dir.join(name)).unwrap();
    let intermediate = read("intermediate.pem");
    let issuer = Issuer::from_ca_cert_pem(
        &intermediate,
        KeyPair::from_pem(&read("intermediate.key")).unwrap(),
    )
    .unwrap();
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "example.org");
    params.distinguished_name = name;
    params.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let out = pki.dir().join("key-cert-sign");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("cert.pem"),
        format!("{}{intermediate}", cert.pem()),
    )
    .unwrap();
    std::fs::write(out.join("key.pem"), key.serialize_pem()).unwrap();
    Credential::load(&out.join("cert.pem"), &out.join("key.pem"))
        .unwrap()
        .key
}

/// Certificates that each break one rule, for the role `id` plays, with the sentence the
/// user reads. A CA certificate is refused by webpki (`CaUsedAsEndEntity`) before the
/// X.509-SVID rules see it, so `SvidError::LeafIsCa` never reaches a user; webpki's refusal
/// must still be in words.
fn broken(pki: &Pki, id: &str, purpose: &str) -> Vec<(&'static str, Arc<CertifiedKey>, String)> {
    let foreign = id.replace("example.org", "other.org");
    vec![
        (
            "no URI SAN",
            pki.issue_spec(
                &LeafSpec {
                    uris: vec![],
                    ..svid(id)
                },
                "no-uri",
            ),
            "not an X.509-SVID: the certificate has no URI SAN (an X.509-SVID carries its SPIFFE ID in exactly one)"
                .into(),
        ),
        (
            "two URI SANs",
            pki.issue_spec(
                &LeafSpec {
                    uris: vec![id.into(), format!("{id}-too")],
                    ..svid(id)
                },
                "two-uris",
            ),
            "not an X.509-SVID: the certificate has 2 URI SANs (an X.509-SVID has exactly one)"
                .into(),
        ),
        (
            "a URI SAN that is not a workload SPIFFE ID",
            pki.issue_spec(
                &LeafSpec {
                    uris: vec!["spiffe://example.org".into()],
                    ..svid(id)
                },
                "no-path",
            ),
            "not an X.509-SVID: its URI SAN is not a workload SPIFFE ID: invalid SPIFFE ID \
             \"spiffe://example.org\": a workload ID needs a path after the trust domain (spiffe://td/path)"
                .into(),
        ),
        (
            "no extended key usage",
            pki.issue_spec(
                &LeafSpec {
                    extended_key_usages: vec![],
                    ..svid(id)
                },
                "no-eku",
            ),
            format!("not an X.509-SVID: the certificate has no {purpose} extended key usage"),
        ),
        (
            "a key usage that signs certificates",
            key_cert_sign_leaf(pki, id),
            "not an X.509-SVID: the certificate's key usage allows signing certificates or CRLs; \
             a workload leaf must not"
                .into(),
        ),
        (
            "a CA certificate",
            pki.issue_spec(
                &LeafSpec {
                    is_ca: true,
                    ..svid(id)
                },
                "ca-leaf",
            ),
            "the certificate is a CA certificate (basicConstraints cA=true), not a leaf: a CA's \
             certificate was configured where a workload's or node's belongs"
                .into(),
        ),
        (
            "another trust domain",
            pki.issue_spec(
                &LeafSpec {
                    uris: vec![foreign.clone()],
                    ..svid(id)
                },
                "foreign",
            ),
            format!("{foreign} is outside the trust domain example.org"),
        ),
    ]
}

#[tokio::test]
async fn a_caller_certificate_that_breaks_an_svid_rule_is_refused_and_the_daemon_log_says_which() {
    let logs = Logs::capture();
    let kit = Kit::new().await;
    let daemon = Daemon::start(kit.inputs(limits()));
    for (what, certificate, reason) in broken(&kit.pki, FRONTEND, "clientAuth") {
        let tls = kit.client_config(&certificate, None);
        let error = Pool::new(pool_settings())
            .open(
                &kit.key(daemon.addr),
                &tls,
                kit.orders.addr,
                bytes::Bytes::new(),
                None,
            )
            .await
            .err()
            .unwrap_or_else(|| panic!("a caller with {what} is refused"));
        let line = logs
            .wait_for(&format!("reason={reason}"), Duration::from_secs(1))
            .await;
        println!("caller with {what}:\n  daemon log: {line}\n  caller: {error}");
        assert!(
            line.contains("tunnel::auth") && line.contains("direction=\"inbound\""),
            "{line}"
        );
        assert!(
            matches!(&error, PoolError::Handshake { reason, .. } if reason.starts_with("the peer refused the handshake with alert")),
            "the caller is told the daemon refused its certificate: {error}"
        );
    }
    assert_eq!(kit.orders.accepted(), 0, "nothing delivered");
}

#[tokio::test]
async fn a_node_certificate_that_breaks_an_svid_rule_or_is_not_the_expected_node_is_refused_by_the_caller()
 {
    let kit = Kit::new().await;
    let mut cases: Vec<_> = broken(&kit.pki, NODE, "serverAuth")
        .into_iter()
        .map(|(what, certificate, reason)| (what, certificate, None, reason))
        .collect();
    // A valid node certificate, but the caller's config pins another node (a [[peer]]).
    cases.push((
        "another node than the one pinned",
        kit.pki.issue(NODE),
        Some("spiffe://example.org/node/a"),
        format!("expected the peer to be spiffe://example.org/node/a, but it is {NODE}"),
    ));
    // A valid SVID of the trust domain, but a workload's: whoever holds any workload's key
    // must not be able to stand in for a peer daemon.
    cases.push((
        "a workload's identity",
        kit.pki.issue("spiffe://example.org/orders"),
        None,
        "expected a node identity matching spiffe://example.org/node/*, but the peer presented \
         spiffe://example.org/orders (a workload's certificate? if it is a node, [outbound] \
         peer_identity must cover it)"
            .into(),
    ));
    for (what, certificate, pinned, reason) in cases {
        let mut inputs = kit.inputs(limits());
        kit.present_node(&mut inputs, &certificate);
        let daemon = Daemon::start(inputs);
        let tls = kit.client_config(&kit.frontend_key, pinned);
        let error = Pool::new(pool_settings())
            .open(
                &kit.key(daemon.addr),
                &tls,
                kit.orders.addr,
                bytes::Bytes::new(),
                None,
            )
            .await
            .err()
            .unwrap_or_else(|| panic!("a node with {what} is refused"));
        println!("node with {what}: {error}");
        assert!(
            matches!(&error, PoolError::Handshake { reason: said, .. } if said.contains(&reason)),
            "the caller's error says {reason:?}: {error}"
        );
    }
    assert_eq!(kit.orders.accepted(), 0, "nothing delivered");
}
