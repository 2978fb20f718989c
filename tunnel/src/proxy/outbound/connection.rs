//! One captured connection, in phases: [`identify`] the caller, check and [`route`] the
//! destination, [`open`] a pooled HBONE stream (the application's first bytes ride with
//! the CONNECT), then [`deliver`]: carry the bytes and write the access line. A phase that
//! refuses returns a [`Refused`]; [`refuse`] is the one place that logs, counts and resets.

use std::{
    cell::RefCell,
    io,
    net::{IpAddr, SocketAddr},
    sync::{Arc, atomic::Ordering},
    time::Instant,
};

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use super::{
    OutboundInputs, OutboundWorkload, PodCaller,
    route::{self, Route, Routes, Unroutable},
};
use crate::{
    drain::DrainWatcher,
    ebpf::OriginalDestination,
    errors,
    identity::{Purpose, SpiffeId, timestamp},
    logging,
    proxy::{
        copy,
        destination::{OpenHeld, ServiceName},
        pool::{HboneStream, PoolError},
    },
    sys,
    telemetry::{
        ConnectionInfo, Direction, FailReason,
        metrics::{ReasonLabels, TcpLabels, UNKNOWN, unknown},
    },
    tls::Credential,
};

/// The most read from an application before its tunnel is open (one HTTP request's head).
const EARLY_READ: usize = 16 * 1024;

/// Why a captured connection was refused before its tunnel opened.
pub(super) enum Refused {
    /// The caller belongs to no workload: nothing is sent without an identity.
    NoWorkload,
    /// The destination cannot be routed.
    Unroutable(Unroutable),
    /// The application's connection failed before its tunnel opened.
    ApplicationGone(io::Error),
    /// No stream could be opened to the peer. `our_certificate`: what is wrong with the
    /// caller's own certificate, said with the peer's refusal so the caller's log explains
    /// it too.
    NotOpened {
        error: Box<PoolError>,
        our_certificate: String,
    },
}

/// A stream opened for the application's connection.
struct Opened {
    stream: HboneStream,
    peer: SocketAddr,
    /// What the CONNECT named: the destination itself, or the Service endpoint picked.
    target: SocketAddr,
    /// The Service the application addressed, if it addressed one.
    service: Option<ServiceName>,
    /// The workload known to be at the destination (a pod's identity).
    dst_workload: Option<SpiffeId>,
    /// The application's bytes sent with the CONNECT.
    early_len: u64,
    /// Counts this connection against its Service endpoint while it lives.
    _open: Option<OpenHeld>,
}

pub(super) async fn carry(
    app: TcpStream,
    src: SocketAddr,
    original: OriginalDestination,
    pod: Option<Arc<PodCaller>>,
    inputs: Arc<OutboundInputs>,
    _drain: DrainWatcher,
) {
    let started = Instant::now();
    let src = shown_source(src, pod.as_deref(), original.addr);
    let Some(workload) = identify(&original, pod.as_deref(), &inputs) else {
        return refuse(&app, Refused::NoWorkload, src, &original, None, &inputs);
    };
    match open(
        &app,
        &workload,
        original.addr,
        src.ip(),
        pod.as_deref(),
        &inputs,
    )
    .await
    {
        Ok(opened) => deliver(app, opened, src, &original, &workload, &inputs, started).await,
        Err(refused) => refuse(&app, refused, src, &original, Some(&workload), &inputs),
    }
}

/// The caller's address as the logs say it. A pod's connection reaches its listener from
/// loopback: its own address (of the destination's family) is said instead, which is where
/// its tunnel comes from too.
fn shown_source(src: SocketAddr, pod: Option<&PodCaller>, dst: SocketAddr) -> SocketAddr {
    let ipv4 = dst.ip().to_canonical().is_ipv4();
    pod.and_then(|pod| pod.network.addresses.iter().find(|ip| ip.is_ipv4() == ipv4))
        .map_or(src, |ip| SocketAddr::new(*ip, src.port()))
}

/// Who calls: a pod's listener says whose connection it is; on the host, the caller's
/// cgroup does.
fn identify(
    original: &OriginalDestination,
    pod: Option<&PodCaller>,
    inputs: &OutboundInputs,
) -> Option<Arc<OutboundWorkload>> {
    match pod {
        Some(pod) => Some(pod.workload.clone()),
        None => original
            .workload_cgroup_id
            .and_then(|id| inputs.workloads.get(&id))
            .cloned(),
    }
}

/// Routes the destination and opens a pooled stream to it, the application's queued bytes
/// riding with the CONNECT. A Service's endpoints are tried in turn while an attempt fails
/// with nothing delivered (the peer unreachable, the handshake or the CONNECT refused); a
/// stream that broke after its CONNECT was sent is not sent again elsewhere, since the
/// application's bytes may have been delivered.
async fn open(
    app: &TcpStream,
    workload: &OutboundWorkload,
    dst: SocketAddr,
    caller: IpAddr,
    pod: Option<&PodCaller>,
    inputs: &OutboundInputs,
) -> Result<Opened, Refused> {
    route::check_host(dst, inputs).map_err(Refused::Unroutable)?;
    workload.count_captured(&inputs.telemetry.metrics.proxy);
    let snapshot = inputs.snapshots.borrow().clone();
    let Routes { service, routes } =
        route::route(dst, caller, workload, pod, inputs, &snapshot).map_err(Refused::Unroutable)?;
    let early = queued_bytes(app).map_err(Refused::ApplicationGone)?;
    let early_len = early.len() as u64;
    let attempts = routes.len();
    let mut routes = routes.into_iter().enumerate();
    loop {
        let (attempt, route) = routes.next().expect("routes are never empty");
        let Route {
            target,
            workload: dst_workload,
            key,
            tls,
            open,
        } = route;
        // Held from the attempt on, so connections opening at once spread too.
        let held = open.as_ref().map(|count| count.hold());
        // Boxed: the open (dial, TLS and h2 handshakes) is a large state machine that would
        // otherwise stay inside every connection's task for its whole life.
        let opening = inputs
            .pool
            .open(&key, &tls, target, early.clone(), service.as_deref());
        let error = match Box::pin(opening).await {
            Ok(stream) => {
                return Ok(Opened {
                    stream,
                    peer: key.peer,
                    target,
                    service,
                    dst_workload,
                    early_len,
                    _open: held,
                });
            }
            Err(error) => error,
        };
        if let Some(service) = &service
            && attempt + 1 < attempts
            && error.delivered_nothing()
        {
            warn!(
                %dst, %service, endpoint = %target, attempt = attempt + 1, of = attempts,
                error = %errors::chain(&error), "Service endpoint not reached; trying another"
            );
            continue;
        }
        let our_certificate = match snapshot.workloads.get(&*workload.name) {
            Some(credential) => presented(credential, workload, &error),
            None => String::new(),
        };
        return Err(Refused::NotOpened {
            error: Box::new(error),
            our_certificate,
        });
    }
    // The snapshot is not kept for the connection's life: a long connection would hold
    // every certificate and config of its time (the pooled connection keeps what it needs).
}

/// The certificate the caller presented (its identity, serial and expiry) and, when the
/// peer refused the handshake, what is wrong with it as far as this host can tell.
fn presented(credential: &Credential, workload: &OutboundWorkload, error: &PoolError) -> String {
    let leaf = &credential.leaf;
    let mut said = format!(
        "{} serial {} not after {}",
        leaf.uris.first().map_or("(no URI SAN)", String::as_str),
        leaf.serial,
        timestamp(leaf.not_after)
    );
    if let PoolError::Handshake { .. } = error {
        for problem in credential.problems(&workload.spiffe_id, Purpose::ClientAuth) {
            said.push_str("; ");
            said.push_str(&problem.to_string());
        }
    }
    said
}

/// The one refusal site: a line saying why, the counters, and a reset to the application
/// (never a connection that looks as if it worked).
fn refuse(
    app: &TcpStream,
    refused: Refused,
    src: SocketAddr,
    original: &OriginalDestination,
    workload: Option<&OutboundWorkload>,
    inputs: &OutboundInputs,
) {
    let dst = original.addr;
    let name = workload.map_or("-", |w| &w.name);
    let (capture_reason, fail_reason) = match &refused {
        Refused::NoWorkload => {
            info!(
                %src, %dst, pid = original.pid, cgroup_id = original.cgroup_id,
                "refused: the caller belongs to no workload, and calls without an identity are not sent"
            );
            (Some("no_workload"), FailReason::no_identity)
        }
        Refused::Unroutable(Unroutable::NotAHost(why)) => {
            info!(%src, %dst, workload = %name, pid = original.pid, "refused: {why}; nothing is dialled");
            (Some("no_host"), FailReason::not_deliverable)
        }
        Refused::Unroutable(Unroutable::NoEndpoint { service, why }) => {
            info!(%src, %dst, workload = %name, %service, "refused: Service {service} has {why}; nothing is dialled");
            (Some("no_endpoint"), FailReason::not_deliverable)
        }
        Refused::Unroutable(Unroutable::TlsConfigMissing) => {
            warn!(%src, %dst, workload = %name, "refused: no TLS config for this workload and peer");
            (None, FailReason::other)
        }
        Refused::ApplicationGone(e) => {
            debug!(%src, %dst, workload = %name, error = %e, "application connection failed before its tunnel opened");
            (None, FailReason::other)
        }
        Refused::NotOpened {
            error,
            our_certificate,
        } => {
            let src_identity = workload
                .map(|w| w.spiffe_id.to_string())
                .unwrap_or_default();
            info!(
                %src, %dst, workload = %name, %src_identity, pid = original.pid,
                error = %errors::chain(error.as_ref()), our_certificate, "refused: tunnel not opened"
            );
            (None, error.fail_reason())
        }
    };
    let metrics = &inputs.telemetry.metrics.proxy;
    if let Some(reason) = capture_reason {
        metrics
            .capture_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }
    metrics.failed(Direction::Outbound, fail_reason);
    copy::reset(app);
}

/// Carries the bytes both ways, counted in the metrics and `/connections` while they flow,
/// then writes the access line.
async fn deliver(
    mut app: TcpStream,
    opened: Opened,
    src: SocketAddr,
    original: &OriginalDestination,
    workload: &OutboundWorkload,
    inputs: &OutboundInputs,
    started: Instant,
) {
    let Opened {
        stream,
        peer,
        target,
        service,
        dst_workload,
        early_len,
        _open,
    } = opened;
    let dst = original.addr;
    let peer_identity = stream.peer_identity.clone();
    let counted = inputs.telemetry.metrics.proxy.open(&TcpLabels {
        direction: Direction::Outbound,
        source_principal: workload.principal.clone(),
        source_workload: workload.name.clone(),
        destination_principal: peer_identity.clone().unwrap_or_else(unknown),
        destination_workload: unknown(),
        destination_service: service.clone().unwrap_or_else(unknown),
    });
    let tracked = inputs.telemetry.connections.open(ConnectionInfo {
        direction: "outbound",
        src,
        dst,
        src_identity: Some(workload.principal.clone()),
        dst_identity: peer_identity.clone(),
        workload: workload.name.clone(),
        peer,
    });
    tracked
        .live()
        .bytes_sent
        .fetch_add(early_len, Ordering::Relaxed);
    let (connection, tls_params) = (stream.connection, stream.tls);
    // The peer drains what is read from the application: its share of the budget.
    let reads = inputs
        .budget
        .for_party(peer_identity.as_deref().unwrap_or(UNKNOWN));
    let (mut stats, end) = copy::bidirectional(
        &mut app,
        stream.send,
        stream.recv,
        Some(tracked.live()),
        &reads,
    )
    .await;
    // Closed before the line is written: the copy may have left the FIN to the close.
    drop(app);
    stats.to_stream += early_len;
    counted.close(stats.to_stream, stats.to_socket);
    drop(tracked);
    let close_reason = copy::close_reason(end, stream.connection_ended.get());
    info!(
        target: logging::ACCESS,
        direction = "outbound",
        %src,
        src_identity = %workload.spiffe_id,
        ssl_client_verify = "SUCCESS",
        %dst,
        dst_service = %service.as_deref().unwrap_or("-"),
        upstream = %target,
        dst_workload = %logging::OrDash(dst_workload.as_ref()),
        workload = %workload.name,
        pid = original.pid,
        %peer,
        peer_identity = peer_identity.as_deref().unwrap_or("-"),
        ssl_protocol = tls_params.protocol,
        ssl_cipher = tls_params.cipher,
        connection,
        bytes_sent = stats.to_stream,
        bytes_received = stats.to_socket,
        duration_ms = started.elapsed().as_millis() as u64,
        close_reason = &*close_reason,
        "connection closed"
    );
}

/// What the application has already sent (client-speaks-first protocols usually have by
/// the time the connection is accepted), read without waiting; empty if nothing is queued.
/// Read past tokio, whose readiness for a just-accepted socket is not known until its next
/// poll of epoll and would report nothing. Read into a buffer of the thread's, kept for the
/// next connection, and copied out at its length: a request's head is a few hundred bytes,
/// and a fresh `EARLY_READ` buffer per connection is, for glibc's malloc, a large block
/// (past its per-thread cache; making one first merges every small free block).
fn queued_bytes(app: &TcpStream) -> io::Result<Bytes> {
    thread_local! {
        static EARLY: RefCell<BytesMut> = RefCell::new(BytesMut::new());
    }
    EARLY.with_borrow_mut(|buf| {
        buf.clear();
        buf.reserve(EARLY_READ);
        match sys::recv_queued(app, buf) {
            Ok(_) => Ok(Bytes::copy_from_slice(buf)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Bytes::new()),
            Err(e) => Err(e),
        }
    })
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::TcpListener,
    };

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
    fn a_pods_connection_is_said_to_come_from_the_pods_address_of_the_destinations_family() {
        use crate::netns::{Netns, NetnsThread, PodNetwork};
        let pod = PodCaller {
            workload: Arc::new(OutboundWorkload::new(
                "shop/frontend".into(),
                "spiffe://example.org/ns/shop/sa/frontend".parse().unwrap(),
            )),
            network: PodNetwork {
                netns: Arc::new(Netns::open(std::path::Path::new("/proc/self/ns/net")).unwrap()),
                thread: NetnsThread::start().unwrap(),
                addresses: vec!["10.1.1.2".parse().unwrap(), "fd01:1::2".parse().unwrap()].into(),
            },
        };
        let loopback: SocketAddr = "127.0.0.1:40830".parse().unwrap();
        let v4: SocketAddr = "10.1.2.2:8080".parse().unwrap();
        let v6: SocketAddr = "[fd01:2::2]:8080".parse().unwrap();
        assert_eq!(
            shown_source(loopback, Some(&pod), v4),
            "10.1.1.2:40830".parse().unwrap()
        );
        assert_eq!(
            shown_source("[::1]:40830".parse().unwrap(), Some(&pod), v6),
            "[fd01:1::2]:40830".parse().unwrap()
        );
        assert_eq!(
            shown_source(loopback, None, v4),
            loopback,
            "a host's caller as it is"
        );
    }
}
