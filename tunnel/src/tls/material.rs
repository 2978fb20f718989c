//! Certificates and keys from PEM files: the trust bundle, and credentials (a leaf with its
//! chain and the matching key) for the node and each workload.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{RootCertStore, sign::CertifiedKey};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use super::provider;
use crate::identity::{self, CertSummary, Purpose, SpiffeId};

#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    #[error("cannot read certificates from {path}: {detail}")]
    ReadCertificates { path: PathBuf, detail: String },
    #[error("{path} holds no PEM certificate")]
    NoCertificates { path: PathBuf },
    #[error("cannot read a private key from {path}: {detail}")]
    ReadKey { path: PathBuf, detail: String },
    #[error("the key in {key} is not usable for TLS: {source}")]
    UnsupportedKey { key: PathBuf, source: rustls::Error },
    #[error("the key in {key} does not belong to the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{path}: certificate {index} is not a usable trust anchor: {source}")]
    BadRoot {
        path: PathBuf,
        index: usize,
        source: rustls::Error,
    },
}

/// The roots peers must chain to (one or more: several during a CA rotation).
#[derive(Clone, Debug)]
pub struct Bundle {
    pub roots: Arc<RootCertStore>,
    pub summaries: Vec<CertSummary>,
}

impl Bundle {
    pub fn load(path: &Path) -> Result<Self, MaterialError> {
        let certs = read_certificates(path)?;
        let mut roots = RootCertStore::empty();
        let mut summaries = Vec::new();
        for (index, cert) in certs.into_iter().enumerate() {
            summaries.extend(CertSummary::parse(cert.as_ref()).ok());
            roots.add(cert).map_err(|source| MaterialError::BadRoot {
                path: path.into(),
                index,
                source,
            })?;
        }
        Ok(Self {
            roots: Arc::new(roots),
            summaries,
        })
    }
}

/// A certificate chain with its key, ready for rustls, and what the leaf says.
#[derive(Clone, Debug)]
pub struct Credential {
    pub key: Arc<CertifiedKey>,
    pub leaf: CertSummary,
    pub cert_path: PathBuf,
}

impl Credential {
    /// Loads a leaf + chain and its private key. Unreadable files and a key that does not
    /// match are errors; what the certificate itself says is judged by [`Credential::problems`].
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, MaterialError> {
        let chain = read_certificates(cert_path)?;
        let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| MaterialError::ReadKey {
            path: key_path.into(),
            detail: e.to_string(),
        })?;
        let signing_key = provider()
            .key_provider
            .load_private_key(key)
            .map_err(|source| MaterialError::UnsupportedKey {
                key: key_path.into(),
                source,
            })?;
        let leaf =
            CertSummary::parse(chain[0].as_ref()).map_err(|e| MaterialError::ReadCertificates {
                path: cert_path.into(),
                detail: e.to_string(),
            })?;
        let certified = CertifiedKey::new(chain, signing_key);
        certified
            .keys_match()
            .map_err(|_| MaterialError::KeyMismatch {
                cert: cert_path.into(),
                key: key_path.into(),
            })?;
        Ok(Self {
            key: Arc::new(certified),
            leaf,
            cert_path: cert_path.into(),
        })
    }

    /// What a peer will object to, as sentences for the log: the daemon still presents the
    /// certificate (so the peer logs its side too), but says here why it will likely fail.
    pub fn problems(&self, expected: &SpiffeId, purpose: Purpose) -> Vec<String> {
        let mut problems = Vec::new();
        let leaf_der = self
            .key
            .end_entity_cert()
            .map(|c| c.as_ref().to_vec())
            .unwrap_or_default();
        match identity::svid_identity(&leaf_der, purpose) {
            Ok(id) if &id != expected => {
                problems.push(format!("the certificate is for {id}, not {expected}"))
            }
            Ok(_) => {}
            Err(e) => problems.push(e.to_string()),
        }
        if let Some(problem) = self.leaf.validity_problem() {
            problems.push(problem);
        }
        problems
    }
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, MaterialError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| MaterialError::ReadCertificates {
            path: path.into(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(MaterialError::NoCertificates { path: path.into() });
    }
    Ok(certs)
}
