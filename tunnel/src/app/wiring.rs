//! Turns the config and the loaded certificates into what each proxy needs.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use tracing::warn;

use super::StartError;
use crate::{
    config::{self, Config, Located},
    ebpf::OriginalDstTable,
    identity::{Purpose, SpiffeId},
    policy::Policy,
    proxy::{
        admission::Refusals,
        inbound::{InboundInputs, InboundLimits, nonlocal_bind::NonlocalBind},
        outbound::{OutboundInputs, OutboundWorkload, PeerIdentities},
        pool::{Pool, PoolSettings},
    },
    tls::{self, Bundle, Credential, PeerExpectation},
};

/// Certificates and keys, loaded once at start.
pub struct Material {
    bundle: Bundle,
    node: Credential,
    workloads: HashMap<String, Credential>,
}

impl Material {
    /// Unreadable or mismatched files stop startup, naming the config key. A certificate
    /// that loads but that peers will refuse (expired, wrong identity...) is only warned
    /// about: the daemon still presents it so the peer logs its side, and other workloads
    /// keep working.
    pub fn load(config: &Config) -> Result<Self, StartError> {
        let bundle = Bundle::load(&config.trust_bundle.value)
            .map_err(|e| config.error_at(&config.trust_bundle.site, e.to_string()))?;
        let node = load_credential(config, &config.node.cert, &config.node.key)?;
        for problem in node.problems(&config.node.spiffe_id, Purpose::ServerAuth) {
            warn!(cert = %config.node.cert.value.display(), "node certificate: {problem}");
        }
        let pattern = &config.outbound.peer_identity;
        if !pattern.matches(&config.node.spiffe_id) {
            // Peers usually share this setting, so they will refuse this daemon's certificate.
            warn!(
                "node identity {} does not match [outbound] peer_identity {pattern}: peers configured like this host will refuse this daemon",
                config.node.spiffe_id
            );
        }
        let mut workloads = HashMap::new();
        for workload in &config.workloads {
            let credential = load_credential(config, &workload.cert, &workload.key)?;
            for problem in credential.problems(&workload.spiffe_id, Purpose::ClientAuth) {
                warn!(workload = %workload.name, cert = %workload.cert.value.display(), "workload certificate: {problem}");
            }
            workloads.insert(workload.name.clone(), credential);
        }
        Ok(Self {
            bundle,
            node,
            workloads,
        })
    }

    /// What peers will object to in a workload's certificate.
    pub fn workload_problems(&self, name: &str, id: &SpiffeId) -> Vec<String> {
        self.workloads
            .get(name)
            .map(|c| c.problems(id, Purpose::ClientAuth))
            .unwrap_or_default()
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

fn load_credential(
    config: &Config,
    cert: &Located<std::path::PathBuf>,
    key: &Located<std::path::PathBuf>,
) -> Result<Credential, StartError> {
    Credential::load(&cert.value, &key.value).map_err(|e| {
        let site = match e {
            tls::MaterialError::ReadKey { .. } | tls::MaterialError::UnsupportedKey { .. } => {
                &key.site
            }
            _ => &cert.site,
        };
        StartError::Config(config.error_at(site, e.to_string()))
    })
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
        keepalive_interval: config.outbound.keepalive,
        keepalive_timeout: config.outbound.keepalive,
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
        .collect();
    let mut own_ports = BTreeSet::from([
        config.listen.outbound.port(),
        config.listen.inbound.port(),
        config.listen.admin.port(),
    ]);
    own_ports.extend(config.listen.outbound_v6.map(|a| a.port()));
    own_ports.extend(config.listen.inbound_v6.map(|a| a.port()));
    Ok(InboundInputs {
        tls: server,
        policy: Policy::from_config(config),
        workloads_by_port,
        own_ports,
        connect_timeout: config.outbound.connect_timeout,
        limits: inbound_limits(&config.inbound),
        refusals: Arc::new(Refusals::new(REFUSAL_LOG_INTERVAL)),
        nonlocal_bind: NonlocalBind::default(),
        #[cfg(test)]
        deliver_to_loopback: false,
    })
}

/// At most one log line per kind of refused connection per interval (each is counted).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);

fn inbound_limits(config: &config::Inbound) -> InboundLimits {
    InboundLimits {
        max_unauthenticated: config.max_unauthenticated,
        max_unauthenticated_per_address: config.max_unauthenticated_per_address,
        max_handshakes: config.max_handshakes,
        max_connections_per_peer: config.max_connections_per_peer,
        max_streams_per_connection: config.max_streams_per_connection,
        handshake_timeout: config.handshake_timeout,
        idle_timeout: config.idle_timeout,
        keepalive_interval: config.keepalive,
        keepalive_timeout: config.keepalive,
    }
}
