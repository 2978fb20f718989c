//! Turns the config and the loaded certificates into what each proxy needs.

use std::{
    collections::{BTreeSet, HashMap},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use super::StartError;
use crate::{
    config::{Config, ConfigError, Located, Problem},
    ebpf::OriginalDstTable,
    errors,
    identity::{Purpose, SpiffeId},
    policy::{LivePolicy, Policy},
    proxy::{
        admission::Refusals,
        inbound::{InboundInputs, nonlocal_bind::NonlocalBind},
        outbound::{OutboundInputs, OutboundWorkload, PeerIdentities},
        plaintext::PlaintextInputs,
        pool::{Pool, PoolSettings},
    },
    tls::{self, Bundle, CertificateProblem, Credential, PeerExpectation},
};

/// Certificates and keys, loaded once at start.
pub struct Material {
    bundle: Bundle,
    node: Credential,
    workloads: HashMap<String, Credential>,
}

impl Material {
    /// Reads the bundle and every certificate and key. A file that cannot be used at all
    /// (unreadable, no certificate, a key that does not belong to its certificate) is a
    /// problem at the key that names it, and every one is reported at once. What the
    /// certificates say is judged apart ([`Material::refusals`]), so that `tunnel probe` can
    /// still present a certificate the daemon would not start with and show how peers react.
    pub fn load(config: &Config) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let bundle = Bundle::load(&config.trust_bundle.value)
            .map_err(|e| problems.push(Problem::at(&config.trust_bundle.site, errors::chain(&e))))
            .ok();
        let node = load_credential(&config.node.cert, &config.node.key, &mut problems);
        let mut workloads = HashMap::new();
        for workload in &config.workloads {
            if let Some(credential) = load_credential(&workload.cert, &workload.key, &mut problems)
            {
                workloads.insert(workload.name.clone(), credential);
            }
        }
        match (bundle, node) {
            (Some(bundle), Some(node)) if problems.is_empty() => Ok(Self {
                bundle,
                node,
                workloads,
            }),
            _ => Err(ConfigError::new(&config.file, problems)),
        }
    }

    /// The certificates the daemon must not start with, each at the key that names its file:
    /// one that breaks the X.509-SVID rules for its role (a CA certificate, a node certificate
    /// without serverAuth, a workload's without clientAuth...) or is for another identity than
    /// configured, which no peer will ever accept; and a node certificate outside its
    /// validity, which makes every peer refuse every tunnel to this host. A workload
    /// certificate outside its validity is only warned about ([`Material::workload_problems`]):
    /// the other workloads and the inbound side keep working, and the outbound side says why
    /// that workload's calls are refused.
    pub fn refusals(&self, config: &Config) -> Vec<Problem> {
        let mut refusals = Vec::new();
        let node = &config.node;
        for problem in self.node.problems(&node.spiffe_id, Purpose::ServerAuth) {
            refusals.push(refusal(&node.cert, &problem, "the node"));
        }
        for workload in &config.workloads {
            let who = format!("workload {:?}", workload.name);
            let credential = &self.workloads[&workload.name];
            for problem in credential.problems(&workload.spiffe_id, Purpose::ClientAuth) {
                if !matches!(problem, CertificateProblem::Validity(_)) {
                    refusals.push(refusal(&workload.cert, &problem, &who));
                }
            }
        }
        refusals
    }

    /// What peers will object to in a workload's certificate.
    pub fn workload_problems(&self, name: &str, id: &SpiffeId) -> Vec<String> {
        self.workloads
            .get(name)
            .map(|c| c.problems(id, Purpose::ClientAuth))
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// The TLS client config of a workload calling a peer expected to be `expected`.
    pub fn client_config(
        &self,
        config: &Config,
        workload: &str,
        expected: PeerExpectation,
    ) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
        let credential = &self.workloads[workload];
        tls::client_config(
            credential.key.clone(),
            self.bundle.roots.clone(),
            config.trust_domain.clone(),
            expected,
        )
    }
}

/// A certificate problem that stops startup, said at the key of the certificate's file.
fn refusal(cert: &Located<PathBuf>, problem: &CertificateProblem, who: &str) -> Problem {
    let path = cert.value.display();
    let message = match problem {
        CertificateProblem::OtherIdentity { found, expected } => {
            format!("{path}: the certificate is for {found}, but {who} is {expected}")
        }
        // Only the node's validity stops startup.
        CertificateProblem::Validity(text) => {
            format!("{path}: {text}; peers refuse it, so no tunnel to this host can open")
        }
        CertificateProblem::NotSvid(e) => format!("{path}: {e}"),
    };
    Problem::at(&cert.site, message)
}

/// Loads one credential, or records why not at the key of the file at fault.
fn load_credential(
    cert: &Located<PathBuf>,
    key: &Located<PathBuf>,
    problems: &mut Vec<Problem>,
) -> Option<Credential> {
    Credential::load(&cert.value, &key.value)
        .map_err(|e| {
            let site = match e {
                tls::MaterialError::ReadKey { .. } | tls::MaterialError::UnsupportedKey { .. } => {
                    &key.site
                }
                _ => &cert.site,
            };
            problems.push(Problem::at(site, errors::chain(&e)));
        })
        .ok()
}

/// The `[[peer]]` entries by destination.
pub fn peer_identities(config: &Config) -> PeerIdentities {
    PeerIdentities::new(
        config
            .peers
            .iter()
            .flat_map(|p| p.destinations.iter().map(|net| (*net, p.spiffe_id.clone())))
            .collect(),
    )
}

/// What the daemon serving a destination must present: the identity a `[[peer]]` entry pins
/// for it (the most specific entry wins), else a node identity matching `[outbound]
/// peer_identity`. The daemon and `tunnel probe` both decide here.
pub fn peer_expectation(config: &Config, pinned: Option<&SpiffeId>) -> PeerExpectation {
    match pinned {
        Some(id) => PeerExpectation::Pinned(id.clone()),
        None => PeerExpectation::Node(config.outbound.peer_identity.clone()),
    }
}

pub fn outbound_inputs(
    config: &Config,
    material: &Material,
    workload_cgroups: &[(String, u64)],
    original_dst: OriginalDstTable,
) -> Result<OutboundInputs, StartError> {
    let peers = peer_identities(config);
    let expectations: BTreeSet<Option<SpiffeId>> = std::iter::once(None)
        .chain(config.peers.iter().map(|p| Some(p.spiffe_id.clone())))
        .collect();
    let mut workloads = HashMap::new();
    for (name, cgroup_id) in workload_cgroups {
        let workload = config
            .workload(name)
            .expect("cgroups were resolved from configured workloads");
        let mut tls_configs = HashMap::new();
        for expected in &expectations {
            tls_configs.insert(
                expected.clone(),
                material.client_config(
                    config,
                    name,
                    peer_expectation(config, expected.as_ref()),
                )?,
            );
        }
        let certificate_problems = material.workload_problems(name, &workload.spiffe_id);
        let outbound = OutboundWorkload {
            certificate_problems,
            name: name.as_str().into(),
            spiffe_id: workload.spiffe_id.clone(),
            tls: tls_configs,
        };
        workloads.insert(*cgroup_id, Arc::new(outbound));
    }
    let pool = Pool::new(PoolSettings {
        max_streams_per_connection: config.outbound.max_streams_per_connection,
        idle_timeout: config.outbound.idle_timeout,
        connect_timeout: config.outbound.connect_timeout,
        keepalive: config.outbound.keepalive,
    });
    Ok(OutboundInputs {
        original_dst: Arc::new(original_dst),
        workloads,
        peers,
        peer_port: config.outbound.peer_port,
        pool,
        destinations: config.capture.destinations.clone(),
    })
}

pub fn inbound_inputs(config: &Config, material: &Material) -> Result<InboundInputs, StartError> {
    let server = tls::server_config(
        material.node.key.clone(),
        material.bundle.roots.clone(),
        config.trust_domain.clone(),
    )?;
    let workloads_by_port = config
        .workloads
        .iter()
        .flat_map(|w| {
            w.ports
                .iter()
                .map(|port| (*port, Arc::<str>::from(w.name.as_str())))
        })
        .collect::<HashMap<_, _>>();
    Ok(InboundInputs {
        tls: server,
        policy: LivePolicy::new(Policy::from_config(config)),
        live: Arc::default(),
        workloads_by_port: Arc::new(workloads_by_port),
        own_ports: config.listen.own_ports(),
        proxy_protocol_ports: proxy_protocol_ports(config),
        xfcc_ports: config
            .workloads
            .iter()
            .flat_map(|w| w.xfcc.iter().copied())
            .collect(),
        node_identity: config.node.spiffe_id.to_string().into(),
        connect_timeout: config.outbound.connect_timeout,
        limits: config.inbound,
        refusals: Arc::new(Refusals::new(REFUSAL_LOG_INTERVAL)),
        nonlocal_bind: NonlocalBind::default(),
        #[cfg(test)]
        deliver_to_loopback: false,
    })
}

/// At most one log line per kind of refused connection per interval (each is counted).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// The plaintext listener shares the inbound side's view of the workloads, its refusal
/// counters and its live policy (which holds the modes).
pub fn plaintext_inputs(config: &Config, inbound: &InboundInputs) -> PlaintextInputs {
    PlaintextInputs {
        workloads_by_port: inbound.workloads_by_port.clone(),
        connect_timeout: config.outbound.connect_timeout,
        refusals: inbound.refusals.clone(),
        policy: inbound.policy.clone(),
        proxy_protocol_ports: inbound.proxy_protocol_ports.clone(),
        xfcc_ports: inbound.xfcc_ports.clone(),
    }
}

/// Every workload port whose deliveries start with a PROXY protocol header.
fn proxy_protocol_ports(config: &Config) -> BTreeSet<u16> {
    config
        .workloads
        .iter()
        .flat_map(|w| w.proxy_protocol.iter().copied())
        .collect()
}

#[cfg(test)]
mod tests;
