//! Certificates and keys from PEM files: what peers are trusted by (the bundle and the
//! CRLs), and credentials (a leaf with its chain and the matching key) for the node and each
//! workload.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{RootCertStore, sign::CertifiedKey};
use rustls_pki_types::{
    CertificateDer, PrivateKeyDer,
    pem::{PemObject, SectionKind},
};

use super::{
    crl::{Crl, Crls},
    provider,
};
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
    #[error("cannot read a certificate revocation list from {path}: {detail}")]
    ReadCrl { path: PathBuf, detail: String },
    #[error("{path} holds no certificate revocation list")]
    NoCrl { path: PathBuf },
}

/// What a peer's certificate is judged by: the roots it must chain to (one or more: several
/// during a CA rotation) and the revocation lists of their CAs.
#[derive(Clone, Debug)]
pub struct Trust {
    pub roots: Arc<RootCertStore>,
    /// Each CRL once, compactly (`tls::crl`): what both verifiers check, and what names a
    /// revoked certificate in logs.
    pub crls: Arc<Crls>,
}

impl Trust {
    /// The bundle alone (tests and tools that have no CRLs).
    pub fn load_bundle(path: &Path) -> Result<Self, MaterialError> {
        Self::load(path, &[])
    }

    pub fn load(bundle: &Path, crl_files: &[PathBuf]) -> Result<Self, MaterialError> {
        let certs = read_certificates(bundle)?;
        let mut roots = RootCertStore::empty();
        for (index, cert) in certs.into_iter().enumerate() {
            roots.add(cert).map_err(|source| MaterialError::BadRoot {
                path: bundle.into(),
                index,
                source,
            })?;
        }
        let (mut crls, mut read) = (Vec::new(), 0);
        for file in crl_files {
            for der in read_crls(file)? {
                read += der.len();
                crls.push(parse_crl(der, file)?);
            }
        }
        Ok(Self::new(roots, crls, read))
    }

    /// The roots with the CRLs read from files of `read` bytes of DER in all.
    pub fn new(roots: RootCertStore, crls: Vec<Crl>, read: usize) -> Self {
        for crl in &crls {
            // A root's list is verified now and its signed bytes let go; an
            // intermediate's waits for the intermediate (the first chain that has it).
            crl.verify_with(&roots.roots);
        }
        Self {
            roots: Arc::new(roots),
            crls: Arc::new(Crls::new(crls, read)),
        }
    }
}

/// One CRL of the file `path` (named in the error), as the verifiers judge by it.
pub fn parse_crl(der: Vec<u8>, path: &Path) -> Result<Crl, MaterialError> {
    Crl::from_der(der).map_err(|e| MaterialError::ReadCrl {
        path: path.into(),
        detail: super::explain::webpki_error(&e),
    })
}

/// Every CRL in a file, as DER: PEM (one or more `X509 CRL` blocks) or a single DER one.
pub fn read_crls(path: &Path) -> Result<Vec<Vec<u8>>, MaterialError> {
    let bytes = std::fs::read(path).map_err(|e| MaterialError::ReadCrl {
        path: path.into(),
        detail: e.to_string(),
    })?;
    crls_from_bytes(bytes, path)
}

/// [`read_crls`] on a file's bytes, read already; `path` names the file in errors.
pub fn crls_from_bytes(bytes: Vec<u8>, path: &Path) -> Result<Vec<Vec<u8>>, MaterialError> {
    // DER starts with a SEQUENCE tag; PEM with text.
    if bytes.first() == Some(&0x30) {
        return Ok(vec![bytes]);
    }
    // Decoded straight into a buffer of our own: a big list is not copied again.
    let crls = <(SectionKind, Vec<u8>)>::pem_slice_iter(&bytes)
        .filter(|section| !matches!(section, Ok((kind, _)) if *kind != SectionKind::Crl))
        .map(|section| section.map(|(_, der)| der))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| MaterialError::ReadCrl {
            path: path.into(),
            detail: pem_error(&e),
        })?;
    if crls.is_empty() {
        return Err(MaterialError::NoCrl { path: path.into() });
    }
    Ok(crls)
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
            detail: pem_error(&e),
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

    /// A certificate the daemon issued itself (key made in memory, so it matches).
    pub fn issued(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, rustls::Error> {
        let signing_key = provider().key_provider.load_private_key(key)?;
        let leaf = CertSummary::parse(chain[0].as_ref())
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        Ok(Self {
            key: Arc::new(CertifiedKey::new(chain, signing_key)),
            leaf,
        })
    }

    /// The leaf and the intermediates behind it.
    pub fn chain(&self) -> (&CertificateDer<'static>, &[CertificateDer<'static>]) {
        (&self.key.cert[0], &self.key.cert[1..])
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

/// Every certificate of a PEM file, in order (at least one).
pub(crate) fn read_certificates(
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, MaterialError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| MaterialError::ReadCertificates {
            path: path.into(),
            detail: pem_error(&e),
        })?;
    if certs.is_empty() {
        return Err(MaterialError::NoCertificates { path: path.into() });
    }
    Ok(certs)
}

/// A PEM reading error in words (the crate prints markers as lists of byte values).
fn pem_error(error: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error as E;
    match error {
        E::MissingSectionEnd { end_marker } => format!(
            "a PEM block has no \"{}\" line: the file is cut short (half-written?)",
            String::from_utf8_lossy(end_marker)
        ),
        E::IllegalSectionStart { line } => format!(
            "a PEM block starts with a malformed line {:?}",
            String::from_utf8_lossy(line)
        ),
        E::Base64Decode(e) => format!("a PEM block is not valid base64: {e}"),
        other => other.to_string(),
    }
}
