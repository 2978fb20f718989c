//! The `[inbound]` caps: every one a positive count or duration, with defaults in
//! `Inbound::DEFAULT`; and `[limits]`, what the daemon as a whole may hold.

use super::{Checker, KeyPath, at};
use crate::config::{
    Inbound, Limits, Runtime,
    raw::{RawInbound, RawLimits, RawSize},
};

/// The least buffer budget: one connection's largest receive window and a few reads
/// (`proxy::budget`). Below it the daemon would crawl.
const MIN_BUFFERED_BYTES: u64 = 32 * 1024 * 1024;

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

    pub(super) fn limits(&mut self, raw: &RawLimits) -> Option<Limits> {
        let key = at("limits").key("max_buffered_bytes");
        let max_buffered_bytes = match &raw.max_buffered_bytes {
            None => Limits::DEFAULT.max_buffered_bytes,
            Some(size) => {
                let bytes = match size {
                    RawSize::Bytes(bytes) => Ok(*bytes),
                    RawSize::Text(text) => parse_size(text),
                };
                match bytes {
                    Ok(bytes) if bytes >= MIN_BUFFERED_BYTES => bytes,
                    Ok(bytes) => {
                        self.problem(
                            &key,
                            format!(
                                "{bytes} bytes is below the least the daemon works with, 32MiB"
                            ),
                        );
                        return None;
                    }
                    Err(e) => {
                        self.problem(&key, e);
                        return None;
                    }
                }
            }
        };
        Some(Limits { max_buffered_bytes })
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

/// `"256MiB"`, `"1GiB"`, `"512KiB"`, `"1048576"` (bytes): binary units only, since buffers
/// are counted in them.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().map_err(|_| {
        format!("{text:?} is not a size: write bytes, or a number with KiB, MiB or GiB")
    })?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?}; use KiB, MiB or GiB (binary units)"
            ));
        }
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_take_binary_units_and_refuse_the_rest() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert!(parse_size("256MB").unwrap_err().contains("unknown unit"));
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
        assert!(
            parse_size("99999999999999GiB")
                .unwrap_err()
                .contains("too large")
        );
    }
}
