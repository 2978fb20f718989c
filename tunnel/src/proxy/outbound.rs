//! Outbound: accepts captured connections on the outbound listener(s), finds each one's
//! original destination and calling workload from what the kernel programs recorded, and
//! carries it as one HBONE stream to the daemon on the destination host.
//!
//! A caller that belongs to no workload is refused: nothing is ever sent anonymously. A
//! tunnel that cannot be opened is reported to the application as a reset, never as a
//! connection that worked.
//!
//! One connection goes through named phases (`connection`): identify the caller, route
//! the destination (`route`: `[[peer]]` pins, then what [`Destinations`] knows, then the
//! peer pattern), open a pooled HBONE stream, carry the bytes, log the access line. Every
//! refusal is answered in one place.

mod connection;
mod route;

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    sync::{Arc, OnceLock},
};

use ipnet::IpNet;
use prometheus_client::metrics::counter::Counter;
use tokio::{net::TcpListener, sync::watch};
use tracing::{info, warn};

pub use route::PeerIdentities;

use super::{copy, destination::Destinations, pool::Pool};
use crate::{
    credentials::Snapshot,
    drain::DrainWatcher,
    ebpf::OriginalDstTable,
    errors,
    identity::SpiffeId,
    sys,
    telemetry::{
        Direction, FailReason, Telemetry,
        metrics::{Label, ProxyMetrics, ReasonLabels, WorkloadLabels},
    },
};

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("failed to bind the outbound listener {addr}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("failed to read the network namespace cookie of {addr}")]
    NetnsCookie { addr: SocketAddr, source: io::Error },
}

/// A workload as the outbound side needs it (its TLS configs are in the snapshot in force).
pub struct OutboundWorkload {
    pub name: Arc<str>,
    pub spiffe_id: SpiffeId,
    /// `spiffe_id` as text, for its connections' labels and lines.
    pub principal: Label,
    /// Its `tunnel_capture_connections` counter, looked up in the family on its first
    /// connection and kept: the family's lookup hashes the labels under a lock.
    captured: OnceLock<Counter>,
}

impl OutboundWorkload {
    pub fn new(name: Arc<str>, spiffe_id: SpiffeId) -> Self {
        Self {
            name,
            principal: spiffe_id.to_string().into(),
            spiffe_id,
            captured: OnceLock::new(),
        }
    }

    /// Counts one of its connections captured.
    pub fn count_captured(&self, metrics: &ProxyMetrics) {
        self.captured
            .get_or_init(|| {
                metrics
                    .capture_connections
                    .get_or_create(&WorkloadLabels {
                        workload: self.name.clone(),
                    })
                    .clone()
            })
            .inc();
    }
}

/// What the outbound side needs besides its listeners.
pub struct OutboundInputs {
    pub original_dst: Arc<OriginalDstTable>,
    /// Workload cgroup id → workload.
    pub workloads: HashMap<u64, Arc<OutboundWorkload>>,
    pub peers: PeerIdentities,
    pub peer_port: u16,
    pub pool: Pool,
    /// The TLS material in force.
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// The captured destination ranges, to tell their network and broadcast addresses.
    pub captured: Vec<IpNet>,
    pub telemetry: Arc<Telemetry>,
    /// What a destination is, from whoever knows more than the data plane (registered pods;
    /// [`Unknown`](super::destination::Unknown) on a host without them).
    pub destinations: Arc<dyn Destinations>,
    /// What the copies charge their reads to.
    pub budget: Arc<super::budget::BufferBudget>,
}

impl OutboundInputs {
    /// The same inputs with a pool of their own, for another data-plane runtime.
    pub fn for_another_runtime(&self) -> Self {
        Self {
            original_dst: self.original_dst.clone(),
            workloads: self.workloads.clone(),
            peers: self.peers.clone(),
            peer_port: self.peer_port,
            pool: self.pool.sibling(),
            snapshots: self.snapshots.clone(),
            captured: self.captured.clone(),
            telemetry: self.telemetry.clone(),
            destinations: self.destinations.clone(),
            budget: self.budget.clone(),
        }
    }
}

/// A registered pod as its outbound listener knows it: who calls, and from where.
pub struct PodCaller {
    pub workload: Arc<OutboundWorkload>,
    pub network: crate::netns::PodNetwork,
}

/// The outbound proxy: binds in [`Outbound::bind`], serves in [`Outbound::run`].
pub struct Outbound {
    listeners: Vec<(TcpListener, u64)>,
}

impl Outbound {
    /// Binds every address before anything is captured, so a captured connect always finds
    /// a listener (or, with no daemon at all, a refusal).
    pub fn bind(addrs: &[SocketAddr], backlog: u32) -> Result<Self, OutboundError> {
        let mut listeners = Vec::new();
        for addr in addrs {
            let listener = super::listen(*addr, backlog).map_err(|source| OutboundError::Bind {
                addr: *addr,
                source,
            })?;
            let cookie =
                sys::netns_cookie(&listener).map_err(|source| OutboundError::NetnsCookie {
                    addr: *addr,
                    source,
                })?;
            listeners.push((listener, cookie));
        }
        Ok(Self { listeners })
    }

    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(l, _)| l.local_addr().ok())
            .collect()
    }

    /// The listening sockets, for what applies to them all.
    pub fn listening(&self) -> impl Iterator<Item = &TcpListener> {
        self.listeners.iter().map(|(listener, _)| listener)
    }

    /// The same listeners registered with the runtime this is called on (another
    /// data-plane runtime's: they were bound on the main one, so that a bind failure stops
    /// the start).
    pub fn rehome(self) -> io::Result<Self> {
        let listeners = self
            .listeners
            .into_iter()
            .map(|(listener, cookie)| Ok((TcpListener::from_std(listener.into_std()?)?, cookie)))
            .collect::<io::Result<_>>()?;
        Ok(Self { listeners })
    }

    /// Accepts until a drain is signalled; each connection then runs to its end (it holds a
    /// watcher, so the drain waits for it).
    pub async fn run(self, inputs: Arc<OutboundInputs>, drain: DrainWatcher) {
        let reaper = tokio::spawn(inputs.pool.clone().reap_idle());
        let mut tasks = tokio::task::JoinSet::new();
        for (listener, netns_cookie) in self.listeners {
            tasks.spawn(accept_loop(
                listener,
                netns_cookie,
                None,
                inputs.clone(),
                drain.clone(),
            ));
        }
        drop(drain);
        while tasks.join_next().await.is_some() {}
        reaper.abort();
    }
}

/// Serves a registered pod's outbound listener (bound inside its namespace, whose cookie
/// is `netns_cookie`): every connection it accepts is the pod's.
pub async fn serve_pod(
    listener: TcpListener,
    netns_cookie: u64,
    pod: Arc<PodCaller>,
    inputs: Arc<OutboundInputs>,
    drain: DrainWatcher,
) {
    accept_loop(listener, netns_cookie, Some(pod), inputs, drain).await;
}

async fn accept_loop(
    listener: TcpListener,
    netns_cookie: u64,
    pod: Option<Arc<PodCaller>>,
    inputs: Arc<OutboundInputs>,
    mut drain: DrainWatcher,
) {
    // A listener on one address gives every accepted socket that address: no need to ask
    // the kernel (getsockname) per connection.
    let listener_addr = listener
        .local_addr()
        .ok()
        .filter(|addr| !addr.ip().is_unspecified());
    while let Some((stream, peer)) = super::next_connection(&listener, &mut drain, "outbound").await
    {
        let local = match listener_addr.map_or_else(|| stream.local_addr(), Ok) {
            Ok(local) => local,
            Err(e) => {
                warn!(%peer, error = %e, "refused: cannot read the accepted connection's local address");
                copy::reset(&stream);
                continue;
            }
        };
        match inputs.original_dst.lookup(netns_cookie, peer, local) {
            Ok(Some(original)) => {
                tokio::spawn(connection::carry(
                    stream,
                    peer,
                    original,
                    pod.clone(),
                    inputs.clone(),
                    drain.clone(),
                ));
            }
            Ok(None) => {
                // Not captured by our programs: someone dialled the listener directly.
                info!(%peer, "refused: connection was not captured (no original destination)");
                capture_refused(&inputs, "not_captured");
                copy::reset(&stream);
            }
            Err(e) => {
                warn!(%peer, error = %errors::chain(&e), "refused: original destination lookup failed");
                capture_refused(&inputs, "lookup_failed");
                copy::reset(&stream);
            }
        }
    }
}

fn capture_refused(inputs: &OutboundInputs, reason: &'static str) {
    let metrics = &inputs.telemetry.metrics.proxy;
    metrics
        .capture_refused
        .get_or_create(&ReasonLabels { reason })
        .inc();
    metrics.failed(Direction::Outbound, FailReason::other);
}
