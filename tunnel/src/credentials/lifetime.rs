//! How long one TLS connection may live: never past the expiry of either side's certificate,
//! not past a change of trust that no longer accepts the peer (a CRL that now revokes its
//! certificate or an intermediate of its chain, a root removed), and, once our own
//! certificate on it is replaced, only as long as the streams already on it.

use std::{
    net::Ipv4Addr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rustls::{
    client::danger::ServerCertVerifier as _,
    pki_types::{CertificateDer, ServerName, UnixTime},
    server::danger::ClientCertVerifier as _,
};
use std::pin::Pin;

use tokio::{
    sync::watch,
    time::{Instant, Sleep},
};

use super::Snapshot;
use crate::{
    identity::{CertSummary, timestamp},
    tls::{self, Credential, PeerExpectation, RevokedEntry, Trust},
};

/// Why a live connection's peer is refused by a reloaded trust: the connection closes with
/// it as its reason.
#[derive(Debug, thiserror::Error)]
pub enum PeerRefused {
    /// A CRL now lists the peer's certificate or an intermediate of its chain.
    #[error("the peer's certificate is revoked: {0}")]
    Revoked(RevokedEntry),
    /// The new trust refuses the chain otherwise (a root removed...), as a peer's verifier
    /// says it, in words.
    #[error("the reloaded trust no longer accepts the peer's certificate: {}", tls::explain(.0))]
    NotAccepted(rustls::Error),
}

/// Which side of the connection we are, and so which of our certificates is on it and how
/// the peer is judged.
#[derive(Clone, Debug)]
pub enum Role {
    /// We serve with the node's certificate, or a registered pod's (`pod`, its name in
    /// the snapshot); the peer is a caller.
    Inbound { pod: Option<Arc<str>> },
    /// We call as `workload`; the peer is a daemon expected as `expected`.
    Outbound {
        workload: Arc<str>,
        expected: PeerExpectation,
    },
}

/// What a connection is about to learn before it starts: whose certificate we present and
/// the trust we judge by, at the handshake.
#[derive(Clone)]
pub struct Watch {
    pub role: Role,
    pub own: Arc<Credential>,
    pub trust: Arc<Trust>,
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
}

impl Watch {
    /// The material in force, and the watch of a connection accepted with it, serving as
    /// the node or as `pod`; `None` if the pod has no certificate in force (it is being
    /// removed).
    pub fn inbound(
        snapshots: &watch::Receiver<Arc<Snapshot>>,
        pod: Option<&Arc<str>>,
    ) -> Option<(Arc<Snapshot>, Self)> {
        let snapshot = snapshots.borrow().clone();
        let own = match pod {
            None => snapshot.node.clone(),
            Some(name) => snapshot.workloads.get(&**name)?.clone(),
        };
        let watch = Self {
            role: Role::Inbound { pod: pod.cloned() },
            own,
            trust: snapshot.trust.clone(),
            snapshots: snapshots.clone(),
        };
        Some((snapshot, watch))
    }
}

/// Why a connection must change course.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// Our certificate on it was replaced: no new streams, the open ones may finish.
    Replaced,
    /// It must close now, for this reason.
    Close(String),
}

/// A connection after its handshake: the peer's chain, and the first expiry of the two.
pub struct Authenticated {
    watch: Watch,
    peer_chain: Vec<CertificateDer<'static>>,
    /// Made once: the connection loops call `next` again after every stream, and a new
    /// timer each time would cost a timer-wheel entry per stream.
    deadline: Pin<Box<Sleep>>,
    deadline_reason: String,
    replaced: bool,
}

impl Authenticated {
    /// `peer_chain` is what the peer presented (leaf first), already verified.
    pub fn new(watch: Watch, peer_chain: Vec<CertificateDer<'static>>) -> Self {
        let own_expiry = watch.own.leaf.not_after;
        let peer = peer_chain
            .first()
            .and_then(|leaf| CertSummary::parse(leaf.as_ref()).ok());
        let (expiry, whose, serial) = match &peer {
            Some(peer) if peer.not_after < own_expiry => {
                (peer.not_after, "the peer's", peer.serial.clone())
            }
            _ => (own_expiry, "our", watch.own.leaf.serial.clone()),
        };
        Self {
            watch,
            peer_chain,
            deadline: Box::pin(tokio::time::sleep_until(instant_at(expiry))),
            deadline_reason: format!(
                "{whose} certificate (serial {serial}) expired at {}",
                timestamp(expiry)
            ),
            replaced: false,
        }
    }

    /// Resolves when the connection must change course; call again after `Replaced`.
    pub async fn next(&mut self) -> Ending {
        loop {
            tokio::select! {
                () = &mut self.deadline => {
                    return Ending::Close(self.deadline_reason.clone());
                }
                changed = self.watch.snapshots.changed() => {
                    if changed.is_err() {
                        // No more reloads (shutting down): only the expiry is left.
                        (&mut self.deadline).await;
                        return Ending::Close(self.deadline_reason.clone());
                    }
                    let snapshot = self.watch.snapshots.borrow_and_update().clone();
                    if let Some(ending) = self.judge(&snapshot) {
                        return ending;
                    }
                }
            }
        }
    }

    /// What `snapshot` means for this connection, if anything.
    fn judge(&mut self, snapshot: &Snapshot) -> Option<Ending> {
        if !Arc::ptr_eq(&snapshot.trust, &self.watch.trust) {
            self.watch.trust = snapshot.trust.clone();
            if let Err(refused) = self.peer_still_accepted(snapshot) {
                return Some(Ending::Close(refused.to_string()));
            }
        }
        let own_now = match &self.watch.role {
            Role::Inbound { pod: None } => Some(&snapshot.node),
            Role::Inbound { pod: Some(name) } => snapshot.workloads.get(&**name),
            Role::Outbound { workload, .. } => snapshot.workloads.get(&**workload),
        };
        let replaced = own_now.is_none_or(|own| !Arc::ptr_eq(own, &self.watch.own));
        if replaced && !self.replaced {
            self.replaced = true;
            return Some(Ending::Replaced);
        }
        None
    }

    /// The peer's chain judged again, by the new trust, as a new handshake would judge it.
    fn peer_still_accepted(&self, snapshot: &Snapshot) -> Result<(), PeerRefused> {
        let Some((leaf, intermediates)) = self.peer_chain.split_first() else {
            return Ok(());
        };
        let now = UnixTime::now();
        let verdict = match &self.watch.role {
            Role::Inbound { .. } => snapshot
                .client_verifier()
                .verify_client_cert(leaf, intermediates, now)
                .map(|_| ()),
            Role::Outbound { expected, .. } => {
                let name = ServerName::IpAddress(Ipv4Addr::UNSPECIFIED.into());
                snapshot
                    .server_verifier(expected.clone())
                    .verify_server_cert(leaf, intermediates, &name, &[], now)
                    .map(|_| ())
            }
        };
        verdict.map_err(
            |e| match tls::revocation_entry(&snapshot.trust, &self.peer_chain) {
                Some(entry) => PeerRefused::Revoked(entry),
                None => PeerRefused::NotAccepted(e),
            },
        )
    }
}

/// The tokio instant of a unix time (now, if it has passed).
fn instant_at(unix: i64) -> Instant {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let at = Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    // A certificate is valid through its notAfter second.
    Instant::now() + (at + Duration::from_secs(1)).saturating_sub(now)
}
