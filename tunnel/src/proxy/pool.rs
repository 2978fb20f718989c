//! Pooled HBONE connections. Key: (source workload, peer daemon address); never two
//! identities on one TLS connection. A key holds one or more connections: a new one is
//! dialled when all are at the stream limit. Dials for a key happen one at a time, so a
//! burst of new application connections shares the first handshake instead of racing to
//! make many. A connection that dies is dropped from the pool as soon as its driver task
//! sees it end; one that idles past the timeout is closed by [`Pool::reap_idle`].

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use h2::{RecvStream, SendStream, client::SendRequest};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tracing::{debug, info};

use super::{hbone, record_tls_error::RecordTlsError};
use crate::{
    identity::{Purpose, SpiffeId},
    tls,
};

/// A pool key: who calls, and which daemon carries it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub workload: Arc<str>,
    pub peer: SocketAddr,
}

#[derive(Clone, Copy, Debug)]
pub struct PoolSettings {
    pub max_streams_per_connection: u32,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("cannot reach the tunnel port {peer}: {source}")]
    Connect { peer: SocketAddr, source: io::Error },
    #[error(
        "connecting to {peer} timed out after {timeout:?}; is the peer up, and does a firewall let the tunnel port through?"
    )]
    Timeout { peer: SocketAddr, timeout: Duration },
    #[error("mTLS handshake with {peer} failed: {reason}")]
    Handshake { peer: SocketAddr, reason: String },
    #[error("the peer {peer} refused CONNECT {destination}: HTTP {status}")]
    Refused {
        peer: SocketAddr,
        destination: SocketAddr,
        status: http::StatusCode,
    },
    #[error("the tunnel to {peer} broke while opening a stream: {reason}")]
    Stream { peer: SocketAddr, reason: String },
}

/// An open CONNECT stream, counted against its connection until dropped.
pub struct HboneStream {
    pub send: SendStream<Bytes>,
    pub recv: RecvStream,
    /// The pooled connection carrying it (for logs).
    pub connection: u64,
    pub peer_identity: Option<SpiffeId>,
    _lease: Lease,
}

#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    settings: PoolSettings,
    keys: Mutex<HashMap<PoolKey, KeyState>>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct KeyState {
    connections: Vec<Arc<Connection>>,
    /// Held while dialling, so concurrent callers wait for that dial rather than race.
    dialing: Arc<tokio::sync::Mutex<()>>,
}

struct Connection {
    id: u64,
    sender: SendRequest<Bytes>,
    streams: AtomicU32,
    closed: AtomicBool,
    idle_since: Mutex<Instant>,
    peer_identity: Option<SpiffeId>,
    /// The TLS error that broke the connection, if one did (h2 reports only its text).
    tls_failure: Arc<OnceLock<rustls::Error>>,
}

/// One stream's claim on a connection.
struct Lease(Arc<Connection>);

impl Drop for Lease {
    fn drop(&mut self) {
        if self.0.streams.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.0.idle_since.lock().expect("idle_since lock poisoned") = Instant::now();
        }
    }
}

impl Connection {
    fn try_lease(self: &Arc<Self>, max: u32) -> Option<Lease> {
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        self.streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Lease(self.clone()))
    }
}

impl Pool {
    pub fn new(settings: PoolSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                keys: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
            }),
        }
    }

    /// Opens a CONNECT stream to `destination` through the peer of `key`, sending `early`
    /// (the application's first bytes, possibly none) right behind the request instead of
    /// after the answer: the peer can deliver them as soon as it has connected. A pooled
    /// connection that turns out to be dead is discarded and the open retried once on a
    /// fresh one (with `early` again), so a peer restart costs the application nothing.
    pub async fn open(
        &self,
        key: &PoolKey,
        tls: &Arc<ClientConfig>,
        destination: SocketAddr,
        early: Bytes,
    ) -> Result<HboneStream, PoolError> {
        let mut retried = false;
        loop {
            let (lease, fresh) = self.lease(key, tls).await?;
            let connection = lease.0.clone();
            match connect_stream(&connection.sender, key.peer, destination, early.clone()).await {
                Ok((send, recv)) => {
                    return Ok(HboneStream {
                        send,
                        recv,
                        connection: connection.id,
                        peer_identity: connection.peer_identity.clone(),
                        _lease: lease,
                    });
                }
                Err(StreamFailure::ConnectionGone(reason)) => {
                    connection.closed.store(true, Ordering::Release);
                    let reason = connection.tls_failure.get().map_or(reason, tls::explain);
                    // A fresh connection failing here is the server refusing our certificate:
                    // in TLS 1.3 its verdict arrives after the client side has finished.
                    if fresh {
                        return Err(PoolError::Handshake {
                            peer: key.peer,
                            reason,
                        });
                    }
                    if retried {
                        return Err(PoolError::Stream {
                            peer: key.peer,
                            reason,
                        });
                    }
                    debug!(peer = %key.peer, connection = connection.id, %reason, "pooled connection is gone; retrying on a new one");
                    retried = true;
                }
                Err(StreamFailure::Refused(error)) => return Err(error),
            }
        }
    }

    /// Closes connections that carried no stream for the idle timeout; runs forever.
    pub async fn reap_idle(self) {
        let timeout = self.inner.settings.idle_timeout;
        let period = (timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
        loop {
            tokio::time::sleep(period).await;
            let mut keys = self.inner.keys.lock().expect("pool lock poisoned");
            for (key, state) in keys.iter_mut() {
                state.connections.retain(|c| {
                    let idle = c.streams.load(Ordering::Acquire) == 0
                        && c.idle_since.lock().expect("idle_since lock poisoned").elapsed() >= timeout;
                    if idle {
                        debug!(peer = %key.peer, workload = %key.workload, connection = c.id, "closing idle pooled connection");
                    }
                    !idle && !c.closed.load(Ordering::Acquire)
                });
            }
            keys.retain(|_, state| {
                !state.connections.is_empty() || Arc::strong_count(&state.dialing) > 1
            });
        }
    }

    /// Pooled connections per key, for logs and tests.
    pub fn connection_count(&self) -> usize {
        let keys = self.inner.keys.lock().expect("pool lock poisoned");
        keys.values()
            .map(|s| {
                s.connections
                    .iter()
                    .filter(|c| !c.closed.load(Ordering::Acquire))
                    .count()
            })
            .sum()
    }

    /// A lease on a connection with room, and whether that connection was dialled for it.
    async fn lease(
        &self,
        key: &PoolKey,
        tls: &Arc<ClientConfig>,
    ) -> Result<(Lease, bool), PoolError> {
        let max = self.inner.settings.max_streams_per_connection;
        let dialing = match self.lease_existing(key, max) {
            Ok(lease) => return Ok((lease, false)),
            Err(dialing) => dialing,
        };
        let _dialing = dialing.lock().await;
        // Someone may have dialled while we waited.
        if let Ok(lease) = self.lease_existing(key, max) {
            return Ok((lease, false));
        }
        let connection = self.dial(key, tls).await?;
        let lease = connection
            .try_lease(max)
            .expect("a fresh connection has room for a stream");
        let mut keys = self.inner.keys.lock().expect("pool lock poisoned");
        let state = keys.entry(key.clone()).or_default();
        state.connections.push(connection);
        let count = state.connections.len();
        drop(keys);
        debug!(peer = %key.peer, workload = %key.workload, connection = lease.0.id, connections_for_key = count, "new pooled connection");
        Ok((lease, true))
    }

    /// A lease on an open connection with room, or the key's dial lock.
    fn lease_existing(
        &self,
        key: &PoolKey,
        max: u32,
    ) -> Result<Lease, Arc<tokio::sync::Mutex<()>>> {
        let mut keys = self.inner.keys.lock().expect("pool lock poisoned");
        let state = keys.entry(key.clone()).or_default();
        state
            .connections
            .retain(|c| !c.closed.load(Ordering::Acquire));
        state
            .connections
            .iter()
            .find_map(|c| c.try_lease(max))
            .ok_or_else(|| state.dialing.clone())
    }

    async fn dial(
        &self,
        key: &PoolKey,
        tls: &Arc<ClientConfig>,
    ) -> Result<Arc<Connection>, PoolError> {
        let settings = self.inner.settings;
        let peer = key.peer;
        let handshake = async {
            let tcp = TcpStream::connect(peer)
                .await
                .map_err(|source| PoolError::Connect { peer, source })?;
            configure_peer_socket(&tcp);
            let server_name = ServerName::IpAddress(peer.ip().into());
            let mut tls_stream = TlsConnector::from(tls.clone())
                .connect(server_name, tcp)
                .await
                .map_err(|e| PoolError::Handshake {
                    peer,
                    reason: handshake_reason(&e),
                })?;
            let peer_identity = tls::peer_identity(tls_stream.get_ref().1, Purpose::ServerAuth);
            hbone::batch_tls_writes(tls_stream.get_mut().1);
            // In TLS 1.3 the client finishes before the server has judged its certificate; a
            // refusal arrives later, inside h2, which keeps only its text: record it.
            let (stream, tls_failure) = RecordTlsError::new(tls_stream);
            let (sender, connection) = hbone::client_builder(settings.max_streams_per_connection)
                .handshake::<_, Bytes>(stream)
                .await
                .map_err(|e| PoolError::Handshake {
                    peer,
                    reason: handshake_reason(&e),
                })?;
            Ok::<_, PoolError>((sender, connection, peer_identity, tls_failure))
        };
        let (sender, driver, peer_identity, tls_failure) =
            tokio::time::timeout(settings.connect_timeout, handshake)
                .await
                .map_err(|_| PoolError::Timeout {
                    peer,
                    timeout: settings.connect_timeout,
                })??;
        let connection = Arc::new(Connection {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            sender,
            streams: AtomicU32::new(0),
            closed: AtomicBool::new(false),
            idle_since: Mutex::new(Instant::now()),
            peer_identity,
            tls_failure,
        });
        let watched = Arc::downgrade(&connection);
        let id = connection.id;
        tokio::spawn(async move {
            let result = driver.await;
            if let Some(connection) = watched.upgrade() {
                connection.closed.store(true, Ordering::Release);
            }
            match result {
                Ok(()) => debug!(%peer, connection = id, "pooled connection closed"),
                Err(e) => {
                    info!(%peer, connection = id, reason = %handshake_reason(&e), "pooled connection to peer broke")
                }
            }
        });
        Ok(connection)
    }
}

enum StreamFailure {
    /// The connection died under us (GOAWAY, I/O error): worth one retry.
    ConnectionGone(String),
    Refused(PoolError),
}

async fn connect_stream(
    sender: &SendRequest<Bytes>,
    peer: SocketAddr,
    destination: SocketAddr,
    early: Bytes,
) -> Result<(SendStream<Bytes>, RecvStream), StreamFailure> {
    let gone = |e: h2::Error| {
        if e.is_io() || e.is_go_away() {
            StreamFailure::ConnectionGone(handshake_reason(&e))
        } else {
            StreamFailure::Refused(PoolError::Stream {
                peer,
                reason: handshake_reason(&e),
            })
        }
    };
    let mut sender = sender.clone().ready().await.map_err(gone)?;
    let (response, mut send) = sender
        .send_request(hbone::connect_request(destination), false)
        .map_err(gone)?;
    if !early.is_empty() {
        // Small (one read) and far inside the stream's window: h2 sends it with the request.
        send.send_data(early, false).map_err(gone)?;
    }
    let response = response.await.map_err(gone)?;
    if response.status() != http::StatusCode::OK {
        return Err(StreamFailure::Refused(PoolError::Refused {
            peer,
            destination,
            status: response.status(),
        }));
    }
    Ok((send, response.into_body()))
}

/// TCP settings for connections to peers: no Nagle delay, and dead-peer detection that does
/// not wait for the kernel's two-hour keepalive default.
fn configure_peer_socket(tcp: &TcpStream) {
    let _ = tcp.set_nodelay(true);
    let socket = socket2::SockRef::from(tcp);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5))
        .with_retries(3);
    let _ = socket.set_tcp_keepalive(&keepalive);
    let _ = socket.set_tcp_user_timeout(Some(Duration::from_secs(30)));
}

/// The TLS reason if there is one in the chain (h2 keeps its I/O error apart from the
/// source chain), else the error itself.
fn handshake_reason(error: &(dyn std::error::Error + 'static)) -> String {
    let io = error
        .downcast_ref::<h2::Error>()
        .and_then(h2::Error::get_io);
    let tls_error = tls::rustls_error(error).or_else(|| io.and_then(|io| tls::rustls_error(io)));
    if let Some(tls_error) = tls_error {
        return tls::explain(tls_error);
    }
    match io.map(io::Error::kind) {
        // The server sent its alert and closed while we were still writing: we never got to
        // read the alert, but the meaning is the same.
        Some(io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof) => {
            "the peer closed the connection during the handshake: it refused our certificate or our TLS \
             parameters (its log says which)"
                .into()
        }
        _ => error.to_string(),
    }
}
