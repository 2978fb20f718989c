//! Which certificate of a chain a CRL revokes, and how, in words. webpki decides whether a
//! chain is revoked (verify.rs); this only finds the entry so logs can name the serial, the
//! date and the reason.

use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer as _, X509Certificate};

use super::Trust;
use crate::identity::{hex_serial, timestamp};

/// The first certificate of a chain that a CRL lists, in words: "serial 1A2B… (the leaf)
/// revoked at 2026-…: KeyCompromise".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedEntry {
    /// Where it is in the chain: 0 the leaf, 1 the intermediate that issued it, ...
    pub position: usize,
    text: String,
}

impl RevokedEntry {
    pub fn is_leaf(&self) -> bool {
        self.position == 0
    }
}

impl std::fmt::Display for RevokedEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The first certificate of `chain` (leaf first) that a CRL of `trust` lists.
pub fn revocation_entry(trust: &Trust, chain: &[CertificateDer<'_>]) -> Option<RevokedEntry> {
    for (position, der) in chain.iter().enumerate() {
        let Ok((_, cert)) = X509Certificate::from_der(der.as_ref()) else {
            continue;
        };
        let issuer = cert.issuer().as_raw();
        for crl in trust.parsed_crls.iter() {
            if crl.issuer() != issuer && crl.issuer() != without_header(issuer) {
                continue;
            }
            if let Ok(Some(entry)) = crl.find_serial(cert.raw_serial()) {
                let which = if position == 0 {
                    "the leaf"
                } else {
                    "an intermediate CA of its chain"
                };
                let reason = entry
                    .reason_code
                    .map_or_else(|| "no reason given".to_string(), |r| format!("{r:?}"));
                return Some(RevokedEntry {
                    position,
                    text: format!(
                        "serial {} ({which}) revoked at {}: {reason}",
                        hex_serial(cert.raw_serial()),
                        timestamp(entry.revocation_date.as_secs() as i64)
                    ),
                });
            }
        }
    }
    None
}

/// The contents of a DER SEQUENCE (webpki keeps a name without its tag and length).
fn without_header(der: &[u8]) -> &[u8] {
    match der {
        [0x30, len, rest @ ..] if *len < 0x80 => rest,
        [0x30, len, rest @ ..] => rest.get(usize::from(len & 0x7f)..).unwrap_or(der),
        _ => der,
    }
}
