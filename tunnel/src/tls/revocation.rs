//! Which certificate of a chain a CRL revokes, and how, in words. The verifiers decide
//! whether a chain is revoked (`tls::crl`, checked on the path webpki verified); this only
//! finds the entry so logs can name the serial, the date and the reason.

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
    chain.iter().enumerate().find_map(|(position, der)| {
        let (_, cert) = X509Certificate::from_der(der.as_ref()).ok()?;
        let entry = trust.crls.find(cert.issuer().as_raw(), cert.raw_serial())?;
        let which = if position == 0 {
            "the leaf"
        } else {
            "an intermediate CA of its chain"
        };
        let reason = entry
            .reason
            .map_or_else(|| "no reason given".to_string(), |r| format!("{r:?}"));
        Some(RevokedEntry {
            position,
            text: format!(
                "serial {} ({which}) revoked at {}: {reason}",
                hex_serial(cert.raw_serial()),
                timestamp(i64::try_from(entry.revoked_at).unwrap_or(i64::MAX))
            ),
        })
    })
}
