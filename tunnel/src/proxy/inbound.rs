//! Inbound: the HBONE server on the tunnel port. Each TLS connection must present a client
//! certificate that chains to the bundle and is an X.509-SVID of our trust domain; each
//! CONNECT stream on it is then checked in this order:
//!
//! 1. the destination is a deliverable address of this host (not loopback, not elsewhere),
//! 2. its port belongs to a configured workload (never the daemon's own ports),
//! 3. policy lets the caller's identity reach that workload,
//!
//! and only then dialled. Refusals get a 4xx/5xx answer and one log line saying why: the
//! daemon is never an open proxy.
//!
//! Everything an outsider can make this side hold is capped ([`InboundLimits`]): connections
//! that have not finished their handshakes (in all, and per source address), handshakes in
//! progress, connections per caller identity and address, streams per connection, header
//! size, and how long a connection may sit without streams or unanswered PINGs. The caps
//! and the memory bound they give are in ARCHITECTURE.md.

mod connection;
mod handshake_thread;
pub mod live;
pub mod nonlocal_bind;
mod stream;

use std::{
    collections::{BTreeSet, HashMap},
    io,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use ipnet::IpNet;
use tokio::{
    net::TcpListener,
    sync::{Semaphore, watch},
};
use tracing::info;

use super::{
    admission::{KeyedLimit, PreTls, Refusal, Refusals},
    copy,
};
use crate::{
    credentials::Snapshot,
    drain::DrainWatcher,
    identity::SpiffeId,
    policy::LivePolicy,
    telemetry::{AuthFailure, Direction, FailReason, Telemetry},
    tls,
};

#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    #[error("failed to bind the inbound listener {addr}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("failed to start the thread that computes TLS handshakes")]
    HandshakeThread(#[source] io::Error),
}

/// What the inbound side needs besides its listener.
pub struct InboundInputs {
    /// The TLS material in force: each handshake takes the current server config, and each
    /// connection follows the changes.
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// The policy in force (replaced on reload).
    pub policy: Arc<LivePolicy>,
    /// The streams being carried, judged again on reload.
    pub live: Arc<live::LiveStreams>,
    /// Local port → the workload that owns it.
    pub workloads_by_port: Arc<HashMap<u16, Arc<str>>>,
    /// Workload name → its SPIFFE ID (the metrics' `destination_principal`).
    pub workload_ids: Arc<HashMap<Arc<str>, Arc<str>>>,
    /// The daemon's own ports, never a destination.
    pub own_ports: BTreeSet<u16>,
    /// Ports whose deliveries start with a PROXY protocol v2 header.
    pub proxy_protocol_ports: BTreeSet<u16>,
    /// HTTP/1.1 ports whose requests get `X-Forwarded-Client-Cert`, and the identity it
    /// names as `By`.
    pub xfcc_ports: BTreeSet<u16>,
    pub node_identity: Arc<str>,
    pub connect_timeout: Duration,
    pub limits: InboundLimits,
    /// Refusals before a connection is served, counted by kind (shared with whoever reports
    /// them).
    pub refusals: Arc<Refusals>,
    /// Whether the kernel would let the bind proof of locality lie (see [`nonlocal_bind`]).
    pub nonlocal_bind: nonlocal_bind::NonlocalBind,
    /// Metrics, `/connections`, the access log's and the auth stream's state.
    pub telemetry: Arc<Telemetry>,
    /// Whether loopback destinations are deliverable: `false` in the daemon (a CONNECT
    /// must not reach services bound to 127.0.0.1). The in-process tests, which have only
    /// loopback to deliver to, set it; their refusal cases run with it `false`, so the rule
    /// they check is compiled exactly as the daemon runs it.
    pub deliver_to_loopback: bool,
    /// Sources known from the start for the pre-TLS slots' reserve: the ranges of the
    /// `[[peer]]` entries (addresses that complete a handshake become known as they do).
    pub known_sources: Vec<IpNet>,
    /// Charged for each connection's receive window and each copy's reads.
    pub budget: Arc<super::budget::BufferBudget>,
    /// With the sockmap hop on: marks each delivery to join it.
    pub delivery_marks: Option<Arc<crate::ebpf::DeliveryMarks>>,
}

/// The caps on what peers can make the inbound side hold: the `[inbound]` config table.
pub use crate::config::Inbound as InboundLimits;

pub struct Inbound {
    listeners: Vec<TcpListener>,
}

/// A registered pod as its HBONE listener knows it: the certificate it presents, the
/// addresses it may be reached at, and where its deliveries are made.
pub struct PodServer {
    /// Its name among the credentials' workloads (`namespace/name`).
    pub name: Arc<str>,
    /// Its identity, which is also the workload that policy rules name (`to`): every
    /// replica of a service account is one destination.
    pub identity: Arc<str>,
    pub ips: Vec<IpAddr>,
    pub network: crate::netns::PodNetwork,
}

/// The inbound side's shared state and caps, for the node's listeners and every pod's.
#[derive(Clone)]
pub struct InboundService(Arc<Shared>);

impl InboundService {
    /// Fails only if the handshake thread cannot be started.
    pub fn new(inputs: InboundInputs) -> Result<Self, InboundError> {
        let limits = inputs.limits;
        let pre_tls = PreTls::new(
            limits.max_unauthenticated,
            limits.max_unauthenticated_per_address,
            inputs.known_sources.clone(),
        );
        let handshake_thread =
            handshake_thread::HandshakeThread::start().map_err(InboundError::HandshakeThread)?;
        Ok(Self(Arc::new(Shared {
            inputs,
            pre_tls,
            handshakes: Arc::new(Semaphore::new(limits.max_handshakes)),
            handshake_thread,
            connections_by_peer: KeyedLimit::new(limits.max_connections_per_peer),
        })))
    }

    /// Serves a pod's HBONE listener (bound on its address inside its namespace) until a
    /// drain; its connections present the pod's certificate and deliver inside the pod.
    pub async fn serve_pod(self, listener: TcpListener, pod: Arc<PodServer>, drain: DrainWatcher) {
        accept_loop(listener, Some(pod), self.0, drain).await;
    }
}

/// What every stream of one TLS connection shares, for the access log.
pub(super) struct Session {
    pub tls: super::hbone::TlsParams,
    /// The caller's certificate subject (nginx's `$ssl_client_s_dn`), when it has one.
    pub subject_dn: Option<String>,
    /// Why the connection was closed under its streams, once it was.
    pub ended: std::sync::OnceLock<String>,
    /// The registered pod whose listener accepted it; `None`: the node's.
    pub pod: Option<Arc<PodServer>>,
    /// What its streams' reads are charged to.
    pub reads: super::budget::ReadBudget,
    /// The caller's SPIFFE ID as text, for its streams' labels and lines.
    pub caller_principal: crate::telemetry::metrics::Label,
}

/// What every connection task shares: the inputs and the caps' live state.
struct Shared {
    inputs: InboundInputs,
    /// The slots of connections that have not finished their handshakes, shared fairly.
    pre_tls: Arc<PreTls>,
    handshakes: Arc<Semaphore>,
    /// Where the handshakes are computed.
    handshake_thread: handshake_thread::HandshakeThread,
    connections_by_peer: Arc<KeyedLimit<(SpiffeId, IpAddr)>>,
}

impl Inbound {
    /// Binds each address; an IPv6 one only takes IPv6 (IPV6_V6ONLY), so it can sit next to
    /// an IPv4 wildcard on the same port.
    pub fn bind(addrs: &[SocketAddr], backlog: u32) -> Result<Self, InboundError> {
        let mut listeners = Vec::new();
        for addr in addrs {
            let listener = super::listen(*addr, backlog).map_err(|source| InboundError::Bind {
                addr: *addr,
                source,
            })?;
            listeners.push(listener);
        }
        Ok(Self { listeners })
    }

    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The listening sockets, for what applies to them all.
    pub fn listening(&self) -> impl Iterator<Item = &TcpListener> {
        self.listeners.iter()
    }

    /// Accepts until a drain is signalled; open connections are told to finish (GOAWAY) and
    /// the drain waits for their streams.
    pub async fn run(self, service: InboundService, drain: DrainWatcher) {
        let watch = tokio::spawn(service.0.inputs.nonlocal_bind.clone().watch());
        self.accept(service, drain).await;
        watch.abort();
    }

    /// What [`Inbound::run`] does but for the watch of the non-local bind sysctls, which
    /// the main runtime keeps: another data-plane runtime's listeners.
    pub async fn accept(self, service: InboundService, drain: DrainWatcher) {
        let shared = service.0;
        let mut tasks = tokio::task::JoinSet::new();
        for listener in self.listeners {
            tasks.spawn(accept_loop(listener, None, shared.clone(), drain.clone()));
        }
        drop(drain);
        while tasks.join_next().await.is_some() {}
    }

    /// The same listeners registered with the runtime this is called on (see
    /// [`super::outbound::Outbound::rehome`]).
    pub fn rehome(self) -> io::Result<Self> {
        let listeners = self
            .listeners
            .into_iter()
            .map(|listener| TcpListener::from_std(listener.into_std()?))
            .collect::<io::Result<_>>()?;
        Ok(Self { listeners })
    }
}

async fn accept_loop(
    listener: TcpListener,
    pod: Option<Arc<PodServer>>,
    shared: Arc<Shared>,
    mut drain: DrainWatcher,
) {
    while let Some((tcp, peer)) = super::next_connection(&listener, &mut drain, "inbound").await {
        match shared.pre_tls.admit(peer.ip()) {
            Ok(unauthenticated) => {
                tokio::spawn(connection::serve(
                    tcp,
                    peer,
                    unauthenticated,
                    pod.clone(),
                    shared.clone(),
                    drain.clone(),
                ));
            }
            Err(refusal) => {
                // A reset frees the socket at once (no TIME_WAIT, no lingering fd).
                copy::reset(&tcp);
                shared.log_refusal(refusal, peer, "");
            }
        }
    }
}

impl Shared {
    /// A refused TLS handshake: counted with the other refusals (by the kind of its error),
    /// but said on the auth stream (rate-limited there) with what the caller presented, not
    /// in the refusal log.
    fn refuse_handshake(
        &self,
        peer: SocketAddr,
        reason: &str,
        kind: tls::RefusalKind,
        presented: Option<String>,
    ) {
        let telemetry = &self.inputs.telemetry;
        self.inputs
            .refusals
            .record(Refusal::HandshakeFailed, reason);
        telemetry.metrics.proxy.handshake(Direction::Inbound, None);
        telemetry
            .metrics
            .proxy
            .failed(Direction::Inbound, FailReason::of_tls(kind));
        let mut failure = AuthFailure::now(Direction::Inbound, peer, reason);
        failure.peer_identity = presented;
        telemetry.auth_failures.record(failure);
    }

    /// Counts a refusal and logs it unless one of its kind was logged in the last interval.
    fn log_refusal(&self, refusal: Refusal, peer: SocketAddr, reason: &str) {
        self.inputs
            .telemetry
            .metrics
            .proxy
            .failed(Direction::Inbound, refusal.fail_reason());
        if let Some(now) = self.inputs.refusals.record(refusal, reason) {
            let limits = &self.inputs.limits;
            let detail = match refusal {
                Refusal::Unauthenticated => format!(
                    "{} connections have not finished their handshakes (max_unauthenticated)",
                    limits.max_unauthenticated
                ),
                Refusal::Evicted => format!(
                    "all {} slots of connections that have not finished their handshakes are \
                     held (max_unauthenticated), and this was the oldest of the prefix holding \
                     the most: a newcomer took its slot",
                    limits.max_unauthenticated
                ),
                Refusal::UnauthenticatedFromAddress => format!(
                    "{} connections from {} have not finished their handshakes (max_unauthenticated_per_address)",
                    limits.max_unauthenticated_per_address,
                    peer.ip()
                ),
                Refusal::HandshakeTimeout => format!(
                    "no complete handshake within {:?}",
                    limits.handshake_timeout
                ),
                Refusal::ConnectionsPerPeer => format!(
                    "this identity already holds {} connections from {} (max_connections_per_peer)",
                    limits.max_connections_per_peer,
                    peer.ip()
                ),
                Refusal::NotTls => "plaintext (not TLS) on the tunnel port".into(),
                Refusal::Plaintext => "plaintext to a workload port".into(),
                Refusal::HandshakeFailed => "handshake failed".into(),
                Refusal::NoStream => {
                    "authenticated, but no HTTP/2 connection followed the TLS handshake".into()
                }
            };
            let reason = if reason.is_empty() {
                detail
            } else {
                format!("{detail}: {reason}")
            };
            info!(
                %peer,
                refusal = refusal.as_str(),
                %reason,
                suppressed_since_last = now.suppressed,
                "refused tunnel connection"
            );
        }
    }
}
