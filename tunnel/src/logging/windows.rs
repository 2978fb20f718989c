//! Rate-limited log lines: of a stream of identical events, one line per interval with the
//! count of those left out. Shared by the inbound refusals and the auth-failure stream.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Which of a stream of identical events (same kind, same reason) get a log line: at most
/// one per interval, carrying the count of those left out. Reasons can carry peer-supplied
/// text, so at most [`MAX_REASONS`] are remembered; past that, new reasons share one window
/// per kind.
pub struct LogWindows<K> {
    interval: Duration,
    /// (kind, reason) → when its last line was logged, and how many were counted since.
    windows: Mutex<HashMap<(K, String), (Instant, u64)>>,
}

impl<K: Copy + Eq + Hash> LogWindows<K> {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// `Some` when this event should be logged (with how many were not).
    pub fn record(&self, kind: K, reason: &str) -> Option<LogNow> {
        let now = Instant::now();
        let mut windows = self.windows.lock().expect("log window lock poisoned");
        if windows.len() >= MAX_REASONS {
            windows.retain(|_, (last, _)| now.duration_since(*last) < self.interval);
        }
        let reason = if windows.len() >= MAX_REASONS {
            String::new()
        } else {
            reason.to_string()
        };
        match windows.get_mut(&(kind, reason.clone())) {
            Some((last, suppressed)) if now.duration_since(*last) < self.interval => {
                *suppressed += 1;
                None
            }
            Some((last, suppressed)) => {
                *last = now;
                Some(LogNow {
                    suppressed: std::mem::take(suppressed),
                })
            }
            None => {
                windows.insert((kind, reason), (now, 0));
                Some(LogNow { suppressed: 0 })
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.windows.lock().unwrap().len()
    }
}

/// Distinct reasons remembered at once; past this (reasons can carry peer-supplied text,
/// such as an identity), new reasons share one window per kind.
const MAX_REASONS: usize = 256;

/// What to say about a refusal that may be logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogNow {
    /// Identical refusals since the last line, not logged themselves.
    pub suppressed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_distinct_reasons_cannot_grow_the_table() {
        let windows = LogWindows::new(Duration::from_secs(3600));
        let logged = (0..10_000)
            .filter(|i| windows.record(1u8, &format!("identity {i}")).is_some())
            .count();
        assert!(windows.len() <= MAX_REASONS + 1);
        assert!(logged <= MAX_REASONS + 1, "{logged} lines");
    }
}
