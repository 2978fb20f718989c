//! The tunnelled connections open right now, for the admin API's `/connections`: who is on
//! each end, how many bytes each way so far, and its age. A connection registers when its
//! tunnel opens and is gone when its [`Tracked`] handle drops; the byte counters are plain
//! atomics the copy loop adds to (no lock per read).

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Instant, SystemTime},
};

use serde::Serialize;
use slab::Slab;

use super::metrics::Label;

/// What is known of a connection when its tunnel opens.
#[derive(Clone, Debug, Serialize)]
pub struct ConnectionInfo {
    /// `outbound` (a local workload calling out) or `inbound` (a peer's caller in).
    pub direction: &'static str,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub src_identity: Option<Label>,
    pub dst_identity: Option<Label>,
    /// The local workload: the caller (outbound) or the callee (inbound).
    pub workload: Label,
    /// The other daemon's tunnel address.
    pub peer: SocketAddr,
}

/// One open connection: its info and what it has carried.
pub struct Live {
    /// Unique for the daemon's life (a slab slot is reused; this is not).
    id: u64,
    pub info: ConnectionInfo,
    /// Towards the peer (outbound: what the workload sent; inbound: what it answered).
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    opened: Instant,
}

/// A connection as `/connections` lists it.
#[derive(Clone, Debug, Serialize)]
pub struct ConnectionView {
    pub id: u64,
    #[serde(flatten)]
    pub info: ConnectionInfo,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub age_seconds: f64,
    /// Unix seconds.
    pub opened_at: u64,
}

/// The open connections in a slab: a connection takes a free slot and gives it back, with
/// no hashing and no allocation once the slab has grown to the most open at once.
#[derive(Default)]
pub struct Connections {
    open: Mutex<Slab<Arc<Live>>>,
    next_id: AtomicU64,
}

/// Keeps a connection listed; dropping it removes the entry.
pub struct Tracked {
    live: Arc<Live>,
    slot: usize,
    registry: Weak<Connections>,
}

impl Connections {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Lists `info` until the returned handle drops.
    pub fn open(self: &Arc<Self>, info: ConnectionInfo) -> Tracked {
        let live = Arc::new(Live {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            info,
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            opened: Instant::now(),
        });
        let slot = self
            .open
            .lock()
            .expect("connections lock poisoned")
            .insert(live.clone());
        Tracked {
            live,
            slot,
            registry: Arc::downgrade(self),
        }
    }

    /// Every open connection, oldest first.
    pub fn list(&self) -> Vec<ConnectionView> {
        let now = SystemTime::now();
        let open = self.open.lock().expect("connections lock poisoned");
        let mut views: Vec<ConnectionView> = open
            .iter()
            .map(|(_, live)| {
                let age = live.opened.elapsed();
                ConnectionView {
                    id: live.id,
                    info: live.info.clone(),
                    bytes_sent: live.bytes_sent.load(Ordering::Relaxed),
                    bytes_received: live.bytes_received.load(Ordering::Relaxed),
                    age_seconds: age.as_secs_f64(),
                    // From the monotonic age (one clock read per connection, not two).
                    opened_at: now
                        .checked_sub(age)
                        .and_then(|at| at.duration_since(SystemTime::UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_secs()),
                }
            })
            .collect();
        views.sort_by_key(|v| v.id);
        views
    }

    pub fn len(&self) -> usize {
        self.open.lock().expect("connections lock poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Tracked {
    pub fn live(&self) -> &Live {
        &self.live
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(registry) = self.registry.upgrade() {
            registry
                .open
                .lock()
                .expect("connections lock poisoned")
                .try_remove(self.slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_listed_with_its_bytes_until_its_handle_drops() {
        let connections = Connections::new();
        let info = ConnectionInfo {
            direction: "outbound",
            src: "127.0.0.1:40000".parse().unwrap(),
            dst: "10.0.0.2:8080".parse().unwrap(),
            src_identity: Some("spiffe://example.org/frontend".into()),
            dst_identity: Some("spiffe://example.org/node/b".into()),
            workload: "frontend".into(),
            peer: "10.0.0.2:15008".parse().unwrap(),
        };
        let first = connections.open(info.clone());
        let second = connections.open(info);
        first.live().bytes_sent.fetch_add(100, Ordering::Relaxed);
        second.live().bytes_received.fetch_add(7, Ordering::Relaxed);
        let listed = connections.list();
        assert_eq!(listed.len(), 2);
        assert_eq!((listed[0].bytes_sent, listed[1].bytes_received), (100, 7));
        let json = serde_json::to_string(&listed[0]).unwrap();
        assert!(json.contains("\"direction\":\"outbound\""), "{json}");
        drop(first);
        assert_eq!(connections.len(), 1);
        drop(second);
        assert!(connections.is_empty());
    }
}
