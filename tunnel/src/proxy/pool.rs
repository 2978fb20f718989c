//! Pooled HBONE connections. Key: (source workload, peer daemon address, the identity the
//! peer must present); never two of our identities on one TLS connection, and never a call
//! on a connection verified for another peer identity than the one it expects. A key holds one or more connections: a new one is
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
    net::SocketAddr,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;

use crate::proxy::budget::{BufferBudget, Chunk};
use h2::{RecvStream, SendStream, client::SendRequest};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;
use tracing::debug;

use super::hbone::{self, TlsParams};
use crate::{
    credentials::{ClientTls, Snapshot},
    identity::SpiffeId,
    telemetry::{AuthFailure, Direction, Telemetry, metrics::Label},
    tls::{self, Phase},
};

mod dial;
mod error;
mod stream;

pub use error::PoolError;
use stream::{StreamFailure, connect_stream};

/// A pool key: who calls, which daemon carries it, and whom that daemon must be.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub workload: Arc<str>,
    pub peer: SocketAddr,
    /// A registered pod's network, where its connections are made (so its address is
    /// their source); `None`: the daemon's own namespace.
    pub via: Option<crate::netns::PodNetwork>,
    /// The identity the peer must present exactly (a `[[peer]]` pin, or the pod the
    /// destination is known to be); `None`: the configured peer pattern. Part of the key,
    /// so a call never rides a connection that was verified for another identity: when the
    /// pod at an address changes (its IP reused, its service account changed), the next
    /// call dials and checks the new one.
    pub identity: Option<SpiffeId>,
}

/// How long a slow dial failure (timeout, unreachable host) is given to new callers
/// without dialling again.
pub const NEGATIVE_CACHE: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct PoolSettings {
    pub max_streams_per_connection: u32,
    pub idle_timeout: Duration,
    /// Bounds a dial (TCP, TLS, HTTP/2) and the answer to each CONNECT.
    pub connect_timeout: Duration,
    /// PING period on pooled connections, and how long a PING may go unanswered.
    pub keepalive: Duration,
    /// Charged for each connection's receive window.
    pub budget: Arc<BufferBudget>,
}

/// An open CONNECT stream, counted against its connection until dropped.
pub struct HboneStream {
    pub send: SendStream<Chunk>,
    pub recv: RecvStream,
    /// The pooled connection carrying it (for logs).
    pub connection: u64,
    /// The peer daemon's SPIFFE ID, as text (made once per pooled connection).
    pub peer_identity: Option<Label>,
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
    /// Shared with its siblings, so a connection's number names one connection in the
    /// logs whichever runtime's pool holds it.
    next_id: Arc<AtomicU64>,
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
    sender: SendRequest<Chunk>,
    streams: AtomicU32,
    closed: AtomicBool,
    idle_since: Mutex<Instant>,
    peer_identity: Option<SpiffeId>,
    /// `peer_identity` as text, for each stream's labels and lines.
    peer_principal: Option<Label>,
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
        Self::numbered_from(settings, snapshots, telemetry, Arc::new(AtomicU64::new(1)))
    }

    fn numbered_from(
        settings: PoolSettings,
        snapshots: Option<watch::Receiver<Arc<Snapshot>>>,
        telemetry: Arc<Telemetry>,
        next_id: Arc<AtomicU64>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                snapshots,
                keys: Mutex::new(HashMap::new()),
                next_id,
                telemetry,
            }),
        }
    }

    /// An empty pool like this one (same settings, material and telemetry), for a
    /// data-plane runtime of its own: its connections are driven on the runtime that dials
    /// them, so each runtime keeps its own.
    pub fn sibling(&self) -> Self {
        Self::numbered_from(
            self.inner.settings.clone(),
            self.inner.snapshots.clone(),
            self.inner.telemetry.clone(),
            self.inner.next_id.clone(),
        )
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
    /// nothing. `service`: the Service the caller addressed, told to the peer for its logs.
    pub async fn open(
        &self,
        key: &PoolKey,
        tls: &Arc<ClientTls>,
        destination: SocketAddr,
        early: Bytes,
        service: Option<&str>,
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
                    hbone::Connect {
                        destination,
                        forwarded_for: key
                            .via
                            .as_ref()
                            .and_then(|pod| pod.address_like(destination.ip())),
                        service,
                    },
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
                        peer_identity: connection.peer_principal.clone(),
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
                Err(StreamFailure::ConnectionGone { reason, cleanly }) => {
                    connection.closed.store(true, Ordering::Release);
                    let tls_failure = connection.tls_failure.get();
                    let kind = tls_failure.map_or(tls::RefusalKind::Other, tls::RefusalKind::of);
                    let reason = tls_failure.map_or(reason, tls::explain);
                    // A fresh connection failing here is the server refusing our certificate
                    // (in TLS 1.3 its verdict arrives after the client side has finished),
                    // unless it said goodbye without error: it began to drain, or its
                    // certificate was replaced, as we dialled. That one is retried.
                    if fresh && (tls_failure.is_some() || !cleanly) {
                        if !connection.refusal_reported.swap(true, Ordering::AcqRel) {
                            self.report_refusal(key, connection.peer_identity.as_ref(), &reason);
                        }
                        return Err(PoolError::Handshake {
                            peer: key.peer,
                            reason,
                            kind,
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
    /// Lets go of every connection of `workload` (a removed pod): they take no new streams,
    /// and each closes when its last stream ends, instead of at the next reap.
    pub fn forget(&self, workload: &str) {
        let mut keys = self.inner.keys.lock().expect("pool lock poisoned");
        keys.retain(|key, state| {
            let theirs = &*key.workload == workload;
            if theirs {
                for connection in &state.connections {
                    connection.closed.store(true, Ordering::Release);
                }
            }
            !theirs
        });
    }

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
}
