//! The slots of connections that have not finished their handshakes, shared fairly: no
//! small set of addresses can shut the door on everyone else.
//!
//! - Sources are grouped by prefix (an IPv4 /24, an IPv6 /64: what one host or one tenant
//!   usually has), with the per-address cap inside a group.
//! - When every slot is taken, a newcomer takes the slot of the **oldest** connection of the
//!   **largest** group (its own, if its group is the largest): a flood from a few prefixes
//!   only ever evicts itself, while a caller from elsewhere always gets a slot, and keeps it
//!   for as long as a handshake takes (it is the newest, and its group the smallest).
//! - Sources the daemon knows (addresses that completed a handshake recently, and the
//!   operator's `[[peer]]` ranges) have slots of their own on top (a quarter of the total),
//!   and are never evicted: a peer that was talking to us before a flood keeps reaching us
//!   during it even if the flood comes from as many prefixes as there are slots.
//!
//! A slot frees itself when dropped; an evicted connection is told through its slot and
//! closes.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ipnet::IpNet;
use tokio::sync::Notify;

use super::Refusal;

/// How long an address that completed a handshake stays known.
const KNOWN_FOR: Duration = Duration::from_secs(15 * 60);
/// Addresses remembered as known at most (the oldest are forgotten first).
const KNOWN_ADDRESSES: usize = 8192;

/// A source prefix: the unit of fairness.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Prefix(IpNet);

impl Prefix {
    fn of(ip: IpAddr) -> Self {
        let net = match ip.to_canonical() {
            IpAddr::V4(v4) => IpNet::new(v4.into(), 24),
            IpAddr::V6(v6) => IpNet::new(v6.into(), 64),
        };
        Self(net.expect("24 and 64 are valid prefix lengths").trunc())
    }
}

/// The evictable connections of one prefix.
#[derive(Default)]
struct Group {
    /// By slot id: the smallest is the oldest.
    waiting: BTreeMap<u64, Arc<Notify>>,
}

#[derive(Default)]
struct State {
    /// Slots held by unknown sources, and by known ones in their reserve.
    held: usize,
    held_known: usize,
    per_address: HashMap<IpAddr, usize>,
    groups: HashMap<Prefix, Group>,
    next_id: u64,
}

/// Addresses that completed a handshake, and when.
#[derive(Default)]
struct Known {
    since: HashMap<IpAddr, Instant>,
    order: VecDeque<(IpAddr, Instant)>,
}

/// The pre-TLS slots of one inbound side.
pub struct PreTls {
    total: usize,
    reserved: usize,
    per_address: usize,
    configured: Vec<IpNet>,
    state: Mutex<State>,
    known: Mutex<Known>,
}

/// What kind of slot a connection holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// An unknown source's: may be evicted.
    Evictable,
    /// A known source's, within the shared total: never evicted.
    Kept,
    /// A known source's, from the reserve.
    Reserved,
}

/// One connection's slot until its handshakes finish; freed when dropped.
pub struct PreTlsSlot {
    owner: Arc<PreTls>,
    source: IpAddr,
    id: u64,
    kind: Kind,
    evicted: Arc<Notify>,
}

impl PreTls {
    /// `total` slots shared by everyone, at most `per_address` of them for one address,
    /// and a quarter of `total` more for known sources; `configured`: the ranges of the
    /// operator's `[[peer]]` entries, known from the start.
    pub fn new(total: usize, per_address: usize, configured: Vec<IpNet>) -> Arc<Self> {
        Arc::new(Self {
            total,
            reserved: total.div_ceil(4),
            per_address,
            configured,
            state: Mutex::default(),
            known: Mutex::default(),
        })
    }

    /// A slot for a connection from `source`, taking the oldest connection of the largest
    /// group's when all are held; refused only past the per-address cap, or when every
    /// slot is a known source's.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Result<PreTlsSlot, Refusal> {
        let source = source.to_canonical();
        let known = self.is_known(source);
        let mut state = self.state.lock().expect("pre-TLS slots poisoned");
        if state.per_address.get(&source).copied().unwrap_or(0) >= self.per_address {
            return Err(Refusal::UnauthenticatedFromAddress);
        }
        let kind = if state.held < self.total {
            state.held += 1;
            if known { Kind::Kept } else { Kind::Evictable }
        } else if known && state.held_known < self.reserved {
            state.held_known += 1;
            Kind::Reserved
        } else if evict_oldest_of_largest(&mut state) {
            // The evicted connection's place in `held` is the newcomer's now.
            if known { Kind::Kept } else { Kind::Evictable }
        } else {
            return Err(Refusal::Unauthenticated);
        };
        *state.per_address.entry(source).or_insert(0) += 1;
        let id = state.next_id;
        state.next_id += 1;
        let evicted = Arc::new(Notify::new());
        if kind == Kind::Evictable {
            state
                .groups
                .entry(Prefix::of(source))
                .or_default()
                .waiting
                .insert(id, evicted.clone());
        }
        Ok(PreTlsSlot {
            owner: self.clone(),
            source,
            id,
            kind,
            evicted,
        })
    }

    /// Remembers that `source` completed a handshake: it is known for a while.
    pub fn authenticated(&self, source: IpAddr) {
        let source = source.to_canonical();
        let now = Instant::now();
        let mut known = self.known.lock().expect("known sources poisoned");
        known.since.insert(source, now);
        known.order.push_back((source, now));
        // Each address is in `order` once per handshake: drop what is stale or too many.
        while known.order.len() > KNOWN_ADDRESSES * 2
            || known
                .order
                .front()
                .is_some_and(|(_, at)| now.duration_since(*at) > KNOWN_FOR)
        {
            let (ip, at) = known.order.pop_front().expect("checked non-empty");
            if known.since.get(&ip) == Some(&at) {
                known.since.remove(&ip);
            }
        }
        while known.since.len() > KNOWN_ADDRESSES {
            let (ip, at) = known
                .order
                .pop_front()
                .expect("every known address is in order");
            if known.since.get(&ip) == Some(&at) {
                known.since.remove(&ip);
            }
        }
    }

    fn is_known(&self, source: IpAddr) -> bool {
        if self.configured.iter().any(|net| net.contains(&source)) {
            return true;
        }
        let known = self.known.lock().expect("known sources poisoned");
        known
            .since
            .get(&source)
            .is_some_and(|at| at.elapsed() <= KNOWN_FOR)
    }

    /// Slots held now: (shared, reserved).
    pub fn held(&self) -> (usize, usize) {
        let state = self.state.lock().expect("pre-TLS slots poisoned");
        (state.held, state.held_known)
    }
}

/// Evicts the oldest evictable connection of the group holding the most; whether there was
/// one. Its place in `held` goes to the newcomer, so its slot's drop gives back only its
/// address's count.
fn evict_oldest_of_largest(state: &mut State) -> bool {
    let Some((&prefix, _)) = state
        .groups
        .iter()
        .filter(|(_, group)| !group.waiting.is_empty())
        .max_by_key(|(_, group)| group.waiting.len())
    else {
        return false;
    };
    let group = state.groups.get_mut(&prefix).expect("just found");
    let (_, evicted) = group.waiting.pop_first().expect("not empty");
    if group.waiting.is_empty() {
        state.groups.remove(&prefix);
    }
    evicted.notify_one();
    true
}

impl PreTlsSlot {
    /// Resolves when a newcomer took this slot: the connection must close.
    pub async fn evicted(&self) {
        self.evicted.notified().await;
    }
}

impl Drop for PreTlsSlot {
    fn drop(&mut self) {
        let mut state = self.owner.state.lock().expect("pre-TLS slots poisoned");
        if self.kind == Kind::Evictable {
            let prefix = Prefix::of(self.source);
            let Some(group) = state.groups.get_mut(&prefix) else {
                return release_address(&mut state, self.source);
            };
            if group.waiting.remove(&self.id).is_none() {
                // Evicted: its place in `held` went to the newcomer.
                return release_address(&mut state, self.source);
            }
            if group.waiting.is_empty() {
                state.groups.remove(&prefix);
            }
        }
        match self.kind {
            Kind::Reserved => state.held_known -= 1,
            Kind::Evictable | Kind::Kept => state.held -= 1,
        }
        release_address(&mut state, self.source);
    }
}

/// One fewer connection from `source` (an evicted one's too: it lived until now).
fn release_address(state: &mut State, source: IpAddr) {
    if let Some(count) = state.per_address.get_mut(&source) {
        *count -= 1;
        if *count == 0 {
            state.per_address.remove(&source);
        }
    }
}

#[cfg(test)]
#[path = "pre_tls/tests.rs"]
mod tests;
