//! Outbound: accepts captured connections on the outbound listener(s), finds each one's
//! original destination and calling workload from what the kernel programs recorded, and
//! carries it as one HBONE stream to the daemon on the destination host.
//!
//! A caller that belongs to no workload is refused: nothing is ever sent anonymously. A
//! tunnel that cannot be opened is reported to the application as a reset, never as a
//! connection that worked.

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Instant,
};

use bytes::{Bytes, BytesMut};
use ipnet::IpNet;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tracing::{debug, info, warn};

use super::{
    copy::{self, CopyEnd},
    pool::{Pool, PoolError, PoolKey},
};
use crate::{
    credentials::Snapshot,
    drain::DrainWatcher,
    ebpf::{OriginalDestination, OriginalDstTable},
    errors,
    identity::{Purpose, SpiffeId},
    logging, sys,
    telemetry::{
        ConnectionInfo, Direction, FailReason, Telemetry,
        metrics::{ReasonLabels, TcpLabels, UNKNOWN, WorkloadLabels},
    },
};

/// The most read from an application before its tunnel is open (one HTTP request's head).
const EARLY_READ: usize = 16 * 1024;

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
}

/// `[[peer]]` entries: the identity expected of the daemon serving a destination.
#[derive(Clone, Debug, Default)]
pub struct PeerIdentities {
    entries: Vec<(IpNet, SpiffeId)>,
}

impl PeerIdentities {
    pub fn new(entries: Vec<(IpNet, SpiffeId)>) -> Self {
        Self { entries }
    }

    /// The most specific entry containing `ip`.
    pub fn expected(&self, ip: IpAddr) -> Option<&SpiffeId> {
        self.entries
            .iter()
            .filter(|(net, _)| net.contains(&ip))
            .max_by_key(|(net, _)| net.prefix_len())
            .map(|(_, id)| id)
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
    pub destinations: Vec<IpNet>,
    pub telemetry: Arc<Telemetry>,
    /// Registered pods' identities by address: a pod calling one of them expects exactly
    /// that identity.
    pub pod_identities: Arc<crate::pods::Directory>,
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
                tokio::spawn(carry(
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

async fn carry(
    mut app: TcpStream,
    src: SocketAddr,
    original: OriginalDestination,
    pod: Option<Arc<PodCaller>>,
    inputs: Arc<OutboundInputs>,
    _drain: DrainWatcher,
) {
    let started = Instant::now();
    let dst = original.addr;
    let metrics = &inputs.telemetry.metrics.proxy;
    let refuse = |app: &TcpStream, capture_reason: Option<&'static str>, reason: FailReason| {
        if let Some(reason) = capture_reason {
            metrics
                .capture_refused
                .get_or_create(&ReasonLabels { reason })
                .inc();
        }
        metrics.failed(Direction::Outbound, reason);
        copy::reset(app);
    };
    // A pod's listener says whose connection it is; on the host, the caller's cgroup does.
    let workload = match &pod {
        Some(pod) => Some(&pod.workload),
        None => original
            .workload_cgroup_id
            .and_then(|id| inputs.workloads.get(&id)),
    };
    let Some(workload) = workload else {
        info!(
            %src, %dst, pid = original.pid, cgroup_id = original.cgroup_id,
            "refused: the caller belongs to no workload, and calls without an identity are not sent"
        );
        return refuse(&app, Some("no_workload"), FailReason::no_identity);
    };
    if let Some(why) = names_no_host(dst.ip(), &inputs.destinations) {
        info!(%src, %dst, workload = %workload.name, pid = original.pid, "refused: {why}; nothing is dialled");
        return refuse(&app, Some("no_host"), FailReason::not_deliverable);
    }
    metrics
        .capture_connections
        .get_or_create(&WorkloadLabels {
            workload: workload.name.to_string(),
        })
        .inc();
    let _ = app.set_nodelay(true);
    // A `[[peer]]` pin first; then, for a pod, the identity of the pod at the destination
    // when this node knows it (ztunnel's rule: the caller checks it reached that workload);
    // else the configured peer pattern.
    let pinned = inputs.peers.expected(dst.ip());
    let exact = match (pinned, &pod) {
        (None, Some(_)) => inputs.pod_identities.expected(dst.ip()).await,
        _ => None,
    };
    let snapshot = inputs.snapshots.borrow().clone();
    let tls = match &exact {
        Some(id) => snapshot.client_expecting(&workload.name, id),
        None => snapshot.client(&workload.name, pinned).cloned(),
    };
    let Some(tls) = tls else {
        warn!(%src, %dst, workload = %workload.name, "refused: no TLS config for this workload and peer");
        return refuse(&app, None, FailReason::other);
    };
    let key = PoolKey {
        workload: workload.name.clone(),
        peer: SocketAddr::new(dst.ip(), inputs.peer_port),
        via: pod.as_ref().map(|p| p.network.clone()),
    };
    let early = match queued_bytes(&app) {
        Ok(early) => early,
        Err(e) => {
            debug!(%src, %dst, workload = %workload.name, error = %e, "application connection failed before its tunnel opened");
            return refuse(&app, None, FailReason::other);
        }
    };
    let early_len = early.len() as u64;
    // Boxed: the open (dial, TLS and h2 handshakes) is a large state machine that would
    // otherwise stay inside every connection's task for its whole life.
    let stream = match Box::pin(inputs.pool.open(&key, &tls, dst, early)).await {
        Ok(stream) => stream,
        Err(e) => {
            // What is wrong with our certificate (expired, wrong SAN...), said with the
            // peer's refusal, so the caller's log explains it too.
            let our_certificate = match (&e, snapshot.workloads.get(&*workload.name)) {
                (PoolError::Handshake { .. }, Some(credential)) => credential
                    .problems(&workload.spiffe_id, Purpose::ClientAuth)
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
                _ => String::new(),
            };
            info!(
                %src, %dst, workload = %workload.name, src_identity = %workload.spiffe_id, pid = original.pid,
                error = %errors::chain(&e), our_certificate, "refused: tunnel not opened"
            );
            return refuse(&app, None, e.fail_reason());
        }
    };
    // Not kept for the connection's life: a long connection would hold every certificate
    // and config of its time (the pooled connection keeps what it needs).
    drop(snapshot);
    let peer_identity = stream.peer_identity.as_ref().map(ToString::to_string);
    let counted = metrics.open(&TcpLabels {
        direction: Direction::Outbound,
        source_principal: workload.spiffe_id.to_string(),
        source_workload: workload.name.to_string(),
        destination_principal: peer_identity.clone().unwrap_or_else(|| UNKNOWN.into()),
        destination_workload: UNKNOWN.into(),
    });
    let tracked = inputs.telemetry.connections.open(ConnectionInfo {
        direction: "outbound",
        src,
        dst,
        src_identity: Some(workload.spiffe_id.to_string()),
        dst_identity: peer_identity.clone(),
        workload: workload.name.to_string(),
        peer: key.peer,
    });
    tracked
        .live()
        .bytes_sent
        .fetch_add(early_len, std::sync::atomic::Ordering::Relaxed);
    let (connection, tls_params) = (stream.connection, stream.tls);
    let (mut stats, end) =
        copy::bidirectional(&mut app, stream.send, stream.recv, Some(tracked.live())).await;
    stats.to_stream += early_len;
    counted.close(stats.to_stream, stats.to_socket);
    drop(tracked);
    let close_reason = close_reason(end, stream.connection_ended.get());
    info!(
        target: logging::ACCESS,
        direction = "outbound",
        %src,
        src_identity = %workload.spiffe_id,
        ssl_client_verify = "SUCCESS",
        %dst,
        dst_workload = "-",
        workload = %workload.name,
        pid = original.pid,
        peer = %key.peer,
        peer_identity = peer_identity.as_deref().unwrap_or("-"),
        ssl_protocol = tls_params.protocol,
        ssl_cipher = tls_params.cipher,
        connection,
        bytes_sent = stats.to_stream,
        bytes_received = stats.to_socket,
        duration_ms = started.elapsed().as_millis() as u64,
        close_reason,
        "connection closed"
    );
}

/// Why a carried connection ended, in the access log's words: `closed`, a reset and which
/// side sent it, or what closed its tunnel connection under it (a certificate expired...).
pub fn close_reason(end: CopyEnd, connection_ended: Option<&String>) -> String {
    match (end, connection_ended) {
        (CopyEnd::Closed, _) => "closed".into(),
        (CopyEnd::SocketReset, _) => "reset by the local side".into(),
        (CopyEnd::StreamReset, Some(why)) => why.clone(),
        (CopyEnd::StreamReset, None) => "reset by the tunnel side".into(),
    }
}

/// Why a destination names no single host (so no peer daemon can serve it), if it does
/// not: a broadcast or multicast address, or the network or broadcast address of a
/// captured IPv4 subnet (the kernel lets a process connect() to those).
fn names_no_host(ip: IpAddr, destinations: &[IpNet]) -> Option<String> {
    let ip = ip.to_canonical();
    if ip.is_multicast() || ip.is_unspecified() {
        return Some(format!("{ip} is a multicast or unspecified address"));
    }
    if let IpAddr::V4(v4) = ip {
        if v4.is_broadcast() {
            return Some(format!("{ip} is the broadcast address"));
        }
        let subnet = destinations.iter().find(|net| {
            net.contains(&ip)
                && net.prefix_len() <= 30
                && (net.network() == ip || net.broadcast() == ip)
        });
        if let Some(net) = subnet {
            return Some(format!(
                "{ip} is the network or broadcast address of the captured subnet {net}"
            ));
        }
    }
    None
}

/// What the application has already sent (client-speaks-first protocols usually have by
/// the time the connection is accepted), read without waiting; empty if nothing is queued.
/// Read past tokio, whose readiness for a just-accepted socket is not known until its next
/// poll of epoll and would report nothing.
fn queued_bytes(app: &TcpStream) -> io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(EARLY_READ);
    match sys::recv_queued(app, &mut buf) {
        Ok(0) => Ok(Bytes::new()),
        Ok(_) => Ok(buf.freeze()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Bytes::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// A connected pair on loopback: (the application's end, the accepted end).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        (client, accepted)
    }

    /// Waits until the accepted end has something to read (data or EOF), without reading.
    async fn until_readable(socket: &TcpStream) {
        let mut byte = [0u8; 1];
        let _ = socket.peek(&mut byte).await;
    }

    #[tokio::test]
    async fn queued_bytes_takes_what_was_sent_and_never_waits() {
        let (mut app, accepted) = pair().await;
        assert!(
            queued_bytes(&accepted).unwrap().is_empty(),
            "nothing sent yet: empty, at once"
        );
        app.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        until_readable(&accepted).await;
        assert_eq!(
            &queued_bytes(&accepted).unwrap()[..],
            b"GET / HTTP/1.1\r\n\r\n"
        );
        assert!(queued_bytes(&accepted).unwrap().is_empty(), "taken once");
    }

    #[tokio::test]
    async fn queued_bytes_leaves_eof_for_the_copy_loop() {
        let (mut app, mut accepted) = pair().await;
        app.write_all(b"bye").await.unwrap();
        app.shutdown().await.unwrap();
        until_readable(&accepted).await;
        assert_eq!(&queued_bytes(&accepted).unwrap()[..], b"bye");
        // The half-close must still be seen by the copy loop, to become END_STREAM.
        let mut rest = Vec::new();
        assert_eq!(accepted.read_to_end(&mut rest).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn queued_bytes_reads_at_most_one_early_read() {
        let (mut app, mut accepted) = pair().await;
        let sent = vec![7u8; EARLY_READ * 2];
        app.write_all(&sent).await.unwrap();
        app.shutdown().await.unwrap();
        until_readable(&accepted).await;
        let early = queued_bytes(&accepted).unwrap();
        assert!(!early.is_empty() && early.len() <= EARLY_READ);
        let mut rest = Vec::new();
        accepted.read_to_end(&mut rest).await.unwrap();
        assert_eq!(
            early.len() + rest.len(),
            sent.len(),
            "nothing lost or repeated"
        );
    }

    #[test]
    fn broadcast_and_network_addresses_name_no_host() {
        let captured: Vec<IpNet> = vec![
            "10.240.0.0/24".parse().unwrap(),
            "10.9.9.9/32".parse().unwrap(),
        ];
        for ip in [
            "10.240.0.255",
            "10.240.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "ff02::1",
        ] {
            assert!(
                names_no_host(ip.parse().unwrap(), &captured).is_some(),
                "{ip} names no host"
            );
        }
        for ip in ["10.240.0.1", "10.240.0.254", "10.9.9.9", "fd00::1"] {
            assert_eq!(names_no_host(ip.parse().unwrap(), &captured), None, "{ip}");
        }
    }

    #[test]
    fn the_most_specific_peer_entry_wins() {
        let id = |s: &str| s.parse::<SpiffeId>().unwrap();
        let peers = PeerIdentities::new(vec![
            (
                "10.0.0.0/24".parse().unwrap(),
                id("spiffe://example.org/node/any"),
            ),
            (
                "10.0.0.2/32".parse().unwrap(),
                id("spiffe://example.org/node/b"),
            ),
        ]);
        assert_eq!(
            peers.expected("10.0.0.2".parse().unwrap()),
            Some(&id("spiffe://example.org/node/b"))
        );
        assert_eq!(
            peers.expected("10.0.0.3".parse().unwrap()),
            Some(&id("spiffe://example.org/node/any"))
        );
        assert_eq!(peers.expected("10.9.0.3".parse().unwrap()), None);
    }
}
