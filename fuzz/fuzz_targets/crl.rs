//! A CRL file as the daemon loads it (`tls::crls_from_bytes`: PEM blocks or one DER CRL,
//! then `tls::parse_crl`: webpki's parsing, held compactly as the verifiers enforce it) and as `tunnel check`
//! describes it (x509-parser), and the verdicts the daemon gives with it.
//!
//! Input: the file's bytes. The chains judged are tests/support/mkpki.py's (`fixtures/pki/`:
//! a good leaf, a leaf its intermediate's CRL lists, a leaf of an intermediate the root's
//! CRL lists), at a fixed time; seeds: those two CRLs, as PEM and DER.
//!
//! Checked:
//! 1. a file that does not load says which file;
//! 2. every CRL the daemon enforces, `tunnel check` can read, and both read the same issuer
//!    and the same serials: each serial check lists, the daemon finds; the fixture serials
//!    check does not list, the daemon does not find;
//! 3. a verifier can be made with it, and with it: a chain refused as revoked is one with a
//!    certificate check sees listed by this CRL, and has a CRL entry the log can name; a
//!    chain with a certificate this CRL lists, under a signature of the CA that issued it,
//!    is refused.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rustls::{RootCertStore, pki_types::CertificateDer, server::danger::ClientCertVerifier};
use tunnel::{
    identity::{TrustDomain, timestamp},
    tls::{
        Crl, RefusalKind, SpiffeClientVerifier, Trust, crls_from_bytes, parse_crl, revocation_entry,
    },
};
use tunnel_fuzz::pki;
use x509_parser::{
    certificate::X509Certificate, prelude::FromDer as _, revocation_list::CertificateRevocationList,
};

const FILE: &str = "/etc/tunnel/ca/crl.pem";

fuzz_target!(|file: &[u8]| {
    let path = Path::new(FILE);
    let crls = match crls_from_bytes(file.to_vec(), path) {
        Ok(crls) => crls,
        Err(e) => {
            assert!(e.to_string().contains(FILE), "{e}");
            return;
        }
    };
    assert!(!crls.is_empty());
    let chains =
        [pki::FRONTEND, pki::REVOKED_LEAF, pki::REVOKED_INTERMEDIATE].map(|c| pki::chain(&c));
    let now = pki::now();
    for der in &crls {
        let enforced = match parse_crl(der.clone(), path) {
            Ok(enforced) => enforced,
            Err(e) => {
                assert!(e.to_string().contains(FILE), "{e}");
                continue;
            }
        };
        // 2. What check reads.
        let described = CertificateRevocationList::from_der(der)
            .map(|(_, described)| described)
            .unwrap_or_else(|e| panic!("the daemon enforces a CRL tunnel check cannot read: {e}"));
        // x509-parser stops reading a Name at the first RDN it cannot parse, and keeps only
        // the bytes read (the SEQUENCE header, and the RDNs before), where webpki keeps them
        // all: check then names another issuer than the one in the file, and the CRL applies
        // to no certificate (none has that issuer). Compared when x509-parser read it whole.
        let raw = described.issuer().as_raw();
        if whole(raw) {
            assert_eq!(enforced.issuer(), without_header(raw), "the issuer");
        }
        let listed: Vec<&[u8]> = described
            .iter_revoked_certificates()
            .map(|entry| entry.raw_serial())
            .collect();
        for serial in &listed {
            assert!(
                enforced.find(serial).is_some(),
                "check lists {serial:02x?}, the daemon does not find it"
            );
        }
        for chain in &chains {
            for der in chain {
                let serial = serial(der);
                if !listed.contains(&serial) {
                    assert!(
                        enforced.find(serial).is_none(),
                        "the daemon finds {serial:02x?}, check does not list it"
                    );
                }
            }
        }
        let _ = timestamp(described.last_update().timestamp());
        let _ = described.next_update().map(|t| timestamp(t.timestamp()));

        // 3. Verdicts with it.
        let trust = trust(enforced, der.len());
        let td: TrustDomain = pki::TRUST_DOMAIN.parse().unwrap();
        let verifier = SpiffeClientVerifier::new(&trust, td)
            .unwrap_or_else(|e| panic!("a CRL that loads makes no verifier: {e}"));
        for chain in &chains {
            let verdict = verifier.verify_client_cert(&chain[0], &chain[1..], now);
            let revoked = verdict.as_ref().err().map(RefusalKind::of) == Some(RefusalKind::Revoked);
            let listed_here: Vec<bool> = chain
                .iter()
                .map(|der| lists(&described, der, chain, &listed))
                .collect();
            if revoked {
                assert!(
                    chain.iter().any(|der| listed.contains(&serial(der))),
                    "refused as revoked, but check sees no certificate of the chain listed"
                );
                let entry = revocation_entry(&trust, chain)
                    .expect("refused as revoked, but no CRL entry names it");
                assert!(entry.position < chain.len());
            }
            if listed_here.contains(&true) {
                assert!(verdict.is_err(), "a chain this CRL revokes is accepted");
            }
        }
    }
});

fn trust(enforced: Crl, read: usize) -> Trust {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(pki::ROOT))
        .expect("the fixture root");
    Trust::new(roots, vec![enforced], read)
}

fn serial<'a>(der: &'a CertificateDer<'_>) -> &'a [u8] {
    let (_, cert) = X509Certificate::from_der(der.as_ref()).expect("a fixture parses");
    cert.tbs_certificate.raw_serial()
}

/// Whether `der` is listed by the CRL under a good signature of the CA that issued it (the
/// next certificate of the chain, or the root).
fn lists(
    crl: &CertificateRevocationList<'_>,
    der: &CertificateDer<'_>,
    chain: &[CertificateDer<'_>],
    listed: &[&[u8]],
) -> bool {
    let (_, cert) = X509Certificate::from_der(der.as_ref()).expect("a fixture parses");
    if !listed.contains(&cert.raw_serial()) || crl.issuer().as_raw() != cert.issuer().as_raw() {
        return false;
    }
    chain
        .iter()
        .map(|c| c.as_ref())
        .chain([pki::ROOT])
        .filter_map(|issuer| X509Certificate::from_der(issuer).ok().map(|(_, c)| c))
        .filter(|issuer| issuer.subject().as_raw() == cert.issuer().as_raw())
        .any(|issuer| crl.verify_signature(issuer.public_key()).is_ok())
}

/// The contents of a DER SEQUENCE (webpki keeps a name without its tag and length).
fn without_header(der: &[u8]) -> &[u8] {
    match der {
        [0x30, len, rest @ ..] if *len < 0x80 => rest,
        [0x30, len, rest @ ..] => rest.get(usize::from(len & 0x7f)..).unwrap_or(der),
        _ => der,
    }
}

/// Whether `der` is a whole TLV: its length says exactly the bytes that follow the header.
fn whole(der: &[u8]) -> bool {
    let (length, header) = match der {
        [_, len, ..] if *len < 0x80 => (usize::from(*len), 2),
        [_, len, rest @ ..] => {
            let n = usize::from(len & 0x7f);
            let Some(bytes) = rest.get(..n).filter(|_| n <= 4) else {
                return false;
            };
            (bytes.iter().fold(0, |l, b| l << 8 | usize::from(*b)), 2 + n)
        }
        _ => return false,
    };
    der.len() == header + length
}
