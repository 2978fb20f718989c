//! Why the pool could not give a stream, in words a caller's log can use.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use crate::{identity::SpiffeId, telemetry::FailReason, tls::RefusalKind};

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
    Handshake {
        peer: SocketAddr,
        reason: String,
        /// What the TLS error was, for counting (the reason is for reading).
        kind: RefusalKind,
    },
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
            Self::Handshake { kind, .. } => FailReason::of_tls(*kind),
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

    /// Whether the attempt certainly delivered nothing to the destination: the peer was not
    /// reached, the handshake failed, or the peer answered the CONNECT with a refusal.
    /// Then another endpoint may be tried with the same bytes; after a stream broke or went
    /// unanswered, the bytes may have been delivered.
    pub fn delivered_nothing(&self) -> bool {
        match self {
            Self::Connect { .. }
            | Self::Timeout { .. }
            | Self::Handshake { .. }
            | Self::Refused { .. }
            | Self::Abandoned { .. } => true,
            Self::Stream { .. } | Self::Unanswered { .. } => false,
        }
    }

    /// A failure that took long to learn (a timeout, an unreachable host): the ones worth
    /// remembering, since each new attempt would cost as long again. A quick refusal (the
    /// peer daemon restarting) is retried at once, so recovery is not delayed.
    pub(super) fn is_slow(&self) -> bool {
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
