//! The auth-failure stream: every refused TLS handshake and identity, with the precise
//! reason, logged on its own target ([`logging::AUTH`]). Identical failures (same
//! direction, same reason) are logged at most once per interval with the count of those
//! left out, so a flood gives a bounded number of lines; the last few are remembered for
//! the admin API and `tunnel status`.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::Mutex,
    time::{Duration, SystemTime},
};

use serde::Serialize;
use tracing::warn;

use super::metrics::Direction;
use crate::logging::{self, LogWindows};

/// How many failures [`AuthFailures::recent`] remembers.
pub const REMEMBERED: usize = 20;

/// At most one line per direction and reason per interval.
pub const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// One refused handshake or identity.
#[derive(Clone, Debug, Serialize)]
pub struct AuthFailure {
    /// Unix seconds.
    pub at: u64,
    /// `inbound` (a caller refused by this daemon) or `outbound` (a peer daemon refused by,
    /// or refusing, this one).
    pub direction: &'static str,
    /// The other daemon's address.
    pub peer: SocketAddr,
    /// The peer's identity, when it was read before the refusal.
    pub peer_identity: Option<String>,
    /// The local workload, for an outbound failure.
    pub workload: Option<String>,
    pub reason: String,
}

pub struct AuthFailures {
    windows: LogWindows<Direction>,
    recent: Mutex<VecDeque<AuthFailure>>,
}

impl AuthFailures {
    pub fn new(interval: Duration) -> Self {
        Self {
            windows: LogWindows::new(interval),
            recent: Mutex::new(VecDeque::with_capacity(REMEMBERED)),
        }
    }

    /// Remembers a failure, and logs it on the auth target unless an identical one was
    /// logged within the interval.
    pub fn record(&self, failure: AuthFailure) {
        let direction = if failure.direction == "outbound" {
            Direction::Outbound
        } else {
            Direction::Inbound
        };
        if let Some(now) = self.windows.record(direction, &shape(&failure.reason)) {
            warn!(
                target: logging::AUTH,
                direction = failure.direction,
                peer = %failure.peer,
                peer_identity = failure.peer_identity.as_deref().unwrap_or("-"),
                workload = failure.workload.as_deref().unwrap_or("-"),
                reason = %failure.reason,
                suppressed_since_last = now.suppressed,
                "authentication failed"
            );
        }
        let mut recent = self.recent.lock().expect("auth failures lock poisoned");
        if recent.len() == REMEMBERED {
            recent.pop_front();
        }
        recent.push_back(failure);
    }

    /// The last [`REMEMBERED`] failures, oldest first.
    pub fn recent(&self) -> Vec<AuthFailure> {
        self.recent
            .lock()
            .expect("auth failures lock poisoned")
            .iter()
            .cloned()
            .collect()
    }
}

/// What makes two failures "identical" for the rate limit: the reason without its numbers.
/// A reason names the time of the check ("1d before the check at 2026-11-30T11:22:19Z") and
/// serials, so a flood of one failure would otherwise be a new reason every second, each
/// logged, and the count of those left out never said.
fn shape(reason: &str) -> String {
    reason
        .chars()
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect()
}

impl Default for AuthFailures {
    fn default() -> Self {
        Self::new(LOG_INTERVAL)
    }
}

impl AuthFailure {
    pub fn now(direction: Direction, peer: SocketAddr, reason: impl Into<String>) -> Self {
        Self {
            at: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            direction: direction.as_str(),
            peer,
            peer_identity: None,
            workload: None,
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::Logs;

    #[test]
    fn failures_that_differ_only_in_the_time_of_the_check_are_one_failure() {
        let logs = Logs::capture();
        let failures = AuthFailures::new(Duration::from_secs(3600));
        let peer: SocketAddr = "10.0.0.9:15008".parse().unwrap();
        for second in 0..60 {
            failures.record(AuthFailure::now(
                Direction::Inbound,
                peer,
                format!(
                    "the certificate has expired: not valid after 2026-11-29T11:17:18Z, 1d \
                     before the check at 2026-11-30T11:22:{second:02}Z"
                ),
            ));
        }
        assert_eq!(
            logs.lines_with("authentication failed").len(),
            1,
            "{}",
            logs.text()
        );
    }

    #[test]
    fn a_flood_of_identical_failures_gives_one_line_and_distinct_ones_each_get_theirs() {
        let logs = Logs::capture();
        let failures = AuthFailures::new(Duration::from_secs(3600));
        let peer: SocketAddr = "10.0.0.9:15008".parse().unwrap();
        for _ in 0..1000 {
            failures.record(AuthFailure::now(
                Direction::Inbound,
                peer,
                "the certificate expired at 2024-01-01 00:00:00 UTC",
            ));
        }
        failures.record(AuthFailure::now(
            Direction::Inbound,
            peer,
            "spiffe://other.org/x is outside the trust domain example.org",
        ));
        failures.record(AuthFailure::now(
            Direction::Outbound,
            peer,
            "the certificate expired at 2024-01-01 00:00:00 UTC",
        ));
        let lines = logs.lines_with("authentication failed");
        assert_eq!(lines.len(), 3, "{}", logs.text());
        assert!(
            lines.iter().all(|l| l.contains("tunnel::auth")),
            "{lines:?}"
        );
        let recent = failures.recent();
        assert_eq!(recent.len(), REMEMBERED);
        assert_eq!(recent.last().unwrap().direction, "outbound");
        let json = serde_json::to_string(&recent[0]).unwrap();
        assert!(
            json.contains("\"reason\":\"the certificate expired"),
            "{json}"
        );
    }

    #[test]
    fn the_next_line_after_the_interval_counts_those_left_out() {
        let logs = Logs::capture();
        let failures = AuthFailures::new(Duration::from_millis(20));
        let peer: SocketAddr = "10.0.0.9:15008".parse().unwrap();
        for _ in 0..5 {
            failures.record(AuthFailure::now(
                Direction::Inbound,
                peer,
                "no clientAuth EKU",
            ));
        }
        std::thread::sleep(Duration::from_millis(30));
        failures.record(AuthFailure::now(
            Direction::Inbound,
            peer,
            "no clientAuth EKU",
        ));
        let lines = logs.lines_with("authentication failed");
        assert_eq!(lines.len(), 2, "{}", logs.text());
        assert!(lines[1].contains("suppressed_since_last=4"), "{}", lines[1]);
    }
}
