//! Certificates and keys from PEM files: the trust bundle, and credentials (a leaf with its
//! chain and the matching key) for the node and each workload.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{RootCertStore, sign::CertifiedKey};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use super::provider;
use crate::identity::{self, CertSummary, Purpose, SpiffeId, SvidError};

#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    #[error("cannot read certificates from {path}: {detail}")]
    ReadCertificates { path: PathBuf, detail: String },
    #[error("{path} holds no PEM certificate")]
    NoCertificates { path: PathBuf },
    #[error("cannot read a private key from {path}: {detail}")]
    ReadKey { path: PathBuf, detail: String },
    #[error("the key in {key} is not usable for TLS")]
    UnsupportedKey { key: PathBuf, source: rustls::Error },
    #[error("the key in {key} does not belong to the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{path}: certificate {index} is not a usable trust anchor")]
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
}

impl Bundle {
    pub fn load(path: &Path) -> Result<Self, MaterialError> {
        let certs = read_certificates(path)?;
        let mut roots = RootCertStore::empty();
        for (index, cert) in certs.into_iter().enumerate() {
            roots.add(cert).map_err(|source| MaterialError::BadRoot {
                path: path.into(),
                index,
                source,
            })?;
        }
        Ok(Self {
            roots: Arc::new(roots),
        })
    }
}

/// A certificate chain with its key, ready for rustls, and what the leaf says.
#[derive(Clone, Debug)]
pub struct Credential {
    pub key: Arc<CertifiedKey>,
    pub leaf: CertSummary,
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
        })
    }

    /// What a peer will object to in the leaf when it is presented as `expected` in the role
    /// `purpose`, most fundamental first. Startup refuses some of these and only warns about
    /// others (`app::wiring`); at run time they are said again when a peer refuses.
    pub fn problems(&self, expected: &SpiffeId, purpose: Purpose) -> Vec<CertificateProblem> {
        let mut problems = Vec::new();
        let leaf_der = self
            .key
            .end_entity_cert()
            .map(|c| c.as_ref().to_vec())
            .unwrap_or_default();
        match identity::svid_identity(&leaf_der, purpose) {
            Ok(id) if &id != expected => problems.push(CertificateProblem::OtherIdentity {
                found: id,
                expected: expected.clone(),
            }),
            Ok(_) => {}
            Err(e) => problems.push(CertificateProblem::NotSvid(e)),
        }
        if let Some(problem) = self.leaf.validity_problem() {
            problems.push(CertificateProblem::Validity(problem));
        }
        problems
    }
}

/// Something a peer will object to in a certificate that loaded.
#[derive(Debug)]
pub enum CertificateProblem {
    /// It breaks an X.509-SVID rule for its role (a CA certificate, no extended key usage for
    /// the role, not exactly one SPIFFE ID...): no peer accepts it, ever.
    NotSvid(SvidError),
    /// A good X.509-SVID, of another identity than configured.
    OtherIdentity { found: SpiffeId, expected: SpiffeId },
    /// Outside its validity period now, in words: peers refuse it until it is replaced (or,
    /// if not yet valid, until its time comes).
    Validity(String),
}

impl fmt::Display for CertificateProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotSvid(e) => write!(f, "{e}"),
            Self::OtherIdentity { found, expected } => {
                write!(f, "the certificate is for {found}, not {expected}")
            }
            Self::Validity(text) => f.write_str(text),
        }
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
