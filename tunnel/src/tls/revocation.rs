//! Which certificate of a chain a CRL revokes, and how, in words. webpki decides whether a
//! chain is revoked (verify.rs); this only finds the entry so logs can name the serial, the
//! date and the reason.

use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer as _, X509Certificate};

use super::Trust;
use crate::identity::{hex_serial, timestamp};

/// "serial 1A2B… (the intermediate) revoked at 2026-…: keyCompromise", for the first
/// certificate of `chain` (leaf first) that a CRL of `trust` lists.
pub fn revocation_entry(trust: &Trust, chain: &[CertificateDer<'_>]) -> Option<String> {
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
                return Some(format!(
                    "serial {} ({which}) revoked at {}: {reason}",
                    hex_serial(cert.raw_serial()),
                    timestamp(entry.revocation_date.as_secs() as i64)
                ));
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
