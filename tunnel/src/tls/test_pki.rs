//! A throwaway CA for the verifier and explanation tests: real certificates from
//! `tunnel::ca`, broken ones included.

use rustls::pki_types::CertificateDer;

use super::{Credential, Trust};
use crate::{
    ca::{self, Ca, InitOptions, LeafSpec},
    identity::{SpiffeId, TrustDomain},
};

pub fn td() -> TrustDomain {
    "example.org".parse().unwrap()
}

/// A CA for example.org in a temporary directory, and the bundle a daemon would load.
pub struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
    pub trust: Trust,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let files = ca::init(&InitOptions {
            trust_domain: td(),
            out: dir.path().join("ca"),
            force: false,
            root_ttl: ca::DEFAULT_ROOT_TTL,
            intermediate_ttl: ca::DEFAULT_INTERMEDIATE_TTL,
        })
        .unwrap();
        Self {
            ca: Ca::load(&files.dir).unwrap(),
            trust: Trust::load_bundle(&files.bundle).unwrap(),
            dir,
        }
    }

    /// The chain (leaf, intermediate) of a fresh SVID for `uri`, as a peer presents it.
    pub fn chain(&self, uri: &str) -> Vec<CertificateDer<'static>> {
        let id: SpiffeId = uri.parse().unwrap();
        self.chain_for(&LeafSpec::workload(&id, ca::DEFAULT_LEAF_TTL))
    }

    /// The chain of a leaf made as `spec` says (deliberately broken ones included).
    pub fn chain_for(&self, spec: &LeafSpec) -> Vec<CertificateDer<'static>> {
        let issued = self
            .ca
            .issue(spec, &self.dir.path().join("leaf"), true)
            .unwrap();
        Credential::load(&issued.cert, &issued.key)
            .unwrap()
            .key
            .cert
            .clone()
    }
}
