//! Where the node's and each workload's certificate comes from: files (`cert` + `key`) or
//! the daemon's own issuer (`issuer` + `ttl`); and the CRL files.

use std::time::Duration;

use super::{Checker, KeyPath, at};
use crate::config::{
    CertSource, DEFAULT_ISSUED_TTL, Located,
    raw::{RawNode, RawWorkload},
};

/// The four keys a `[node]` or `[[workload]]` table may use to name its certificate.
pub(super) struct RawCertKeys<'a> {
    pub cert: Option<&'a str>,
    pub key: Option<&'a str>,
    pub issuer: Option<&'a str>,
    pub ttl: Option<&'a str>,
}

impl<'a> From<&'a RawNode> for RawCertKeys<'a> {
    fn from(raw: &'a RawNode) -> Self {
        Self {
            cert: raw.cert.as_deref(),
            key: raw.key.as_deref(),
            issuer: raw.issuer.as_deref(),
            ttl: raw.ttl.as_deref(),
        }
    }
}

impl<'a> From<&'a RawWorkload> for RawCertKeys<'a> {
    fn from(raw: &'a RawWorkload) -> Self {
        Self {
            cert: raw.cert.as_deref(),
            key: raw.key.as_deref(),
            issuer: raw.issuer.as_deref(),
            ttl: raw.ttl.as_deref(),
        }
    }
}

impl Checker<'_> {
    /// `cert` + `key`, or `issuer` (+ `ttl`); never both kinds, never half of a pair.
    pub(super) fn cert_source(&mut self, path: &KeyPath, raw: RawCertKeys) -> Option<CertSource> {
        match (raw.cert, raw.key, raw.issuer) {
            (Some(cert), Some(key), None) => {
                if raw.ttl.is_some() {
                    self.problem(
                        &path.key("ttl"),
                        "ttl applies to certificates the daemon issues itself (`issuer`); a \
                         certificate from `cert` has the validity it was issued with",
                    );
                    return None;
                }
                let cert = self.file_path(&path.key("cert"), cert);
                let key = self.file_path(&path.key("key"), key);
                Some(CertSource::Files {
                    cert: cert?,
                    key: key?,
                })
            }
            (None, None, Some(issuer)) => {
                let dir = self.file_path(&path.key("issuer"), issuer);
                let ttl = self.duration(&path.key("ttl"), raw.ttl, DEFAULT_ISSUED_TTL)?;
                if ttl < MIN_ISSUED_TTL {
                    self.problem(
                        &path.key("ttl"),
                        format!(
                            "at least {}s: the certificate is renewed at half its lifetime",
                            MIN_ISSUED_TTL.as_secs()
                        ),
                    );
                    return None;
                }
                Some(CertSource::Issuer { dir: dir?, ttl })
            }
            (_, _, Some(_)) => {
                self.problem(
                    &path.key("issuer"),
                    "either `cert` and `key` (files) or `issuer` (the daemon issues its own \
                     certificate), not both",
                );
                None
            }
            (Some(_), None, None) => {
                self.problem(path, "`cert` is set but `key` is missing");
                None
            }
            (None, Some(_), None) => {
                self.problem(path, "`key` is set but `cert` is missing");
                None
            }
            (None, None, None) => {
                self.problem(
                    path,
                    "no certificate: set `cert` and `key`, or `issuer` (and `ttl`) for a \
                     certificate the daemon issues and renews itself",
                );
                None
            }
        }
    }

    /// The `crl` list: files of certificate revocation lists, PEM or DER.
    pub(super) fn crl_files(&mut self, raw: &[String]) -> Option<Vec<Located<std::path::PathBuf>>> {
        let mut files = Vec::new();
        let mut ok = true;
        for (i, text) in raw.iter().enumerate() {
            match self.file_path(&at("crl").index(i), text) {
                Some(file) => files.push(file),
                None => ok = false,
            }
        }
        ok.then_some(files)
    }
}

/// Shorter than this, renewing at half the lifetime would keep the daemon busy issuing.
pub(super) const MIN_ISSUED_TTL: Duration = Duration::from_secs(10);
