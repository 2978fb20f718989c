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
    /// The files' bytes at the last attempt, good or not: an event that changed nothing
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

/// The files' bytes, each behind its length (an unreadable file reads as a marker), to tell
/// a change from an event that changed nothing.
pub(super) fn read_files(files: &[PathBuf]) -> Vec<u8> {
    let mut all = Vec::new();
    for file in files {
        match std::fs::read(file) {
            Ok(bytes) => {
                all.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
                all.extend_from_slice(&bytes);
            }
            Err(_) => all.extend_from_slice(&u64::MAX.to_le_bytes()),
        }
    }
    all
}
