//! Caps on what an outsider can make the daemon hold, as types: a slot is taken before the
//! resource and frees itself when dropped, so no exit path can leak one. And refusal
//! accounting: every refusal is counted, but logged at most once per interval per kind, so
//! a flood cannot drown the log (or fill the disk) with one line per attempt.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use crate::{
    logging::{LogNow, LogWindows},
    telemetry::FailReason,
};

mod pre_tls;

pub use pre_tls::{PreTls, PreTlsSlot};

/// At most `limit` holders per key (source address, peer identity...).
pub struct KeyedLimit<K: Eq + Hash + Clone> {
    limit: usize,
    holders: Mutex<HashMap<K, usize>>,
}

/// One holder's place under a [`KeyedLimit`]; released on drop.
pub struct KeyedSlot<K: Eq + Hash + Clone> {
    owner: Arc<KeyedLimit<K>>,
    key: K,
}

impl<K: Eq + Hash + Clone> KeyedLimit<K> {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            holders: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `key`, or `None` when `key` already holds `limit`.
    pub fn try_acquire(self: &Arc<Self>, key: K) -> Option<KeyedSlot<K>> {
        let mut holders = self.holders.lock().expect("keyed limit lock poisoned");
        let held = holders.entry(key.clone()).or_insert(0);
        if *held >= self.limit {
            return None;
        }
        *held += 1;
        Some(KeyedSlot {
            owner: self.clone(),
            key,
        })
    }

    /// How many slots `key` holds now.
    pub fn held(&self, key: &K) -> usize {
        let holders = self.holders.lock().expect("keyed limit lock poisoned");
        holders.get(key).copied().unwrap_or(0)
    }
}

impl<K: Eq + Hash + Clone> Drop for KeyedSlot<K> {
    fn drop(&mut self) {
        let mut holders = self
            .owner
            .holders
            .lock()
            .expect("keyed limit lock poisoned");
        if let Some(held) = holders.get_mut(&self.key) {
            *held -= 1;
            if *held == 0 {
                // Keys come from outsiders (addresses): keep only those holding something.
                holders.remove(&self.key);
            }
        }
    }
}

/// Why the inbound side turned a connection away before serving it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Too many connections (from everyone) have not finished their handshakes.
    Unauthenticated,
    /// Too many connections from one source address have not finished their handshakes.
    UnauthenticatedFromAddress,
    /// Not TLS on the tunnel port.
    NotTls,
    /// No (complete) handshake within the handshake timeout.
    HandshakeTimeout,
    /// The TLS handshake failed (certificate refused, protocol error...).
    HandshakeFailed,
    /// Its pre-TLS slot was taken by a newcomer: it was the oldest of the busiest prefix.
    Evicted,
    /// The TLS handshake completed, but HTTP/2 did not: the peer closed, or its preface was
    /// not HTTP/2 or did not come within the handshake timeout.
    NoStream,
    /// One caller identity from one address already holds its share of connections.
    ConnectionsPerPeer,
    /// Plaintext from another host to a workload port in strict mode.
    Plaintext,
}

impl Refusal {
    const ALL: [Self; 9] = [
        Self::Unauthenticated,
        Self::UnauthenticatedFromAddress,
        Self::Evicted,
        Self::NotTls,
        Self::HandshakeTimeout,
        Self::HandshakeFailed,
        Self::NoStream,
        Self::ConnectionsPerPeer,
        Self::Plaintext,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => "too_many_unauthenticated",
            Self::UnauthenticatedFromAddress => "too_many_unauthenticated_from_address",
            Self::Evicted => "evicted_unauthenticated",
            Self::NotTls => "not_tls",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::HandshakeFailed => "handshake_failed",
            Self::NoStream => "no_stream",
            Self::ConnectionsPerPeer => "too_many_connections_for_peer",
            Self::Plaintext => "plaintext",
        }
    }

    /// The `reason` label of `tunnel_tcp_connections_failed_total` (a refused TLS handshake
    /// is counted by the kind of its error, where it is refused).
    pub fn fail_reason(self) -> FailReason {
        match self {
            Self::Unauthenticated
            | Self::UnauthenticatedFromAddress
            | Self::Evicted
            | Self::ConnectionsPerPeer => FailReason::limit,
            Self::NotTls => FailReason::tls_handshake_failed,
            Self::HandshakeTimeout => FailReason::timeout,
            Self::HandshakeFailed => FailReason::tls_handshake_failed,
            Self::NoStream => FailReason::no_stream,
            Self::Plaintext => FailReason::plaintext_refused,
        }
    }

    fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|r| *r == self)
            .expect("ALL lists every refusal")
    }
}

/// Counts refusals by kind, and decides which get a log line: identical ones (same kind,
/// same reason) at most once per interval, with the count of those left out, so a flood
/// cannot drown the log while distinct problems still show at once.
pub struct Refusals {
    totals: [AtomicU64; Refusal::ALL.len()],
    windows: LogWindows<Refusal>,
}

impl Refusals {
    /// At most one line per kind and reason per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            totals: Default::default(),
            windows: LogWindows::new(interval),
        }
    }

    /// Counts one refusal; `Some` when it should be logged (with how many were not).
    pub fn record(&self, refusal: Refusal, reason: &str) -> Option<LogNow> {
        self.totals[refusal.index()].fetch_add(1, Ordering::Relaxed);
        self.windows.record(refusal, reason)
    }

    /// Refusals of this kind so far.
    pub fn count(&self, refusal: Refusal) -> u64 {
        self.totals[refusal.index()].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyed_limit_refuses_past_its_limit_and_frees_on_drop() {
        let limit = KeyedLimit::new(2);
        let a1 = limit.try_acquire("a").unwrap();
        let _a2 = limit.try_acquire("a").unwrap();
        assert!(limit.try_acquire("a").is_none(), "third holder of a");
        let _b = limit.try_acquire("b").expect("keys are counted apart");
        drop(a1);
        assert_eq!(limit.held(&"a"), 1);
        assert!(limit.try_acquire("a").is_some());
    }

    #[test]
    fn keys_holding_nothing_are_forgotten() {
        let limit = KeyedLimit::new(1);
        for i in 0..1000 {
            drop(limit.try_acquire(i).unwrap());
        }
        assert!(limit.holders.lock().unwrap().is_empty());
    }

    #[test]
    fn refusals_are_all_counted_but_logged_once_per_interval() {
        let refusals = Refusals::new(Duration::from_secs(3600));
        assert_eq!(
            refusals.record(Refusal::NotTls, ""),
            Some(LogNow { suppressed: 0 })
        );
        for _ in 0..999 {
            assert_eq!(refusals.record(Refusal::NotTls, ""), None);
        }
        assert_eq!(
            refusals.record(Refusal::HandshakeFailed, "expired"),
            Some(LogNow { suppressed: 0 }),
            "kinds are limited apart"
        );
        assert_eq!(
            refusals.record(Refusal::HandshakeFailed, "no clientAuth"),
            Some(LogNow { suppressed: 0 }),
            "and distinct reasons too"
        );
        assert_eq!(refusals.record(Refusal::HandshakeFailed, "expired"), None);
        assert_eq!(refusals.count(Refusal::NotTls), 1000);
    }

    #[test]
    fn the_next_line_after_the_interval_says_how_many_were_not_logged() {
        let refusals = Refusals::new(Duration::ZERO);
        assert!(refusals.record(Refusal::NotTls, "").is_some());
        let refusals = Refusals::new(Duration::from_millis(20));
        refusals.record(Refusal::NotTls, "");
        refusals.record(Refusal::NotTls, "");
        refusals.record(Refusal::NotTls, "");
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(
            refusals.record(Refusal::NotTls, ""),
            Some(LogNow { suppressed: 2 })
        );
    }
}
