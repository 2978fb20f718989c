//! What the outbound side asks about a destination, and nothing else: the one interface
//! through which knowledge from above the data plane (registered pods, the cluster's
//! Services) reaches it. The data plane never sees the sources behind an answer, so it
//! depends on none of them; whoever knows more implements [`Destinations`].

use std::net::SocketAddr;

use crate::identity::SpiffeId;

/// Who is calling, as far as an answer may depend on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallerKind {
    /// A workload of this host, found by its cgroup.
    Host,
    /// A registered pod, found by the listener in its namespace that accepted the call.
    Pod,
}

/// What a destination is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// The address the CONNECT asks the peer for, on whose host the tunnel is dialled.
    pub target: SocketAddr,
    /// The identity whatever serves `target` must present, when it is known exactly;
    /// `None`: the configured peer pattern (`[outbound] peer_identity`) applies.
    pub identity: Option<SpiffeId>,
}

impl Destination {
    /// A destination nothing is known about: itself, under the peer pattern.
    pub fn unknown(target: SocketAddr) -> Self {
        Self {
            target,
            identity: None,
        }
    }
}

/// The source of what destinations are. An answer is never an error: what cannot be learnt
/// is [`Destination::unknown`], and the peer pattern still decides whom the caller accepts.
/// Synchronous: a source answers from what it already holds (a view kept by a watch), never
/// by asking someone per connection.
pub trait Destinations: Send + Sync {
    fn resolve(&self, caller: CallerKind, dst: SocketAddr) -> Destination;
}

/// A host with nothing above the data plane: every destination is unknown.
pub struct Unknown;

impl Destinations for Unknown {
    fn resolve(&self, _caller: CallerKind, dst: SocketAddr) -> Destination {
        Destination::unknown(dst)
    }
}
