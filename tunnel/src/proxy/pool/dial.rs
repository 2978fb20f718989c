//! One dial to a peer daemon, in phases: [`handshake`] (TCP, TLS, HTTP/2 and a PING round
//! trip, under the connect timeout), the pooled [`Connection`] made from it, and
//! [`drive`], the task that runs the connection afterwards until it ends.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, OnceLock, Weak,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use crate::proxy::budget::{Charge, Chunk};
use h2::client::{Connection as H2Connection, SendRequest};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};
use tracing::{debug, info};

use prometheus_client::metrics::gauge::Gauge;

use super::{
    super::{
        hbone::{self, TlsParams},
        read_ahead::ReadAhead,
        record_tls_error::RecordTlsError,
    },
    *,
};
use crate::{
    credentials::{
        ClientTls,
        lifetime::{Authenticated, Ending},
    },
    identity::Purpose,
    telemetry::{
        Direction,
        metrics::{Label, PeerLabels, unknown},
    },
    tls::{self, Phase},
};

/// The h2 connection as the pool drives it: over TLS, recording the TLS error that breaks it.
type Driver = H2Connection<RecordTlsError<TlsStream<ReadAhead<TcpStream>>>, Chunk>;

/// What a successful handshake gives.
struct Dialled {
    sender: SendRequest<Chunk>,
    driver: Driver,
    pings: h2::PingPong,
    peer_identity: Option<SpiffeId>,
    tls_failure: Arc<OnceLock<rustls::Error>>,
    lifetime: Option<Authenticated>,
    params: TlsParams,
    took: Duration,
    /// The budget's charge for the connection's receive window.
    window: Option<Charge>,
}

/// Why a handshake gave no connection.
enum HandshakeFailure {
    /// The peer ended the new connection in good order (a close, or a GOAWAY without error)
    /// before its first answer: it began to drain, or its certificate was replaced, while we
    /// dialled. Nothing was sent on it, so one more dial is safe.
    EndedCleanly,
    Failed(PoolError),
}

impl From<PoolError> for HandshakeFailure {
    fn from(error: PoolError) -> Self {
        Self::Failed(error)
    }
}

/// What a second connection ended as [`HandshakeFailure::EndedCleanly`] says.
const ENDED_CLEANLY: &str =
    "the peer closed the connection before answering HTTP/2, twice (its log says why)";

/// What a connection's driver holds until the connection ends: its place in the pool's
/// gauge and its receive window's charge.
struct Held {
    _pooled: OpenGauge,
    _window: Option<Charge>,
}

impl Pool {
    /// Dials `key`'s peer with `tls`; the connection's driver runs in a task of its own.
    pub(super) async fn dial(
        &self,
        key: &PoolKey,
        tls: &Arc<ClientTls>,
    ) -> Result<Arc<Connection>, PoolError> {
        let settings = &self.inner.settings;
        let peer = key.peer;
        // Both attempts within the one connect timeout.
        let deadline = tokio::time::Instant::now() + settings.connect_timeout;
        let mut redialled = false;
        let dialled = loop {
            let attempt = tokio::time::timeout_at(
                deadline,
                handshake(key, tls, self.inner.snapshots.as_ref(), settings),
            )
            .await;
            match attempt {
                Ok(Ok(dialled)) => break Ok(dialled),
                Ok(Err(HandshakeFailure::EndedCleanly)) if !redialled => {
                    debug!(%peer, "the peer closed the new connection in good order before answering (draining, or its certificate replaced): dialling again");
                    redialled = true;
                }
                Ok(Err(HandshakeFailure::EndedCleanly)) => {
                    break Err(PoolError::Handshake {
                        peer,
                        reason: ENDED_CLEANLY.into(),
                        kind: tls::RefusalKind::Other,
                    });
                }
                Ok(Err(HandshakeFailure::Failed(error))) => break Err(error),
                Err(_) => {
                    break Err(PoolError::Timeout {
                        peer,
                        timeout: settings.connect_timeout,
                    });
                }
            }
        };
        let metrics = &self.inner.telemetry.metrics.proxy;
        let dialled = match dialled {
            Ok(dialled) => dialled,
            Err(error) => {
                if let PoolError::Handshake { reason, .. } = &error {
                    metrics.handshake(Direction::Outbound, None);
                    self.report_refusal(key, None, reason);
                }
                return Err(error);
            }
        };
        metrics.handshake(Direction::Outbound, Some(dialled.took));
        // The peer's ID as text, made once: the pool gauges' label and each stream's.
        let peer_principal: Option<Label> = dialled
            .peer_identity
            .as_ref()
            .map(|id| id.to_string().into());
        let peer_labels = PeerLabels {
            peer_principal: peer_principal.clone().unwrap_or_else(unknown),
        };
        let pooled = OpenGauge::new(metrics.pool_connections.get_or_create(&peer_labels).clone());
        let connection = Arc::new(Connection {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            generation: tls.generation,
            sender: dialled.sender,
            streams: AtomicU32::new(0),
            closed: AtomicBool::new(false),
            idle_since: Mutex::new(Instant::now()),
            peer_principal,
            peer_identity: dialled.peer_identity,
            tls_failure: dialled.tls_failure,
            tls: dialled.params,
            ended: Arc::default(),
            streams_gauge: metrics.pool_streams.get_or_create(&peer_labels).clone(),
            refusal_reported: AtomicBool::new(false),
        });
        tokio::spawn(drive(
            Arc::downgrade(&connection),
            connection.id,
            peer,
            dialled.driver,
            dialled.pings,
            dialled.lifetime,
            settings.keepalive,
            Held {
                _pooled: pooled,
                _window: dialled.window,
            },
        ));
        Ok(connection)
    }
}

/// TCP (from inside the caller's pod, for a pod), TLS, HTTP/2, then a PING round trip so
/// the peer's SETTINGS are applied before any stream.
async fn handshake(
    key: &PoolKey,
    tls: &Arc<ClientTls>,
    snapshots: Option<&watch::Receiver<Arc<Snapshot>>>,
    settings: &PoolSettings,
) -> Result<Dialled, HandshakeFailure> {
    let peer = key.peer;
    let tcp = match &key.via {
        None => TcpStream::connect(peer).await,
        Some(pod) => pod.connect(peer).await,
    };
    let tcp = tcp.map_err(|source| PoolError::Connect {
        peer,
        source: Arc::new(source),
    })?;
    hbone::configure_tunnel_socket(&tcp);
    let tls_started = Instant::now();
    let server_name = ServerName::IpAddress(peer.ip().into());
    let mut tls_stream = TlsConnector::from(tls.config.clone())
        .connect(server_name, ReadAhead::new(tcp))
        .await
        .map_err(|e| refused_handshake(peer, &e))?;
    let peer_identity = tls::peer_identity(tls_stream.get_ref().1, Purpose::ServerAuth);
    let params = TlsParams::of(tls_stream.get_ref().1);
    let lifetime = match (snapshots, tls_stream.get_ref().1.peer_certificates()) {
        (Some(snapshots), Some(chain)) => tls.watch(snapshots).map(|watch| {
            Authenticated::new(
                watch,
                chain.iter().map(|c| c.clone().into_owned()).collect(),
            )
        }),
        _ => None,
    };
    let window = settings.budget.window(hbone::LARGE_TLS_BUFFERS);
    if window.large_tls_buffers {
        let (io, connection) = tls_stream.get_mut();
        hbone::use_large_tls_buffers(io, connection);
    }
    // In TLS 1.3 the client finishes before the server has judged its certificate; a
    // refusal arrives later, inside h2, which keeps only its text: record it.
    let (stream, tls_failure) = RecordTlsError::new(tls_stream);
    let (sender, mut driver) =
        hbone::client_builder(settings.max_streams_per_connection, window.size)
            .handshake::<_, Chunk>(stream)
            .await
            .map_err(|e| refused_handshake(peer, &e))?;
    let pings = first_ping(&mut driver, peer, &tls_failure).await?;
    Ok(Dialled {
        sender,
        driver,
        pings,
        peer_identity,
        tls_failure,
        lifetime,
        params,
        took: tls_started.elapsed(),
        window: window.charge,
    })
}

fn refused_handshake(peer: SocketAddr, e: &(dyn std::error::Error + 'static)) -> PoolError {
    PoolError::Handshake {
        peer,
        reason: tls::describe_connection_error(e, Phase::Handshake),
        kind: tls::RefusalKind::in_chain(e),
    }
}

/// The peer's SETTINGS, its stream limit among them, come before its answer to a PING.
/// Until they are applied h2 knows no limit, and the callers waiting on this dial would
/// send streams past it, which the peer refuses (REFUSED_STREAM). A refusal of our
/// certificate shows here too: TLS 1.3 lets the server judge it after the client is done.
async fn first_ping(
    driver: &mut Driver,
    peer: SocketAddr,
    tls_failure: &OnceLock<rustls::Error>,
) -> Result<h2::PingPong, HandshakeFailure> {
    let mut pings = driver
        .ping_pong()
        .expect("a new connection still has its PingPong");
    let failed = tokio::select! {
        pong = pings.ping(h2::Ping::opaque()) => match pong {
            Ok(_) => None,
            // The PING fails when the connection ends; the connection's own error says
            // why (a GOAWAY's reason, a TLS alert), so ask it, briefly.
            Err(ping_error) => Some(
                match tokio::time::timeout(Duration::from_millis(100), &mut *driver).await {
                    Ok(Err(ended)) => Some(ended),
                    Ok(Ok(())) => None,
                    Err(_) => Some(ping_error),
                },
            ),
        },
        ended = &mut *driver => Some(ended.err()),
    };
    let Some(error) = failed else {
        return Ok(pings);
    };
    let (reason, kind) = match (tls_failure.get(), error) {
        (Some(tls_error), _) => (tls::explain(tls_error), tls::RefusalKind::of(tls_error)),
        (None, Some(e)) if !super::stream::ended_cleanly(&e) => (
            tls::describe_connection_error(&e, Phase::Handshake),
            tls::RefusalKind::in_chain(&e),
        ),
        (None, _) => return Err(HandshakeFailure::EndedCleanly),
    };
    Err(PoolError::Handshake { peer, reason, kind }.into())
}

/// Runs a pooled connection until it ends: the peer closes or breaks it, a PING goes
/// unanswered, the connection is dropped from the pool (idle), or a certificate on it
/// ends its life. Returning drops the connection (and its socket): its streams end with an
/// error.
#[expect(
    clippy::too_many_arguments,
    reason = "the parts of one dialled connection, handed over once"
)]
async fn drive(
    watched: Weak<Connection>,
    id: u64,
    peer: SocketAddr,
    mut driver: Driver,
    pings: h2::PingPong,
    mut lifetime: Option<Authenticated>,
    keepalive: Duration,
    _held: Held,
) {
    let unanswered = hbone::unanswered_ping(pings, keepalive);
    tokio::pin!(unanswered);
    let mark_closed = || {
        if let Some(connection) = watched.upgrade() {
            connection.closed.store(true, Ordering::Release);
        }
    };
    let mark_ended = |reason: String| {
        if let Some(connection) = watched.upgrade() {
            let _ = connection.ended.set(reason);
        }
    };
    let result = loop {
        tokio::select! {
            result = &mut driver => break Some(result),
            () = &mut unanswered => break None,
            ending = next_ending(&mut lifetime) => match ending {
                Ending::Replaced => {
                    mark_closed();
                    let idle = watched
                        .upgrade()
                        .is_none_or(|c| c.streams.load(Ordering::Acquire) == 0);
                    if idle {
                        // Nothing to finish: close now rather than at the next reap (a
                        // removed pod's connections would otherwise hold its namespace
                        // and sockets that long).
                        debug!(%peer, connection = id, "our certificate was replaced: the idle pooled connection is closed");
                        return;
                    }
                    debug!(%peer, connection = id, "our certificate was replaced: the pooled connection takes no new streams");
                }
                Ending::Close(reason) => {
                    mark_closed();
                    info!(%peer, connection = id, %reason, "pooled connection closed with its streams");
                    mark_ended(reason.to_string());
                    return;
                }
            },
        }
    };
    mark_closed();
    match result {
        Some(Ok(())) => debug!(%peer, connection = id, "pooled connection closed"),
        Some(Err(e)) => {
            let reason = tls::describe_connection_error(&e, Phase::Established);
            info!(%peer, connection = id, %reason, "pooled connection to peer broke");
            mark_ended(reason);
        }
        None => {
            info!(%peer, connection = id, timeout = ?keepalive, "pooled connection closed: the peer stopped answering PINGs");
            mark_ended("the peer stopped answering PINGs".into());
        }
    }
}

/// A gauge counting something while it lives: up when made, down when dropped.
struct OpenGauge(Gauge);

impl OpenGauge {
    fn new(gauge: Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The next change of course of a followed connection; never, for one that is not.
async fn next_ending(lifetime: &mut Option<Authenticated>) -> Ending {
    match lifetime {
        Some(lifetime) => lifetime.next().await,
        None => std::future::pending().await,
    }
}
