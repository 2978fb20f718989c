//! `[outbound]` and `[[peer]]`: how this node dials peer daemons (port, timeouts, streams,
//! the identity a peer must present, never a workload's) and which identity a destination's
//! peer has.

use super::{Checker, at};
use crate::{
    config::{
        DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_KEEPALIVE, DEFAULT_MAX_STREAMS,
        DEFAULT_PEER_PORT, Outbound, Peer, Workload,
        raw::{RawOutbound, RawPeer},
    },
    identity::TrustDomain,
};

impl Checker<'_> {
    pub(super) fn outbound(
        &mut self,
        raw: &RawOutbound,
        td: Option<&TrustDomain>,
    ) -> Option<Outbound> {
        let path = at("outbound");
        let peer_identity =
            self.peer_identity(&path.key("peer_identity"), raw.peer_identity.as_deref(), td);
        let peer_port = raw.peer_port.unwrap_or(DEFAULT_PEER_PORT);
        if peer_port == 0 {
            self.problem(&path.key("peer_port"), "port 0 is not a port");
        }
        let connect_timeout = self.duration(
            &path.key("connect_timeout"),
            raw.connect_timeout.as_deref(),
            DEFAULT_CONNECT_TIMEOUT,
        );
        let idle_timeout = self.duration(
            &path.key("idle_timeout"),
            raw.idle_timeout.as_deref(),
            DEFAULT_IDLE_TIMEOUT,
        );
        let max_streams_per_connection = raw
            .max_streams_per_connection
            .unwrap_or(DEFAULT_MAX_STREAMS);
        if max_streams_per_connection == 0 {
            self.problem(
                &path.key("max_streams_per_connection"),
                "must be at least 1",
            );
        }
        let keepalive = self.duration(
            &path.key("keepalive"),
            raw.keepalive.as_deref(),
            DEFAULT_KEEPALIVE,
        );
        (peer_port != 0 && max_streams_per_connection != 0).then_some(())?;
        Some(Outbound {
            peer_identity: peer_identity?,
            peer_port,
            connect_timeout: connect_timeout?,
            idle_timeout: idle_timeout?,
            max_streams_per_connection,
            keepalive: keepalive?,
        })
    }

    pub(super) fn peers(&mut self, raw: &[RawPeer], td: Option<&TrustDomain>) -> Vec<Peer> {
        let mut peers = Vec::new();
        for (i, raw) in raw.iter().enumerate() {
            let path = at("peer").index(i);
            if raw.destinations.is_empty() {
                self.problem(
                    &path.key("destinations"),
                    "an empty list applies to nothing",
                );
            }
            let destinations = self.cidrs(&path.key("destinations"), &raw.destinations);
            let spiffe_id = self.spiffe_id(&path.key("spiffe_id"), &raw.spiffe_id, td);
            if let (Some(destinations), Some(spiffe_id)) = (destinations, spiffe_id) {
                peers.push(Peer {
                    destinations,
                    spiffe_id,
                });
            }
        }
        peers
    }

    /// A pattern that admits one of our own workloads' identities would let that workload's
    /// certificate (held by an application, not a daemon) stand in for a peer daemon.
    pub(super) fn peer_identity_excludes_workloads(
        &mut self,
        outbound: &Outbound,
        workloads: &[Workload],
    ) {
        let pattern = &outbound.peer_identity;
        for workload in workloads.iter().filter(|w| pattern.matches(&w.spiffe_id)) {
            self.problem(
                &at("outbound").key("peer_identity"),
                format!(
                    "{pattern} matches {}, the identity of workload {:?}: peer daemons must \
                     present node identities, never a workload's",
                    workload.spiffe_id, workload.name
                ),
            );
        }
    }
}
