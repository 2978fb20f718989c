//! A peer's certificate chain as the daemon judges it: the X.509-SVID rules on the leaf
//! (`identity::svid_rules`, `svid_identity`), what the daemon reads from it
//! (`CertSummary`), both verifiers (`tls::SpiffeClientVerifier` for callers,
//! `SpiffeServerVerifier` for peer daemons: webpki, the CRLs, then the SPIFFE rules), the CRL
//! entry named for a revoked chain (`tls::revocation_entry`) and the sentence a refusal is
//! logged with (`tls::explain`).
//!
//! Input: flags (bit 0: judged as a server rather than a caller; bits 1-2: how many
//! intermediates follow, each as a big-endian u16 length and its DER), then the leaf's DER.
//! The trust is tests/support/mkpki.py's root with its two CRLs (`fixtures/pki/`), the time
//! fixed (`tunnel_fuzz::pki::now`); seeds: its good and faulty chains.
//!
//! Checked:
//! 1. the rules judge a leaf exactly when the summary reads it (`tunnel check` reads the
//!    summary of every leaf the rules judged); the identity is the rules' verdict: the ID
//!    when every rule holds, and then the leaf's one URI SAN, as written;
//! 2. a chain a verifier accepts is an X.509-SVID of the trust domain for its role (and a
//!    node's, for the server verifier); a chain refused as revoked has a CRL entry the log
//!    can name (in the chain); one refused for its identity is a good X.509-SVID of someone
//!    else;
//! 3. every refusal has a one-line sentence; serials are upper-case hex.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use rustls::{
    RootCertStore,
    client::danger::ServerCertVerifier,
    pki_types::{CertificateDer, ServerName, UnixTime},
    server::danger::ClientCertVerifier,
};
use tunnel::{
    identity::{
        CertSummary, IdPattern, Purpose, TrustDomain, svid_identity, svid_rules, timestamp,
    },
    tls::{
        PeerExpectation, RefusalKind, SpiffeClientVerifier, SpiffeServerVerifier, Trust, explain,
        parse_crl, revocation_entry,
    },
};
use tunnel_fuzz::pki;

struct Judges {
    trust: Trust,
    client: SpiffeClientVerifier,
    server: SpiffeServerVerifier,
    nodes: IdPattern,
    td: TrustDomain,
    now: UnixTime,
}

static JUDGES: LazyLock<Judges> = LazyLock::new(|| {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(pki::ROOT))
        .expect("the fixture root");
    let crls = [pki::CRL_INTERMEDIATE, pki::CRL_ROOT]
        .into_iter()
        .map(|der| parse_crl(der.to_vec(), "crl.der".as_ref()).expect("the fixture CRLs"))
        .collect();
    let trust = Trust::new(roots, crls, 0);
    let td: TrustDomain = pki::TRUST_DOMAIN.parse().unwrap();
    let nodes = IdPattern::nodes_of(&td);
    Judges {
        client: SpiffeClientVerifier::new(&trust, td.clone()).expect("a client verifier"),
        server: SpiffeServerVerifier::new(&trust, td.clone(), PeerExpectation::Node(nodes.clone())),
        trust,
        nodes,
        td,
        now: pki::now(),
    }
});

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let purpose = if flags & 1 == 1 {
        Purpose::ServerAuth
    } else {
        Purpose::ClientAuth
    };
    let mut intermediates = Vec::new();
    for _ in 0..(flags >> 1 & 3) {
        let [l0, l1, tail @ ..] = rest else { return };
        let length = usize::from(u16::from_be_bytes([*l0, *l1]));
        if tail.len() < length {
            return;
        }
        intermediates.push(CertificateDer::from(&tail[..length]));
        rest = &tail[length..];
    }
    let leaf = CertificateDer::from(rest);
    let judges = &*JUDGES;

    // 1. The rules and the summary.
    let rules = svid_rules(&leaf, purpose);
    let summary = CertSummary::parse(&leaf);
    assert_eq!(rules.is_ok(), summary.is_ok(), "{rules:?} / {summary:?}");
    let identity = svid_identity(&leaf, purpose);
    if let (Ok(rules), Ok(summary)) = (&rules, &summary) {
        let all = rules.id.is_ok() && rules.leaf.is_ok() && rules.extended_key_usage.is_ok();
        assert_eq!(identity.is_ok(), all, "{rules:?}");
        if let Ok(id) = &identity {
            assert_eq!(rules.id.as_ref().ok(), Some(id));
            assert_eq!(summary.uris, [id.to_string()]);
        }
        assert!(!summary.serial.is_empty() && summary.serial.len() % 2 == 0);
        assert!(
            summary
                .serial
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)),
            "{}",
            summary.serial
        );
        let _ = (timestamp(summary.not_before), timestamp(summary.not_after));
        let _ = summary.validity_problem();
    } else {
        assert!(identity.is_err());
    }

    // 2. The verifiers.
    let chain: Vec<CertificateDer<'_>> = std::iter::once(leaf.clone())
        .chain(intermediates.iter().cloned())
        .collect();
    let verdict = match purpose {
        Purpose::ClientAuth => judges
            .client
            .verify_client_cert(&leaf, &intermediates, judges.now)
            .map(|_| ()),
        Purpose::ServerAuth => judges
            .server
            .verify_server_cert(
                &leaf,
                &intermediates,
                &ServerName::try_from("peer").unwrap(),
                &[],
                judges.now,
            )
            .map(|_| ()),
    };
    match verdict {
        Ok(()) => {
            let id = identity.as_ref().expect("accepted, so an X.509-SVID");
            assert!(id.is_in(&judges.td), "{id}");
            if purpose == Purpose::ServerAuth {
                assert!(judges.nodes.matches(id), "{id}");
            }
        }
        Err(error) => {
            let sentence = explain(&error);
            assert!(
                !sentence.is_empty() && !sentence.contains('\n'),
                "{sentence:?}"
            );
            assert!(sentence.len() < 8192, "{} bytes", sentence.len());
            match RefusalKind::of(&error) {
                RefusalKind::Revoked => {
                    let entry = revocation_entry(&judges.trust, &chain)
                        .unwrap_or_else(|| panic!("revoked, but no CRL entry names it: {error}"));
                    assert!(entry.position < chain.len());
                    assert!(entry.to_string().starts_with("serial "), "{entry}");
                }
                RefusalKind::Identity => {
                    assert!(identity.is_ok(), "{sentence}");
                }
                RefusalKind::Other => {}
            }
        }
    }
});
