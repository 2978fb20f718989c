//! Turns the config and the loaded certificates into what each proxy needs.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use crate::{
    config::Config,
    credentials::{Credentials, Spec},
    ebpf::{DeliveryMarks, OriginalDstTable},
    identity::SpiffeId,
    policy::{LivePolicy, Policy},
    proxy::{
        admission::Refusals,
        budget::BufferBudget,
        destination::Destinations,
        inbound::{InboundInputs, nonlocal_bind::NonlocalBind},
        outbound::{OutboundInputs, OutboundWorkload, PeerIdentities},
        plaintext::PlaintextInputs,
        pool::{Pool, PoolSettings},
    },
    telemetry::Telemetry,
    tls::PeerExpectation,
};

/// What the TLS material is built for: the trust domain and every peer identity a workload
/// may be asked to expect.
pub fn credentials_spec(config: &Config) -> Spec {
    let pins: BTreeSet<Option<SpiffeId>> = std::iter::once(None)
        .chain(config.peers.iter().map(|p| Some(p.spiffe_id.clone())))
        .collect();
    Spec {
        trust_domain: config.trust_domain.clone(),
        expectations: pins
            .into_iter()
            .map(|pinned| {
                let expected = peer_expectation(config, pinned.as_ref());
                (pinned, expected)
            })
            .collect(),
    }
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
    credentials: &Credentials,
    workload_cgroups: &[(String, u64)],
    original_dst: Arc<OriginalDstTable>,
    destinations: Arc<dyn Destinations>,
    telemetry: &Arc<Telemetry>,
    budget: &Arc<BufferBudget>,
) -> OutboundInputs {
    let peers = peer_identities(config);
    let mut workloads = HashMap::new();
    for (name, cgroup_id) in workload_cgroups {
        let workload = config
            .workload(name)
            .expect("cgroups were resolved from configured workloads");
        let outbound = OutboundWorkload::new(name.as_str().into(), workload.spiffe_id.clone());
        workloads.insert(*cgroup_id, Arc::new(outbound));
    }
    let pool = Pool::following(
        pool_settings(config, budget),
        Some(credentials.subscribe()),
        telemetry.clone(),
    );
    OutboundInputs {
        original_dst,
        workloads,
        peers,
        peer_port: config.outbound.peer_port,
        pool,
        snapshots: credentials.subscribe(),
        captured: config.capture.destinations.clone(),
        telemetry: telemetry.clone(),
        destinations,
        budget: budget.clone(),
    }
}

/// The pool as `[outbound]` sets it (the daemon's and `tunnel probe`'s).
pub fn pool_settings(config: &Config, budget: &Arc<BufferBudget>) -> PoolSettings {
    PoolSettings {
        max_streams_per_connection: config.outbound.max_streams_per_connection,
        idle_timeout: config.outbound.idle_timeout,
        connect_timeout: config.outbound.connect_timeout,
        keepalive: config.outbound.keepalive,
        budget: budget.clone(),
    }
}

pub fn inbound_inputs(
    config: &Config,
    credentials: &Credentials,
    telemetry: &Arc<Telemetry>,
    budget: &Arc<BufferBudget>,
    delivery_marks: Option<Arc<DeliveryMarks>>,
) -> InboundInputs {
    let workloads_by_port = config
        .workloads
        .iter()
        .flat_map(|w| {
            w.ports
                .iter()
                .map(|port| (*port, Arc::<str>::from(w.name.as_str())))
        })
        .collect::<HashMap<_, _>>();
    InboundInputs {
        snapshots: credentials.subscribe(),
        policy: LivePolicy::new(Policy::from_config(config)),
        live: Arc::default(),
        workloads_by_port: Arc::new(workloads_by_port),
        workload_ids: Arc::new(
            config
                .workloads
                .iter()
                .map(|w| (Arc::from(w.name.as_str()), w.spiffe_id.to_string().into()))
                .collect(),
        ),
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
        known_sources: config
            .peers
            .iter()
            .flat_map(|peer| peer.destinations.iter().copied())
            .collect(),
        refusals: Arc::new(Refusals::new(REFUSAL_LOG_INTERVAL)),
        nonlocal_bind: NonlocalBind::default(),
        telemetry: telemetry.clone(),
        deliver_to_loopback: false,
        budget: budget.clone(),
        delivery_marks,
    }
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
        telemetry: inbound.telemetry.clone(),
        delivery_marks: inbound.delivery_marks.clone(),
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
