//! Pooled HBONE connections. Key: (source workload, peer daemon address); never two
//! identities on one TLS connection. A key holds one or more connections: a new one is
//! dialled when all are at the stream limit.
//!
//! Dials for a key are shared: one dial is in flight at a time, every caller that needs a
//! connection waits for it and gets its result, and a failure is remembered for
//! [`NEGATIVE_CACHE`] when it was slow to come (a timeout), so a burst of connections to an unreachable peer fails together
//! within the connect timeout instead of one after another. A connection that dies is
//! dropped from the pool as soon as its driver task sees it end; one that stops answering
//! PINGs is closed; one that idles past the timeout is closed by [`Pool::reap_idle`]; a
//! stream that gets no answer within the connect timeout marks its connection dead and is
//! retried once on a fresh one.
//!
//! Certificates: a connection made with an older generation of TLS material than a caller
//! brings takes no new streams (the caller dials a new one) and closes once its streams end;
//! a connection whose certificate (ours or the peer's) expires, or whose peer a reloaded
//! trust no longer accepts, is closed at once (`credentials::lifetime`).

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

use tokio::sync::watch;

use bytes::Bytes;
use h2::{RecvStream, SendStream, client::SendRequest};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tracing::{debug, info};

use prometheus_client::metrics::gauge::Gauge;

use super::{
    hbone::{self, TlsParams},
    record_tls_error::RecordTlsError,
};
use crate::{
    credentials::{
        ClientTls, Snapshot,
        lifetime::{Authenticated, Ending},
    },
    identity::{Purpose, SpiffeId},
    telemetry::{
        AuthFailure, Direction, FailReason, Telemetry,
        metrics::{PeerLabels, principal},
    },
    tls::{self, Phase},
};

/// A pool key: who calls, and which daemon carries it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub workload: Arc<str>,
    pub peer: SocketAddr,
}

/// How long a slow dial failure (timeout, unreachable host) is given to new callers
/// without dialling again.
pub const NEGATIVE_CACHE: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug)]
pub struct PoolSettings {
    pub max_streams_per_connection: u32,
    pub idle_timeout: Duration,
    /// Bounds a dial (TCP, TLS, HTTP/2) and the answer to each CONNECT.
    pub connect_timeout: Duration,
    /// PING period on pooled connections, and how long a PING may go unanswered.
    pub keepalive: Duration,
}

/// Cloned for every caller that waited on the same dial.
#[derive(Clone, Debug, thiserror::Error)]
pub enum PoolError {
    #[error("cannot reach the tunnel port {peer}")]
    Connect {
        peer: SocketAddr,
        source: Arc<io::Error>,
    },
    #[error(
        "connecting to {peer} timed out after {timeout:?}; is the peer up, and does a firewall let the tunnel port through?"
    )]
    Timeout { peer: SocketAddr, timeout: Duration },
    #[error("mTLS handshake with {peer} failed: {reason}")]
    Handshake { peer: SocketAddr, reason: String },
    #[error("refused by {}: {}", refuser(.peer, .peer_identity.as_ref()), refusal_text(.destination, .status, .reason.as_ref()))]
    Refused {
        peer: SocketAddr,
        peer_identity: Option<SpiffeId>,
        destination: SocketAddr,
        status: http::StatusCode,
        /// The peer's code and sentence, when it gave them (a tunnel daemon does).
        reason: Option<(String, String)>,
    },
    #[error("the tunnel to {peer} broke while opening a stream: {reason}")]
    Stream { peer: SocketAddr, reason: String },
    #[error("the peer {peer} did not answer CONNECT {destination} within {timeout:?}")]
    Unanswered {
        peer: SocketAddr,
        destination: SocketAddr,
        timeout: Duration,
    },
    #[error("the dial to {peer} was abandoned")]
    Abandoned { peer: SocketAddr },
}

fn refuser(peer: &SocketAddr, identity: Option<&SpiffeId>) -> String {
    match identity {
        Some(id) => format!("{id} ({peer})"),
        None => peer.to_string(),
    }
}

fn refusal_text(
    destination: &SocketAddr,
    status: &http::StatusCode,
    reason: Option<&(String, String)>,
) -> String {
    match reason {
        Some((code, why)) => format!("{why} [{code}, HTTP {}]", status.as_u16()),
        None => format!("CONNECT {destination} answered HTTP {status}"),
    }
}

impl PoolError {
    /// The `reason` label of `tunnel_tcp_connections_failed_total`.
    pub fn fail_reason(&self) -> FailReason {
        match self {
            Self::Connect { .. } => FailReason::peer_unreachable,
            Self::Timeout { .. } | Self::Unanswered { .. } => FailReason::timeout,
            Self::Handshake { reason, .. } => FailReason::of_tls(reason),
            Self::Refused { reason, status, .. } => {
                match reason.as_ref().map(|(code, _)| code.as_str()) {
                    Some(code) => FailReason::of_refusal_code(code),
                    None if *status == http::StatusCode::FORBIDDEN => FailReason::policy_denied,
                    None => FailReason::upstream_refused,
                }
            }
            Self::Stream { .. } | Self::Abandoned { .. } => FailReason::other,
        }
    }

    /// A failure that took long to learn (a timeout, an unreachable host): the ones worth
    /// remembering, since each new attempt would cost as long again. A quick refusal (the
    /// peer daemon restarting) is retried at once, so recovery is not delayed.
    fn is_slow(&self) -> bool {
        match self {
            Self::Timeout { .. } => true,
            Self::Connect { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable
            ),
            _ => false,
        }
    }
}

/// An open CONNECT stream, counted against its connection until dropped.
pub struct HboneStream {
    pub send: SendStream<Bytes>,
    pub recv: RecvStream,
    /// The pooled connection carrying it (for logs).
    pub connection: u64,
    pub peer_identity: Option<SpiffeId>,
    /// What its TLS connection negotiated.
    pub tls: TlsParams,
    /// Why its pooled connection was closed under it, once it was (a certificate expired,
    /// the peer broke off...), for the access log.
    pub connection_ended: Arc<OnceLock<String>>,
    _lease: Lease,
}

#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    settings: PoolSettings,
    /// The material in force, followed by every connection (none: tools and tests).
    snapshots: Option<watch::Receiver<Arc<Snapshot>>>,
    keys: Mutex<HashMap<PoolKey, KeyState>>,
    next_id: AtomicU64,
    telemetry: Arc<Telemetry>,
}

#[derive(Default)]
struct KeyState {
    connections: Vec<Arc<Connection>>,
    /// The dial in flight, whose outcome every caller that found no room waits for.
    dial: Option<watch::Receiver<Option<DialOutcome>>>,
    /// The last dial's failure and when it happened (see [`NEGATIVE_CACHE`]).
    failed: Option<(Instant, PoolError)>,
}

/// What waiters learn of a dial: the connection is in the pool, or why there is none.
type DialOutcome = Result<(), PoolError>;

struct Connection {
    id: u64,
    /// The generation of TLS material it was made with.
    generation: u64,
    sender: SendRequest<Bytes>,
    streams: AtomicU32,
    closed: AtomicBool,
    idle_since: Mutex<Instant>,
    peer_identity: Option<SpiffeId>,
    /// The TLS error that broke the connection, if one did (h2 reports only its text).
    tls_failure: Arc<OnceLock<rustls::Error>>,
    tls: TlsParams,
    /// Why the connection was closed, once it was.
    ended: Arc<OnceLock<String>>,
    /// Streams open on it, in `tunnel_pool_streams` (its peer's series).
    streams_gauge: Gauge,
    /// Whether a refusal of our certificate on it was reported (once per connection).
    refusal_reported: AtomicBool,
}

/// One stream's claim on a connection.
struct Lease(Arc<Connection>);

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.streams_gauge.dec();
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
        // The peer may allow fewer streams than we would put on a connection (its
        // SETTINGS_MAX_CONCURRENT_STREAMS). h2 holds a request past that back until a stream
        // ends, where it would wait out the connect timeout and be taken for silence.
        let peer_max = u32::try_from(self.sender.current_max_send_streams()).unwrap_or(u32::MAX);
        let max = max.min(peer_max);
        self.streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| {
                self.streams_gauge.inc();
                Lease(self.clone())
            })
    }
}

impl Pool {
    pub fn new(settings: PoolSettings) -> Self {
        Self::following(settings, None, Telemetry::detached())
    }

    /// A pool whose connections follow the material in force (expiry, replacement,
    /// revocation).
    pub fn following(
        settings: PoolSettings,
        snapshots: Option<watch::Receiver<Arc<Snapshot>>>,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                snapshots,
                keys: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                telemetry,
            }),
        }
    }

    /// Where the pool counts what it does.
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.inner.telemetry
    }

    /// Opens a CONNECT stream to `destination` through the peer of `key`, sending `early`
    /// (the application's first bytes, possibly none) right behind the request instead of
    /// after the answer: the peer can deliver them as soon as it has connected. A pooled
    /// connection that turns out to be dead (or silent) is discarded and the open retried
    /// once on a fresh one (with `early` again), so a peer restart costs the application
    /// nothing.
    pub async fn open(
        &self,
        key: &PoolKey,
        tls: &Arc<ClientTls>,
        destination: SocketAddr,
        early: Bytes,
    ) -> Result<HboneStream, PoolError> {
        let timeout = self.inner.settings.connect_timeout;
        let mut retried = false;
        loop {
            let (lease, fresh) = self.lease(key, tls).await?;
            let connection = lease.0.clone();
            let opened = tokio::time::timeout(
                timeout,
                connect_stream(
                    &connection.sender,
                    key.peer,
                    connection.peer_identity.as_ref(),
                    destination,
                    early.clone(),
                    if fresh {
                        Phase::Handshake
                    } else {
                        Phase::Established
                    },
                ),
            )
            .await
            .unwrap_or(Err(StreamFailure::Unanswered));
            let reason = match opened {
                Ok((send, recv)) => {
                    return Ok(HboneStream {
                        send,
                        recv,
                        connection: connection.id,
                        peer_identity: connection.peer_identity.clone(),
                        tls: connection.tls,
                        connection_ended: connection.ended.clone(),
                        _lease: lease,
                    });
                }
                Err(StreamFailure::Refused(error)) => return Err(error),
                Err(StreamFailure::Unanswered) => {
                    // Silent: the peer or the path is gone without TCP noticing yet. New
                    // streams go elsewhere; the ones on it end when its PINGs go unanswered.
                    connection.closed.store(true, Ordering::Release);
                    if fresh || retried {
                        return Err(PoolError::Unanswered {
                            peer: key.peer,
                            destination,
                            timeout,
                        });
                    }
                    format!("no answer to CONNECT within {timeout:?}")
                }
                Err(StreamFailure::ConnectionGone(reason)) => {
                    connection.closed.store(true, Ordering::Release);
                    let reason = connection.tls_failure.get().map_or(reason, tls::explain);
                    // A fresh connection failing here is the server refusing our certificate:
                    // in TLS 1.3 its verdict arrives after the client side has finished.
                    if fresh {
                        if !connection.refusal_reported.swap(true, Ordering::AcqRel) {
                            self.report_refusal(key, connection.peer_identity.as_ref(), &reason);
                        }
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
                    reason
                }
            };
            debug!(peer = %key.peer, connection = connection.id, %reason, "pooled connection is gone; retrying on a new one");
            retried = true;
        }
    }

    /// A refused handshake or identity, on the auth stream.
    fn report_refusal(&self, key: &PoolKey, peer_identity: Option<&SpiffeId>, reason: &str) {
        let mut failure = AuthFailure::now(Direction::Outbound, key.peer, reason);
        failure.peer_identity = peer_identity.map(ToString::to_string);
        failure.workload = Some(key.workload.to_string());
        self.inner.telemetry.auth_failures.record(failure);
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
                if state
                    .failed
                    .as_ref()
                    .is_some_and(|(at, _)| at.elapsed() >= NEGATIVE_CACHE)
                {
                    state.failed = None;
                }
            }
            keys.retain(|_, state| {
                !state.connections.is_empty() || state.dial.is_some() || state.failed.is_some()
            });
        }
    }

    /// A lease on a connection with room, and whether that connection was dialled while
    /// this caller waited (its first stream tells whether the peer accepted our certificate).
    async fn lease(&self, key: &PoolKey, tls: &Arc<ClientTls>) -> Result<(Lease, bool), PoolError> {
        let max = self.inner.settings.max_streams_per_connection;
        let mut waited = false;
        loop {
            let mut dial = {
                let mut keys = self.inner.keys.lock().expect("pool lock poisoned");
                let state = keys.entry(key.clone()).or_default();
                state.connections.retain(|c| {
                    if c.generation < tls.generation {
                        // Made with material since replaced: its streams finish on it, new
                        // ones go to a connection with the new certificate.
                        c.closed.store(true, Ordering::Release);
                        debug!(peer = %key.peer, workload = %key.workload, connection = c.id, "pooled connection made with replaced material: draining");
                    }
                    !c.closed.load(Ordering::Acquire)
                });
                if let Some(lease) = state.connections.iter().find_map(|c| c.try_lease(max)) {
                    return Ok((lease, waited));
                }
                match &state.failed {
                    Some((at, error)) if at.elapsed() < NEGATIVE_CACHE => return Err(error.clone()),
                    _ => state.failed = None,
                }
                match &state.dial {
                    Some(dial) => dial.clone(),
                    None => {
                        let dial = self.start_dial(key, tls);
                        state.dial = Some(dial.clone());
                        dial
                    }
                }
            };
            waited = true;
            let outcome = match dial.wait_for(Option::is_some).await {
                Ok(outcome) => outcome.clone().expect("waited for an outcome"),
                Err(_) => Err(PoolError::Abandoned { peer: key.peer }),
            };
            // Dialled: lease from it (or, if waiters already filled it, dial the next one).
            outcome?;
        }
    }

    /// Dials in a task of its own, so the dial survives the caller that started it giving
    /// up, and publishes the outcome to every waiter.
    fn start_dial(
        &self,
        key: &PoolKey,
        tls: &Arc<ClientTls>,
    ) -> watch::Receiver<Option<DialOutcome>> {
        let (outcome_tx, outcome_rx) = watch::channel(None);
        let (pool, key, tls) = (self.clone(), key.clone(), tls.clone());
        tokio::spawn(async move {
            let dialled = pool.dial(&key, &tls).await;
            let mut keys = pool.inner.keys.lock().expect("pool lock poisoned");
            let state = keys.entry(key.clone()).or_default();
            state.dial = None;
            let outcome = match dialled {
                Ok(connection) => {
                    debug!(peer = %key.peer, workload = %key.workload, connection = connection.id, connections_for_key = state.connections.len() + 1, "new pooled connection");
                    state.connections.push(connection);
                    Ok(())
                }
                Err(error) => {
                    if error.is_slow() {
                        state.failed = Some((Instant::now(), error.clone()));
                    }
                    Err(error)
                }
            };
            drop(keys);
            outcome_tx.send_replace(Some(outcome));
        });
        outcome_rx
    }

    async fn dial(
        &self,
        key: &PoolKey,
        tls: &Arc<ClientTls>,
    ) -> Result<Arc<Connection>, PoolError> {
        let settings = self.inner.settings;
        let peer = key.peer;
        let handshake = async {
            let tcp = TcpStream::connect(peer)
                .await
                .map_err(|source| PoolError::Connect {
                    peer,
                    source: Arc::new(source),
                })?;
            hbone::configure_tunnel_socket(&tcp);
            let tls_started = Instant::now();
            let server_name = ServerName::IpAddress(peer.ip().into());
            let mut tls_stream = TlsConnector::from(tls.config.clone())
                .connect(server_name, tcp)
                .await
                .map_err(|e| PoolError::Handshake {
                    peer,
                    reason: tls::describe_connection_error(&e, Phase::Handshake),
                })?;
            let peer_identity = tls::peer_identity(tls_stream.get_ref().1, Purpose::ServerAuth);
            let params = TlsParams::of(tls_stream.get_ref().1);
            let lifetime = match (
                &self.inner.snapshots,
                tls_stream.get_ref().1.peer_certificates(),
            ) {
                (Some(snapshots), Some(chain)) => tls.watch(snapshots).map(|watch| {
                    Authenticated::new(
                        watch,
                        chain.iter().map(|c| c.clone().into_owned()).collect(),
                    )
                }),
                _ => None,
            };
            hbone::batch_tls_writes(tls_stream.get_mut().1);
            // In TLS 1.3 the client finishes before the server has judged its certificate; a
            // refusal arrives later, inside h2, which keeps only its text: record it.
            let (stream, tls_failure) = RecordTlsError::new(tls_stream);
            let (sender, mut connection) =
                hbone::client_builder(settings.max_streams_per_connection)
                    .handshake::<_, Bytes>(stream)
                    .await
                    .map_err(|e| PoolError::Handshake {
                        peer,
                        reason: tls::describe_connection_error(&e, Phase::Handshake),
                    })?;
            // The peer's SETTINGS, its stream limit among them, come before its answer to a
            // PING. Until they are applied h2 knows no limit, and the callers waiting on this
            // dial would send streams past it, which the peer refuses (REFUSED_STREAM).
            let mut pings = connection
                .ping_pong()
                .expect("a new connection still has its PingPong");
            let failed = tokio::select! {
                pong = pings.ping(h2::Ping::opaque()) => match pong {
                    Ok(_) => None,
                    // The PING fails when the connection ends; the connection's own error says
                    // why (a GOAWAY's reason, a TLS alert), so ask it, briefly.
                    Err(ping_error) => Some(
                        match tokio::time::timeout(Duration::from_millis(100), &mut connection).await {
                            Ok(Err(ended)) => Some(ended),
                            _ => Some(ping_error),
                        },
                    ),
                },
                ended = &mut connection => Some(ended.err()),
            };
            if let Some(error) = failed {
                let reason = match (tls_failure.get(), error) {
                    (Some(tls_error), _) => tls::explain(tls_error),
                    (None, Some(e)) => tls::describe_connection_error(&e, Phase::Handshake),
                    (None, None) => {
                        "the peer closed the connection before answering HTTP/2 (its log says why)"
                            .into()
                    }
                };
                return Err(PoolError::Handshake { peer, reason });
            }
            Ok::<_, PoolError>((
                sender,
                connection,
                pings,
                peer_identity,
                tls_failure,
                lifetime,
                params,
                tls_started.elapsed(),
            ))
        };
        let dialled = match tokio::time::timeout(settings.connect_timeout, handshake).await {
            Ok(dialled) => dialled,
            Err(_) => Err(PoolError::Timeout {
                peer,
                timeout: settings.connect_timeout,
            }),
        };
        let metrics = &self.inner.telemetry.metrics.proxy;
        let (sender, mut driver, pings, peer_identity, tls_failure, mut lifetime, params, took) =
            match dialled {
                Ok(dialled) => dialled,
                Err(error) => {
                    if let PoolError::Handshake { reason, .. } = &error {
                        metrics.handshake(Direction::Outbound, None);
                        self.report_refusal(key, None, reason);
                    }
                    return Err(error);
                }
            };
        metrics.handshake(Direction::Outbound, Some(took));
        let peer_labels = PeerLabels {
            peer_principal: principal(peer_identity.as_ref()),
        };
        let pooled = OpenGauge::new(metrics.pool_connections.get_or_create(&peer_labels).clone());
        let connection = Arc::new(Connection {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            generation: tls.generation,
            sender,
            streams: AtomicU32::new(0),
            closed: AtomicBool::new(false),
            idle_since: Mutex::new(Instant::now()),
            peer_identity,
            tls_failure,
            tls: params,
            ended: Arc::default(),
            streams_gauge: metrics.pool_streams.get_or_create(&peer_labels).clone(),
            refusal_reported: AtomicBool::new(false),
        });
        let watched = Arc::downgrade(&connection);
        let id = connection.id;
        tokio::spawn(async move {
            let _pooled = pooled;
            let unanswered = hbone::unanswered_ping(pings, settings.keepalive);
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
            // Returning drops the connection (and its socket): its streams end with an error.
            let result = loop {
                tokio::select! {
                    result = &mut driver => break Some(result),
                    () = &mut unanswered => break None,
                    ending = next_ending(&mut lifetime) => match ending {
                        Ending::Replaced => {
                            mark_closed();
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
                    info!(%peer, connection = id, timeout = ?settings.keepalive, "pooled connection closed: the peer stopped answering PINGs");
                    mark_ended("the peer stopped answering PINGs".into());
                }
            }
        });
        Ok(connection)
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

enum StreamFailure {
    /// The connection died under us (GOAWAY, I/O error): worth one retry.
    ConnectionGone(String),
    /// No answer within the connect timeout: the connection is silent; worth one retry.
    Unanswered,
    Refused(PoolError),
}

/// Opens one stream; `phase` says how to word a connection that ends under it (on a fresh
/// connection that is the server refusing our certificate, see [`Pool::open`]).
async fn connect_stream(
    sender: &SendRequest<Bytes>,
    peer: SocketAddr,
    peer_identity: Option<&SpiffeId>,
    destination: SocketAddr,
    early: Bytes,
    phase: Phase,
) -> Result<(SendStream<Bytes>, RecvStream), StreamFailure> {
    let gone = |e: h2::Error| {
        let reason = tls::describe_connection_error(&e, phase);
        if e.is_io() || e.is_go_away() {
            StreamFailure::ConnectionGone(reason)
        } else {
            StreamFailure::Refused(PoolError::Stream { peer, reason })
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
            peer_identity: peer_identity.cloned(),
            destination,
            status: response.status(),
            reason: hbone::refusal_reason(&response),
        }));
    }
    Ok((send, response.into_body()))
}
