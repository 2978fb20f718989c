//! One generation of TLS material: the trust, every credential, and the rustls configs built
//! from them. A snapshot never changes; a reload or a renewal builds the next one whole, so a
//! handshake sees either the old material or the new, never a mix.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use rustls::ClientConfig;
use tokio::sync::watch;

use super::{
    Owner,
    lifetime::{Role, Watch},
};
use crate::{
    identity::{SpiffeId, TrustDomain},
    tls::{self, Credential, PeerExpectation, SpiffeClientVerifier, SpiffeServerVerifier, Trust},
};

/// What a snapshot's configs are built for, fixed at start.
#[derive(Clone, Debug)]
pub struct Spec {
    pub trust_domain: TrustDomain,
    /// Every peer identity a workload may be asked to expect: `None` is the node pattern of
    /// `[outbound] peer_identity` (always there), `Some` a `[[peer]]` pin.
    pub expectations: Vec<(Option<SpiffeId>, PeerExpectation)>,
}

pub struct Snapshot {
    generation: u64,
    pub trust: Arc<Trust>,
    pub node: Arc<Credential>,
    /// By workload name.
    pub workloads: HashMap<String, Arc<Credential>>,
    /// Each workload's configs, by expected peer identity.
    clients: HashMap<String, WorkloadClients>,
    /// Judges callers again when the trust changes (a new CRL).
    client_verifier: Arc<SpiffeClientVerifier>,
    spec: Arc<Spec>,
    /// Configs for one exact peer identity that no `[[peer]]` pin names (a registered pod
    /// calling a pod whose identity this node knows), made on first use: at most one per
    /// (pod, destination identity) for this snapshot's life.
    exact: Mutex<HashMap<(String, SpiffeId), Arc<ClientTls>>>,
}

impl Snapshot {
    pub fn build(
        generation: u64,
        spec: Arc<Spec>,
        trust: Arc<Trust>,
        node: Arc<Credential>,
        workloads: HashMap<String, Arc<Credential>>,
    ) -> Result<Self, rustls::Error> {
        let mut clients = HashMap::new();
        for (name, credential) in &workloads {
            let mut unpinned = None;
            let mut by_pin = HashMap::new();
            for (pinned, expected) in &spec.expectations {
                let client = client_tls(name, credential, expected, &trust, &spec, generation)?;
                match pinned {
                    None => unpinned = Some(client),
                    Some(id) => {
                        by_pin.insert(id.clone(), client);
                    }
                }
            }
            let unpinned = unpinned.ok_or_else(|| {
                rustls::Error::General("the spec has no unpinned peer expectation".into())
            })?;
            clients.insert(name.clone(), WorkloadClients { unpinned, by_pin });
        }
        let client_verifier = Arc::new(SpiffeClientVerifier::new(
            &trust,
            spec.trust_domain.clone(),
        )?);
        Ok(Self {
            generation,
            trust,
            node,
            workloads,
            clients,
            client_verifier,
            spec,
            exact: Mutex::default(),
        })
    }

    /// The TLS client config of `workload` calling a peer that must be exactly `id`;
    /// `None` for a workload this snapshot does not have.
    pub fn client_expecting(&self, workload: &str, id: &SpiffeId) -> Option<Arc<ClientTls>> {
        let clients = self.clients.get(workload)?;
        if let Some(pinned) = clients.by_pin.get(id) {
            return Some(pinned.clone());
        }
        let mut exact = self.exact.lock().expect("client config cache poisoned");
        let key = (workload.to_owned(), id.clone());
        if let Some(client) = exact.get(&key) {
            return Some(client.clone());
        }
        let credential = self.workloads.get(workload)?;
        let expected = PeerExpectation::Pinned(id.clone());
        let client = client_tls(
            workload,
            credential,
            &expected,
            &self.trust,
            &self.spec,
            self.generation,
        )
        .ok()?;
        exact.insert(key, client.clone());
        Some(client)
    }

    /// The TLS client config of `workload` calling a peer pinned as `pinned` (`None`: a node
    /// identity matching the pattern); `None` for a workload this snapshot does not have.
    pub fn client(&self, workload: &str, pinned: Option<&SpiffeId>) -> Option<&Arc<ClientTls>> {
        // Looked up by reference, without allocating: this runs for every connection.
        let clients = self.clients.get(workload)?;
        match pinned {
            None => Some(&clients.unpinned),
            Some(id) => clients.by_pin.get(id),
        }
    }

    /// The certificate in force for `owner` (`None` for a workload it does not have).
    pub fn credential(&self, owner: &Owner) -> Option<&Arc<Credential>> {
        match owner {
            Owner::Node => Some(&self.node),
            Owner::Workload(name) => self.workloads.get(name),
        }
    }

    pub fn spec(&self) -> &Arc<Spec> {
        &self.spec
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn client_verifier(&self) -> &Arc<SpiffeClientVerifier> {
        &self.client_verifier
    }

    /// A verifier of servers expected as `expected`, by this snapshot's trust.
    pub fn server_verifier(&self, expected: PeerExpectation) -> SpiffeServerVerifier {
        SpiffeServerVerifier::new(&self.trust, self.spec.trust_domain.clone(), expected)
    }
}

/// A workload's client config for peers expected as `expected`.
fn client_tls(
    workload: &str,
    credential: &Arc<Credential>,
    expected: &PeerExpectation,
    trust: &Arc<Trust>,
    spec: &Spec,
    generation: u64,
) -> Result<Arc<ClientTls>, rustls::Error> {
    let config = tls::client_config(
        credential.key.clone(),
        trust,
        spec.trust_domain.clone(),
        expected.clone(),
    )?;
    let follow = Follow {
        role: Role::Outbound {
            workload: workload.into(),
            expected: expected.clone(),
        },
        own: credential.clone(),
        trust: trust.clone(),
    };
    Ok(Arc::new(ClientTls {
        config,
        generation,
        follow: Some(follow),
    }))
}

/// One workload's client configs: for a peer any node identity of the pattern may serve, and
/// for each `[[peer]]` pin.
struct WorkloadClients {
    unpinned: Arc<ClientTls>,
    by_pin: HashMap<SpiffeId, Arc<ClientTls>>,
}

/// A workload's TLS client config for one kind of peer, and what a connection made with it
/// must follow.
pub struct ClientTls {
    pub config: Arc<ClientConfig>,
    /// Counts up with every snapshot: a pooled connection of an older generation than a
    /// caller's takes no new streams.
    pub generation: u64,
    /// What the connection presents and judges by; `None` for tools and tests that hold one
    /// config for their whole run.
    pub follow: Option<Follow>,
}

impl ClientTls {
    /// A config that nothing replaces.
    pub fn fixed(config: Arc<ClientConfig>) -> Arc<Self> {
        Arc::new(Self {
            config,
            generation: 0,
            follow: None,
        })
    }

    /// The watch of a connection made with this config now, if it is followed.
    pub fn watch(&self, snapshots: &watch::Receiver<Arc<Snapshot>>) -> Option<Watch> {
        let follow = self.follow.as_ref()?;
        Some(Watch {
            role: follow.role.clone(),
            own: follow.own.clone(),
            trust: follow.trust.clone(),
            snapshots: snapshots.clone(),
        })
    }
}

pub struct Follow {
    pub role: Role,
    pub own: Arc<Credential>,
    pub trust: Arc<Trust>,
}
