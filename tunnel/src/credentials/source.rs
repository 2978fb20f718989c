//! Where each configured certificate comes from, read again on every reload.

use std::path::{Path, PathBuf};

use super::{Owner, issued};
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

    /// The first load, at start: problems at the config key that names the file.
    pub fn first_load(&mut self) -> Result<Credential, Problem> {
        match &self.config {
            CertSource::Files { cert, key } => {
                Credential::load(&cert.value, &key.value).map_err(|e| {
                    let site = match e {
                        MaterialError::ReadKey { .. } | MaterialError::UnsupportedKey { .. } => {
                            &key.site
                        }
                        _ => &cert.site,
                    };
                    Problem::at(site, errors::chain(&e))
                })
            }
            CertSource::Issuer { dir, ttl } => {
                let mut issuer = issued::IssuerState::load(&dir.value, *ttl)
                    .map_err(|e| Problem::at(&dir.site, e))?;
                let credential = issuer
                    .issue(&self.id)
                    .map_err(|e| Problem::at(&dir.site, e))?;
                self.issuer = Some(issuer);
                Ok(credential)
            }
        }
    }

    /// The certificate and key files again (a `cert` + `key` source).
    pub fn read_files(&self) -> Result<Credential, String> {
        match &self.config {
            CertSource::Files { cert, key } => {
                Credential::load(&cert.value, &key.value).map_err(|e| errors::chain(&e))
            }
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
