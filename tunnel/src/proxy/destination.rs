//! What the outbound side asks about a destination, and nothing else: the one interface
//! through which knowledge from above the data plane (registered pods, the cluster's
//! Services) reaches it. The data plane never sees the sources behind an answer, so it
//! depends on none of them; whoever knows more implements [`Destinations`].

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use crate::identity::SpiffeId;

/// Who is calling, as far as an answer may depend on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallerKind {
    /// A workload of this host, found by its cgroup.
    Host,
    /// A registered pod, found by the listener in its namespace that accepted the call.
    Pod,
}

/// The caller of one connection: its kind, and the address it calls from (a pod's own
/// address; a host workload's source), which a Service's `ClientIP` affinity keys on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub kind: CallerKind,
    pub address: IpAddr,
}

/// What a destination is.
#[derive(Clone, Debug)]
pub struct Destination {
    /// The address the CONNECT asks the peer for, on whose host the tunnel is dialled.
    pub target: SocketAddr,
    /// The identity whatever serves `target` must present, when it is known exactly;
    /// `None`: the configured peer pattern (`[outbound] peer_identity`) applies.
    pub identity: Option<SpiffeId>,
    /// How many connections this node has open to `target` through a Service, shared with
    /// whoever balances over it; a connection that rides to it holds one ([`OpenCount`]).
    pub open: Option<OpenCount>,
}

impl PartialEq for Destination {
    fn eq(&self, other: &Self) -> bool {
        self.target == other.target && self.identity == other.identity
    }
}

impl Destination {
    /// A destination nothing is known about: itself, under the peer pattern.
    pub fn unknown(target: SocketAddr) -> Self {
        Self {
            target,
            identity: None,
            open: None,
        }
    }
}

/// A count of open connections to one endpoint, which a balancer reads to send the next
/// one where fewer are open.
#[derive(Clone, Debug, Default)]
pub struct OpenCount(Arc<AtomicUsize>);

impl OpenCount {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts one connection until the guard is dropped.
    pub fn hold(&self) -> OpenHeld {
        self.0.fetch_add(1, Ordering::Relaxed);
        OpenHeld(self.0.clone())
    }
}

/// One open connection, counted while it lives.
#[derive(Debug)]
pub struct OpenHeld(Arc<AtomicUsize>);

impl Drop for OpenHeld {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A Service's name as the logs and metrics say it: `<namespace>/<name>`.
pub type ServiceName = Arc<str>;

/// What a captured destination resolves to.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolution {
    /// The address names its own workload (a pod, a host).
    Direct(Destination),
    /// A Service's virtual address: the endpoints to try, in order (the first is the one
    /// picked; the rest, a few others, are tried if it cannot be reached). Never empty.
    Service {
        service: ServiceName,
        endpoints: Vec<Destination>,
    },
    /// A Service's virtual address with nothing that may serve this caller: refused at
    /// once, the reason in words.
    NoEndpoint { service: ServiceName, why: String },
}

/// The source of what destinations are. An answer is never an error: what cannot be learnt
/// is a [`Destination::unknown`], and the peer pattern still decides whom the caller
/// accepts. Synchronous: a source answers from what it already holds (a view kept by a
/// watch), never by asking someone per connection.
pub trait Destinations: Send + Sync {
    fn resolve(&self, caller: Caller, dst: SocketAddr) -> Resolution;
}

/// A host with nothing above the data plane: every destination is unknown.
pub struct Unknown;

impl Destinations for Unknown {
    fn resolve(&self, _caller: Caller, dst: SocketAddr) -> Resolution {
        Resolution::Direct(Destination::unknown(dst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_count_counts_what_is_held() {
        let count = OpenCount::default();
        let first = count.hold();
        let second = count.clone().hold();
        assert_eq!(count.get(), 2);
        drop(first);
        assert_eq!(count.get(), 1);
        drop(second);
        assert_eq!(count.get(), 0);
    }
}
