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

use std::{
    collections::{BTreeSet, HashMap},
    io,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use h2::server::SendResponse;
use http::{Request, StatusCode};
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::{copy, hbone};
use crate::{
    drain::DrainWatcher,
    identity::{Purpose, SpiffeId},
    policy::{Decision, Policy},
    sys, tls,
};

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    #[error("failed to bind the inbound listener {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
}

/// What the inbound side needs besides its listener.
pub struct InboundInputs {
    pub tls: Arc<ServerConfig>,
    pub policy: Policy,
    /// Local port → the workload that owns it.
    pub workloads_by_port: HashMap<u16, Arc<str>>,
    /// The daemon's own ports, never a destination.
    pub own_ports: BTreeSet<u16>,
    pub connect_timeout: Duration,
    pub max_streams: u32,
}

pub struct Inbound {
    listeners: Vec<TcpListener>,
}

impl Inbound {
    /// Binds each address; an IPv6 one only takes IPv6 (IPV6_V6ONLY), so it can sit next to
    /// an IPv4 wildcard on the same port.
    pub fn bind(addrs: &[SocketAddr]) -> Result<Self, InboundError> {
        let mut listeners = Vec::new();
        for addr in addrs {
            let bind_error = |source| InboundError::Bind {
                addr: *addr,
                source,
            };
            let domain = socket2::Domain::for_address(*addr);
            let socket =
                socket2::Socket::new(domain, socket2::Type::STREAM, None).map_err(bind_error)?;
            if addr.is_ipv6() {
                socket.set_only_v6(true).map_err(bind_error)?;
            }
            socket.set_reuse_address(true).map_err(bind_error)?;
            socket.set_nonblocking(true).map_err(bind_error)?;
            socket.bind(&(*addr).into()).map_err(bind_error)?;
            socket.listen(1024).map_err(bind_error)?;
            listeners.push(TcpListener::from_std(socket.into()).map_err(bind_error)?);
        }
        Ok(Self { listeners })
    }

    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Accepts until a drain is signalled; open connections are told to finish (GOAWAY) and
    /// the drain waits for their streams.
    pub async fn run(self, inputs: InboundInputs, drain: DrainWatcher) {
        let inputs = Arc::new(inputs);
        let mut tasks = tokio::task::JoinSet::new();
        for listener in self.listeners {
            tasks.spawn(accept_loop(listener, inputs.clone(), drain.clone()));
        }
        drop(drain);
        while tasks.join_next().await.is_some() {}
    }
}

async fn accept_loop(listener: TcpListener, inputs: Arc<InboundInputs>, mut drain: DrainWatcher) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = drain.signaled() => return,
        };
        match accepted {
            Ok((tcp, peer)) => {
                tokio::spawn(serve_connection(tcp, peer, inputs.clone(), drain.clone()));
            }
            Err(e) => {
                warn!(error = %e, "inbound accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    inputs: Arc<InboundInputs>,
    mut drain: DrainWatcher,
) {
    let _ = tcp.set_nodelay(true);
    let mut first = [0u8; 1];
    match tokio::time::timeout(hbone::HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == TLS_HANDSHAKE_RECORD => {}
        Ok(Ok(1)) => {
            info!(%peer, "refused: plaintext (not TLS) on the tunnel port");
            copy::reset(&tcp);
            return;
        }
        Ok(_) => return, // closed before saying anything
        Err(_) => {
            info!(%peer, "refused: no TLS handshake within {:?}", hbone::HANDSHAKE_TIMEOUT);
            return;
        }
    }
    let accepted = tokio::time::timeout(
        hbone::HANDSHAKE_TIMEOUT,
        TlsAcceptor::from(inputs.tls.clone()).accept(tcp),
    )
    .await;
    let mut tls_stream = match accepted {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            let reason = tls::rustls_error(&e).map_or_else(|| e.to_string(), tls::explain);
            info!(%peer, %reason, "refused: TLS handshake failed");
            return;
        }
        Err(_) => {
            info!(%peer, "refused: TLS handshake did not finish within {:?}", hbone::HANDSHAKE_TIMEOUT);
            return;
        }
    };
    let Some(caller) = tls::peer_identity(tls_stream.get_ref().1, Purpose::ClientAuth) else {
        // The verifier accepted it, so this cannot happen; refuse rather than assume.
        warn!(%peer, "refused: verified client certificate has no readable identity");
        return;
    };
    hbone::batch_tls_writes(tls_stream.get_mut().1);
    let handshake = hbone::server_builder(inputs.max_streams).handshake::<_, Bytes>(tls_stream);
    let mut connection = match tokio::time::timeout(hbone::HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(e)) => {
            info!(%peer, %caller, error = %e, "refused: HTTP/2 handshake failed");
            return;
        }
        Err(_) => {
            info!(%peer, %caller, "refused: HTTP/2 handshake timed out");
            return;
        }
    };
    debug!(%peer, %caller, "tunnel connection accepted");
    let caller = Arc::new(caller);
    let mut draining = false;
    loop {
        let next = tokio::select! {
            next = connection.accept() => next,
            () = drain.signaled(), if !draining => {
                // Ask the peer to stop opening streams; keep serving the open ones.
                connection.graceful_shutdown();
                draining = true;
                continue;
            }
        };
        match next {
            Some(Ok((request, respond))) => {
                tokio::spawn(serve_stream(
                    request,
                    respond,
                    peer,
                    caller.clone(),
                    inputs.clone(),
                    drain.clone(),
                ));
            }
            Some(Err(e)) => {
                debug!(%peer, caller = %caller, error = %e, "tunnel connection ended with an error");
                return;
            }
            None => return,
        }
    }
}

async fn serve_stream(
    request: Request<h2::RecvStream>,
    mut respond: SendResponse<Bytes>,
    peer: SocketAddr,
    caller: Arc<SpiffeId>,
    inputs: Arc<InboundInputs>,
    _drain: DrainWatcher,
) {
    let started = Instant::now();
    let dst = match hbone::requested_destination(&request) {
        Ok(dst) => dst,
        Err((status, why)) => return refuse(&mut respond, status, peer, &caller, None, &why),
    };
    let workload = match deliverable(&inputs, dst) {
        Ok(workload) => workload,
        Err(why) => {
            return refuse(
                &mut respond,
                StatusCode::FORBIDDEN,
                peer,
                &caller,
                Some(dst),
                &why,
            );
        }
    };
    match inputs.policy.evaluate(&caller, &workload) {
        Decision::Allow { because } => debug!(%peer, %caller, %dst, %workload, %because, "allowed"),
        Decision::Deny { because } => {
            let why = format!("policy: {because}");
            return refuse(
                &mut respond,
                StatusCode::FORBIDDEN,
                peer,
                &caller,
                Some(dst),
                &why,
            );
        }
    }
    let mut target = match dial_local(dst, inputs.connect_timeout).await {
        Ok(target) => target,
        Err(DialError::NotLocal) => {
            let why = format!("{} is not an address of this host", dst.ip());
            return refuse(
                &mut respond,
                StatusCode::FORBIDDEN,
                peer,
                &caller,
                Some(dst),
                &why,
            );
        }
        Err(DialError::Failed(e)) => {
            let why = format!("workload {workload} did not accept the connection: {e}");
            return refuse(
                &mut respond,
                StatusCode::SERVICE_UNAVAILABLE,
                peer,
                &caller,
                Some(dst),
                &why,
            );
        }
    };
    let send = match respond.send_response(hbone::response(StatusCode::OK), false) {
        Ok(send) => send,
        Err(e) => {
            debug!(%peer, %caller, %dst, error = %e, "stream gone before it was answered");
            return;
        }
    };
    let (stats, end) = copy::bidirectional(&mut target, send, request.into_body()).await;
    debug!(
        direction = "inbound",
        src = %peer,
        %dst,
        src_identity = %caller,
        %workload,
        bytes_received = stats.to_socket,
        bytes_sent = stats.to_stream,
        duration_ms = started.elapsed().as_millis() as u64,
        end = end.as_str(),
        "connection carried"
    );
}

/// The workload a destination is for, if the daemon may deliver there at all.
fn deliverable(inputs: &InboundInputs, dst: SocketAddr) -> Result<Arc<str>, String> {
    let ip = dst.ip().to_canonical();
    if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || is_broadcast(ip) {
        return Err(format!("{ip} is not a deliverable address"));
    }
    if inputs.own_ports.contains(&dst.port()) {
        return Err(format!(
            "port {} is one of the daemon's own ports",
            dst.port()
        ));
    }
    inputs
        .workloads_by_port
        .get(&dst.port())
        .cloned()
        .ok_or_else(|| format!("port {} belongs to no workload", dst.port()))
}

fn is_broadcast(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

enum DialError {
    NotLocal,
    Failed(io::Error),
}

/// Connects to a destination of this host. Binding the source to the destination address
/// first proves the address is local (the kernel refuses with EADDRNOTAVAIL otherwise), so
/// a CONNECT can never make the daemon dial another machine.
async fn dial_local(dst: SocketAddr, timeout: Duration) -> Result<TcpStream, DialError> {
    let socket = if dst.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(DialError::Failed)?;
    // The address check stays exact; only the choice of port moves to connect().
    let _ = sys::set_bind_address_no_port(&socket);
    match socket.bind(SocketAddr::new(dst.ip(), 0)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => return Err(DialError::NotLocal),
        Err(e) => return Err(DialError::Failed(e)),
    }
    let stream = tokio::time::timeout(timeout, socket.connect(dst))
        .await
        .map_err(|_| {
            DialError::Failed(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
        })?
        .map_err(DialError::Failed)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

fn refuse(
    respond: &mut SendResponse<Bytes>,
    status: StatusCode,
    peer: SocketAddr,
    caller: &SpiffeId,
    dst: Option<SocketAddr>,
    why: &str,
) {
    let dst = dst.map(|d| d.to_string()).unwrap_or_default();
    info!(src = %peer, src_identity = %caller, %dst, status = status.as_u16(), reason = %why, "refused CONNECT");
    let _ = respond.send_response(hbone::response(status), true);
}
