//! The `[inbound]` caps: every one a positive count or duration, with defaults in
//! `Inbound::DEFAULT`.

use super::{Checker, KeyPath, at};
use crate::config::{Inbound, Runtime, raw::RawInbound};

impl Checker<'_> {
    /// `runtime`: the runtime's threads decide the default of `max_handshakes`.
    pub(super) fn inbound(
        &mut self,
        raw: &RawInbound,
        runtime: Option<&Runtime>,
    ) -> Option<Inbound> {
        let path = at("inbound");
        let d = Inbound::DEFAULT;
        let max_unauthenticated = self.at_least_one(
            &path.key("max_unauthenticated"),
            raw.max_unauthenticated,
            d.max_unauthenticated,
        );
        let max_unauthenticated_per_address = self.at_least_one(
            &path.key("max_unauthenticated_per_address"),
            raw.max_unauthenticated_per_address,
            d.max_unauthenticated_per_address,
        );
        let max_handshakes = self.at_least_one(
            &path.key("max_handshakes"),
            raw.max_handshakes,
            Inbound::default_max_handshakes(runtime.map_or(1, |r| r.worker_threads)),
        );
        let max_connections_per_peer = self.at_least_one(
            &path.key("max_connections_per_peer"),
            raw.max_connections_per_peer,
            d.max_connections_per_peer,
        );
        let max_streams_per_connection = self.at_least_one(
            &path.key("max_streams_per_connection"),
            raw.max_streams_per_connection,
            d.max_streams_per_connection,
        );
        let handshake_timeout = self.duration(
            &path.key("handshake_timeout"),
            raw.handshake_timeout.as_deref(),
            d.handshake_timeout,
        );
        let idle_timeout = self.duration(
            &path.key("idle_timeout"),
            raw.idle_timeout.as_deref(),
            d.idle_timeout,
        );
        let keepalive = self.duration(
            &path.key("keepalive"),
            raw.keepalive.as_deref(),
            d.keepalive,
        );
        Some(Inbound {
            max_unauthenticated: max_unauthenticated?,
            max_unauthenticated_per_address: max_unauthenticated_per_address?,
            max_handshakes: max_handshakes?,
            max_connections_per_peer: max_connections_per_peer?,
            max_streams_per_connection: max_streams_per_connection?,
            handshake_timeout: handshake_timeout?,
            idle_timeout: idle_timeout?,
            keepalive: keepalive?,
        })
    }

    /// A count that must be at least 1 (0 would refuse everything, which is never meant).
    pub(super) fn at_least_one<T: Copy + PartialEq + From<u8>>(
        &mut self,
        path: &KeyPath,
        value: Option<T>,
        default: T,
    ) -> Option<T> {
        match value {
            Some(zero) if zero == T::from(0) => {
                self.problem(path, "must be at least 1");
                None
            }
            Some(value) => Some(value),
            None => Some(default),
        }
    }
}
