//! One budget for every byte the daemon buffers for others (`[limits] max_buffered_bytes`):
//! what it has read from a socket and not yet handed to TLS (copy buffers, and h2's
//! per-stream send buffers, which hold the same chunks), and the receive windows of its
//! HTTP/2 connections (what a peer may send before anything is read from it) with their
//! TLS write buffers.
//!
//! Without it each cap is per stream or per connection, and a peer multiplies them: one
//! authenticated identity with 32 connections × 100 streams that never read made the
//! daemon hold 1.17 GB.
//!
//! - **Reads are charged before they are made**, for the buffer they fill, and the charge
//!   travels with the bytes ([`Chunk`]) into h2; it is given back when h2 drops the chunk:
//!   once it is written to TLS, or when its stream is reset. A stream's bytes are thus
//!   counted wherever they wait, without h2 having to say when it flushed them. When the
//!   budget is spent, a read waits for a charge: the daemon stops reading from senders
//!   (back-pressure; TCP then slows them) instead of allocating, and says so
//!   (`tunnel_buffer_budget_paused_total`, and a line at most every
//!   [`PAUSE_LOG_INTERVAL`]). Waiters are served in order, so no stream starves.
//! - **One party cannot take it all.** The reads of the streams that one remote identity
//!   drains (the caller on the inbound side, the peer on the outbound side) may hold at
//!   most [`PARTY_SHARE`] of the budget: past it, that party's streams wait on their own,
//!   and everyone else's reads go on. Without it, 4 identities whose streams never read
//!   held the whole budget and a legitimate download made meanwhile waited 20–30 s.
//! - **A stream whose peer takes nothing is reset while the budget is spent.** Waiting
//!   readers would otherwise queue behind bytes that never leave (a peer that never reads
//!   holds its charges for good), and every stream of the daemon would stall with them.
//!   A stream that holds charged bytes of which none was written out for [`STALL`], while
//!   some read waits for the budget, is reset both ways (its charges come back at once),
//!   counted (`tunnel_buffer_budget_reclaimed_total`) and logged with its connection. A
//!   slow reader without that pressure is left alone: flow control is doing its job.
//! - **Receive windows are charged when a connection starts**, for its whole life: the
//!   window bounds what h2 buffers for it, whether or not the application behind it reads.
//!   Windows may take at most [`WINDOW_SHARE`] of the budget, so idle connections cannot
//!   leave nothing for reads; past it a connection gets a smaller window
//!   ([`WINDOW_TIERS`]), and with none left the protocol's default of 64 KiB, uncharged —
//!   slower, never refused.
//!
//! What stays outside: the fixed per-connection and per-stream state (h2's stream table,
//! tasks, socket structures), h2's header buffers (capped at `MAX_HEADER_LIST` per
//! connection) and the copy of a chunk the XFCC rewriter makes. `ARCHITECTURE.md` gives
//! the bound.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::{Buf, Bytes};
use tokio::sync::Semaphore;
use tracing::warn;

/// The part of the budget receive windows may hold, at most. A window is charged for what
/// a peer may send, not for what it has sent; at a half, the windows of 8 attackers'
/// connections and their reads took the whole budget, and a legitimate read waited 20 s.
pub const WINDOW_SHARE: (u64, u64) = (1, 4);
/// The part of the budget the reads drained by one remote identity may hold, at most.
pub const PARTY_SHARE: (u64, u64) = (1, 8);
/// Parties remembered before the forgotten ones (no stream left) are swept out.
const PARTIES_SWEPT_PAST: usize = 1024;
/// The receive windows a connection may get, largest first, each charged with the TLS
/// write batch beside it; the first the budget can give is taken.
pub const WINDOW_TIERS: [u32; 4] = [
    super::hbone::CONNECTION_WINDOW,
    4 * 1024 * 1024,
    1024 * 1024,
    256 * 1024,
];
/// HTTP/2's initial connection window (RFC 9113 §6.9.2): what a connection gets with the
/// window share spent, uncharged.
pub const FLOOR_WINDOW: u32 = 65_535;
/// The least time between two "budget spent" log lines.
pub const PAUSE_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// How long a stream may hold charged bytes without any of them written out, while a read
/// waits for the budget, before it is reset. Long enough for a peer busy for a moment (a
/// garbage collection pause, a full TCP window on a slow link), short enough that a read
/// stuck behind a stream nobody reads moves on within seconds.
pub const STALL: Duration = Duration::from_secs(5);

/// How often [`BufferBudget::give_back_forever`] looks at the budget.
const GIVE_BACK_EVERY: Duration = Duration::from_secs(1);

/// The daemon's buffer budget. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct BufferBudget {
    limit: u64,
    /// One permit per byte of the whole budget.
    bytes: Arc<Semaphore>,
    /// What windows may take in all: [`WINDOW_SHARE`] of the budget.
    window_share: u64,
    /// One permit per byte windows may still take of `window_share`.
    windows: Arc<Semaphore>,
    /// Reads that had to wait for a charge.
    paused: AtomicU64,
    /// Reads waiting for a charge now.
    waiting: AtomicU64,
    /// Streams reset because they held bytes nobody took while the budget was spent.
    reclaimed: AtomicU64,
    /// Connections given a smaller window than the largest tier.
    narrowed: AtomicU64,
    last_said: Mutex<Option<Instant>>,
    /// Each remote identity's share, while one of its streams holds it.
    parties: Mutex<HashMap<Arc<str>, Weak<Semaphore>>>,
}

/// What a stream's reads are charged to: the daemon's budget and the share of the remote
/// identity that drains them.
#[derive(Clone, Debug)]
pub struct ReadBudget {
    budget: Arc<BufferBudget>,
    party: Arc<Semaphore>,
}

/// Bytes held against the budget, given back when dropped.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<BufferBudget>,
    bytes: u32,
    /// Also held against the window share.
    window: bool,
    /// The stream whose read it paid for.
    stream: Option<Arc<StreamHold>>,
    /// The party share it also holds.
    party: Option<Arc<Semaphore>>,
}

/// What one stream holds against the budget: its read buffer and the chunks h2 has not
/// written out yet. Its charges keep it up to date.
#[derive(Debug, Default)]
pub struct StreamHold(AtomicU64);

impl StreamHold {
    pub fn bytes(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Resolves once `stream` holds bytes of which none was written out for [`STALL`]: its
/// peer takes nothing. Never resolves for a stream that holds nothing or drains.
pub async fn stalled(stream: &StreamHold) {
    loop {
        let before = stream.bytes();
        tokio::time::sleep(STALL).await;
        let now = stream.bytes();
        if now > 0 && now >= before {
            return;
        }
    }
}

/// Counts a waiting read while it waits (and not after, however its future ends).
struct Waiting<'a>(&'a AtomicU64);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicU64) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The receive window a connection gets, with the charge it holds while it lives.
#[derive(Debug)]
pub struct Window {
    pub size: u32,
    /// Whether to give the connection its large TLS buffers (`hbone::use_large_tls_buffers`):
    /// only when charged for.
    pub large_tls_buffers: bool,
    pub charge: Option<Charge>,
}

impl BufferBudget {
    /// Semaphores count permits in `usize`, at most `Semaphore::MAX_PERMITS`; a budget
    /// beyond that is clamped to it (it is beyond any machine's memory).
    pub fn new(limit: u64) -> Arc<Self> {
        let limit = limit.min(Semaphore::MAX_PERMITS as u64);
        let window_share = limit / WINDOW_SHARE.1 * WINDOW_SHARE.0;
        Arc::new(Self {
            limit,
            bytes: Arc::new(Semaphore::new(permits(limit))),
            window_share,
            windows: Arc::new(Semaphore::new(permits(window_share))),
            paused: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            reclaimed: AtomicU64::new(0),
            narrowed: AtomicU64::new(0),
            last_said: Mutex::new(None),
            parties: Mutex::default(),
        })
    }

    /// The budget for the reads of streams that `party` (a remote identity) drains.
    pub fn for_party(self: &Arc<Self>, party: &str) -> ReadBudget {
        let mut parties = self.parties.lock().expect("budget parties lock poisoned");
        if let Some(share) = parties.get(party).and_then(Weak::upgrade) {
            return ReadBudget {
                budget: self.clone(),
                party: share,
            };
        }
        if parties.len() >= PARTIES_SWEPT_PAST {
            parties.retain(|_, share| share.strong_count() > 0);
        }
        let share = Arc::new(Semaphore::new(permits(
            self.limit / PARTY_SHARE.1 * PARTY_SHARE.0,
        )));
        parties.insert(party.into(), Arc::downgrade(&share));
        ReadBudget {
            budget: self.clone(),
            party: share,
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes held now (reads in flight and windows).
    pub fn in_use(&self) -> u64 {
        self.limit - self.bytes.available_permits() as u64
    }

    /// Bytes held now by receive windows.
    pub fn in_windows(&self) -> u64 {
        self.window_share - self.windows.available_permits() as u64
    }

    /// Reads that waited because the budget was spent.
    pub fn paused(&self) -> u64 {
        self.paused.load(Ordering::Relaxed)
    }

    /// Connections that got less than the largest window.
    pub fn narrowed(&self) -> u64 {
        self.narrowed.load(Ordering::Relaxed)
    }

    /// Gives freed buffers' memory back to the system after a surge: once reads held more
    /// than a quarter of the budget and hold less than a sixteenth now, the allocator is
    /// trimmed (off the async threads). Windows are left out: they are charged for what
    /// connections may receive, not for memory in use. Without it, RSS stayed at the
    /// surge's level after a flood (measured in `tests/hardening.rs`).
    pub async fn give_back_forever(self: Arc<Self>) {
        let mut high = 0;
        loop {
            tokio::time::sleep(GIVE_BACK_EVERY).await;
            let now = self.in_use().saturating_sub(self.in_windows());
            high = high.max(now);
            if high > self.limit / 4 && now < self.limit / 16 {
                high = now;
                let _ = tokio::task::spawn_blocking(crate::sys::release_free_heap).await;
                tracing::debug!(in_use = now, "buffers given back after a surge");
            }
        }
    }

    /// Whether a read waits for the budget now.
    pub fn under_pressure(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }

    /// Streams reset for holding bytes nobody took while the budget was spent.
    pub fn reclaimed(&self) -> u64 {
        self.reclaimed.load(Ordering::Relaxed)
    }

    /// Counts a stream reset by [`stalled`] under pressure.
    pub fn count_reclaimed(&self) {
        self.reclaimed.fetch_add(1, Ordering::Relaxed);
    }

    /// The largest window of [`WINDOW_TIERS`] the budget can give now, charged with
    /// `tls_batch` beside it; else [`FLOOR_WINDOW`], uncharged and without the batch.
    pub fn window(self: &Arc<Self>, tls_batch: usize) -> Window {
        for (tier, size) in WINDOW_TIERS.into_iter().enumerate() {
            let Ok(bytes) = u32::try_from(size as usize + tls_batch) else {
                continue;
            };
            let Ok(share) = self.windows.try_acquire_many(bytes) else {
                continue;
            };
            let Ok(budget) = self.bytes.try_acquire_many(bytes) else {
                continue;
            };
            share.forget();
            budget.forget();
            if tier > 0 {
                self.narrowed.fetch_add(1, Ordering::Relaxed);
            }
            return Window {
                size,
                large_tls_buffers: true,
                charge: Some(Charge {
                    budget: self.clone(),
                    bytes,
                    window: true,
                    stream: None,
                    party: None,
                }),
            };
        }
        self.narrowed.fetch_add(1, Ordering::Relaxed);
        Window {
            size: FLOOR_WINDOW,
            large_tls_buffers: false,
            charge: None,
        }
    }

    fn say_spent(&self) {
        let now = Instant::now();
        let mut last = self.last_said.lock().expect("budget log lock poisoned");
        if last.is_some_and(|at| now.duration_since(at) < PAUSE_LOG_INTERVAL) {
            return;
        }
        *last = Some(now);
        drop(last);
        warn!(
            limit = self.limit,
            in_use = self.in_use(),
            in_windows = self.in_windows(),
            "the buffer budget ([limits] max_buffered_bytes) is spent: reads from senders wait until buffered bytes are written out"
        );
    }
}

impl crate::telemetry::buffers::BufferFigures for BufferBudget {
    fn limit(&self) -> u64 {
        BufferBudget::limit(self)
    }

    fn in_use(&self) -> u64 {
        BufferBudget::in_use(self)
    }

    fn in_windows(&self) -> u64 {
        BufferBudget::in_windows(self)
    }

    fn paused(&self) -> u64 {
        BufferBudget::paused(self)
    }

    fn reclaimed(&self) -> u64 {
        BufferBudget::reclaimed(self)
    }

    fn narrowed(&self) -> u64 {
        BufferBudget::narrowed(self)
    }
}

impl ReadBudget {
    pub fn budget(&self) -> &BufferBudget {
        &self.budget
    }

    /// A charge for a read of `bytes` by `stream`, if the party's share and the budget
    /// have it now.
    pub fn try_charge(&self, bytes: usize, stream: &Arc<StreamHold>) -> Option<Charge> {
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        let party = self.party.try_acquire_many(bytes).ok()?;
        let budget = self.budget.bytes.try_acquire_many(bytes).ok()?;
        party.forget();
        budget.forget();
        Some(self.charged(bytes, stream))
    }

    /// A charge for a read of `bytes` by `stream`, waiting (in turn with the party's other
    /// streams, then with every reader) while the share or the budget is spent.
    pub async fn charge(&self, bytes: usize, stream: &Arc<StreamHold>) -> Charge {
        if let Some(charge) = self.try_charge(bytes, stream) {
            return charge;
        }
        let budget = &self.budget;
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        budget.paused.fetch_add(1, Ordering::Relaxed);
        // Never closed, so these only wait.
        if let Ok(permit) = self.party.acquire_many(bytes).await {
            permit.forget();
        }
        if budget.bytes.available_permits() < bytes as usize {
            budget.say_spent();
        }
        let _waiting = Waiting::enter(&budget.waiting);
        if let Ok(permit) = budget.bytes.acquire_many(bytes).await {
            permit.forget();
        }
        self.charged(bytes, stream)
    }

    fn charged(&self, bytes: u32, stream: &Arc<StreamHold>) -> Charge {
        stream.0.fetch_add(u64::from(bytes), Ordering::Relaxed);
        Charge {
            budget: self.budget.clone(),
            bytes,
            window: false,
            stream: Some(stream.clone()),
            party: Some(self.party.clone()),
        }
    }
}

fn permits(bytes: u64) -> usize {
    usize::try_from(bytes).unwrap_or(Semaphore::MAX_PERMITS)
}

impl Drop for Charge {
    fn drop(&mut self) {
        let bytes = self.bytes as usize;
        if let Some(stream) = &self.stream {
            stream.0.fetch_sub(u64::from(self.bytes), Ordering::Relaxed);
        }
        if let Some(party) = &self.party {
            party.add_permits(bytes);
        }
        self.budget.bytes.add_permits(bytes);
        if self.window {
            self.budget.windows.add_permits(bytes);
        }
    }
}

/// Bytes on their way into an HBONE stream, holding the charge for the buffer they came
/// in until h2 drops them.
#[derive(Debug, Default)]
pub struct Chunk {
    data: Bytes,
    _charge: Option<Charge>,
}

impl Chunk {
    pub fn new(data: Bytes, charge: Option<Charge>) -> Self {
        Self {
            data,
            _charge: charge,
        }
    }

    /// Splits off the first `at` bytes, uncharged: the charge stays with the rest, which a
    /// stream sends last, so it is given back with the last of the buffer.
    pub fn split_to(&mut self, at: usize) -> Self {
        Self::new(self.data.split_to(at), None)
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

impl From<Bytes> for Chunk {
    fn from(data: Bytes) -> Self {
        Self::new(data, None)
    }
}

impl From<&'static [u8]> for Chunk {
    fn from(data: &'static [u8]) -> Self {
        Self::new(Bytes::from_static(data), None)
    }
}

impl Buf for Chunk {
    fn remaining(&self) -> usize {
        self.data.remaining()
    }

    fn chunk(&self) -> &[u8] {
        self.data.chunk()
    }

    fn advance(&mut self, cnt: usize) {
        self.data.advance(cnt);
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [std::io::IoSlice<'a>]) -> usize {
        self.data.chunks_vectored(dst)
    }

    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        self.data.copy_to_bytes(len)
    }
}

#[cfg(test)]
mod tests;
