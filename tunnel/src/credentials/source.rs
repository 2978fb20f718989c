//! Where each configured certificate comes from, read again on every reload.

use std::path::{Path, PathBuf};

use super::{CredentialsError, Owner, issued};
use crate::{
    config::{CertSource, Problem},
    errors,
    identity::{Purpose, SpiffeId},
    tls::{Credential, MaterialError},
};

/// One configured certificate and what the last attempt to read it saw.
pub(super) struct Source {
    pub owner: Owner,
    pub id: SpiffeId,
    /// Every role it is presented in, each judged: a node serves, a workload calls, a pod
    /// does both.
    pub roles: &'static [Purpose],
    pub config: CertSource,
    /// The files' digests at the last attempt, good or not: an event that changed nothing
    /// reloads nothing, and a broken file is tried again only once it changes.
    pub seen: Vec<u8>,
    /// For `issuer` sources: the CA and the renewal schedule.
    pub issuer: Option<issued::IssuerState>,
}

impl Source {
    pub fn new(owner: Owner, id: SpiffeId, roles: &'static [Purpose], config: CertSource) -> Self {
        Self {
            owner,
            id,
            roles,
            config,
            seen: Vec::new(),
            issuer: None,
        }
    }

    /// The first load: the files read, or the issuer loaded and a certificate issued.
    pub fn first_load(&mut self) -> Result<Credential, CredentialsError> {
        match &self.config {
            CertSource::Files { cert, key } => Ok(Credential::load(&cert.value, &key.value)?),
            CertSource::Issuer { dir, ttl } => {
                let mut issuer =
                    issued::IssuerState::load(&dir.value, *ttl, self.id.trust_domain())?;
                let credential = issuer.issue(&self.id)?;
                self.issuer = Some(issuer);
                Ok(credential)
            }
        }
    }

    /// A failed first load at start, as a problem at the config key that names the file.
    pub fn problem(&self, error: &CredentialsError) -> Problem {
        let site = match (&self.config, error) {
            (
                CertSource::Files { key, .. },
                CredentialsError::Files(
                    MaterialError::ReadKey { .. } | MaterialError::UnsupportedKey { .. },
                ),
            ) => &key.site,
            (CertSource::Files { cert, .. }, _) => &cert.site,
            (CertSource::Issuer { dir, .. }, _) => &dir.site,
        };
        Problem::at(site, errors::chain(error))
    }

    /// The certificate and key files again (a `cert` + `key` source).
    pub fn read_files(&self) -> Result<Credential, CredentialsError> {
        match &self.config {
            CertSource::Files { cert, key } => Ok(Credential::load(&cert.value, &key.value)?),
            CertSource::Issuer { .. } => unreachable!("issuer sources are issued, not read"),
        }
    }
}

pub(super) fn trust_files(bundle: &Path, crls: &[PathBuf]) -> Vec<PathBuf> {
    std::iter::once(bundle.to_path_buf())
        .chain(crls.iter().cloned())
        .collect()
}

/// Each file's length and SHA-256 (an unreadable file reads as a marker), to tell a change
/// from an event that changed nothing. A digest rather than the bytes: a big CRL is not held
/// a second time just to be compared, nor a private key longer than it takes to load it.
pub(super) fn read_files(files: &[PathBuf]) -> Vec<u8> {
    let mut all = Vec::new();
    for file in files {
        match digest(file) {
            Ok((length, digest)) => {
                all.extend_from_slice(&length.to_le_bytes());
                all.extend_from_slice(&digest);
            }
            Err(_) => all.extend_from_slice(&u64::MAX.to_le_bytes()),
        }
    }
    all
}

/// A file's length and SHA-256, read in pieces (a CRL may be many megabytes).
fn digest(path: &Path) -> std::io::Result<(u64, Vec<u8>)> {
    use std::io::Read as _;
    let sha256 = rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .expect("a TLS 1.3 suite")
        .common
        .hash_provider;
    let mut file = std::fs::File::open(path)?;
    let mut context = sha256.start();
    let mut buffer = vec![0; 64 * 1024];
    let mut length = 0u64;
    loop {
        match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                context.update(&buffer[..n]);
                length += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((length, context.finish().as_ref().to_vec()))
}
