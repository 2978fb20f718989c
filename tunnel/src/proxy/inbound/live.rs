//! The inbound streams being carried, with what their policy decision was about, so a policy
//! reload can judge them again: a stream the new policy denies is closed (reset both ways)
//! and logged with the reason.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::Notify;
use tracing::info;

use crate::{
    identity::SpiffeId,
    policy::{Decision, Policy, Request},
};

#[derive(Default)]
pub struct LiveStreams {
    next_id: AtomicU64,
    streams: Mutex<HashMap<u64, Entry>>,
}

struct Entry {
    caller: Arc<SpiffeId>,
    source: IpAddr,
    workload: Arc<str>,
    port: u16,
    close: Arc<Notify>,
}

/// A stream's place in the registry; leaving it (drop) removes the stream.
pub struct Registration {
    owner: Arc<LiveStreams>,
    id: u64,
    /// Notified when a reload denies the stream.
    pub closed: Arc<Notify>,
}

impl LiveStreams {
    pub fn register(
        self: &Arc<Self>,
        caller: Arc<SpiffeId>,
        source: IpAddr,
        workload: Arc<str>,
        port: u16,
    ) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        self.streams
            .lock()
            .expect("live streams lock poisoned")
            .insert(
                id,
                Entry {
                    caller,
                    source,
                    workload,
                    port,
                    close: close.clone(),
                },
            );
        Registration {
            owner: self.clone(),
            id,
            closed: close,
        }
    }

    /// Judges every live stream by `policy` and closes those it denies; returns how many.
    pub fn enforce(&self, policy: &Policy) -> usize {
        let streams = self.streams.lock().expect("live streams lock poisoned");
        let mut closed = 0;
        for entry in streams.values() {
            let decision = policy.evaluate(&Request {
                caller: &entry.caller,
                source: entry.source,
                workload: &entry.workload,
                port: entry.port,
            });
            if let Decision::Deny { because, .. } = decision {
                info!(
                    caller = %entry.caller, source = %entry.source, workload = %entry.workload,
                    port = entry.port, reason = %because,
                    "closing a live connection: the reloaded policy denies it"
                );
                // notify_one stores a permit, so a stream between polls still sees it.
                entry.close.notify_one();
                closed += 1;
            }
        }
        closed
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.owner
            .streams
            .lock()
            .expect("live streams lock poisoned")
            .remove(&self.id);
    }
}
