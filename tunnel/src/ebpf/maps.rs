//! Writes the capture settings into the maps the programs read. The maps may be live (shared
//! with an earlier run's programs during takeover), so the update never opens a gap: first
//! every new entry is added, then the config word is switched, then stale entries go. In
//! between, capture is the union of old and new, never less than both agree on.

use std::{collections::BTreeSet, os::fd::BorrowedFd};

use aya::{
    Ebpf, Pod,
    maps::{
        Array, HashMap, MapData, SockMap,
        lpm_trie::{Key, LpmTrie},
    },
};
use ipnet::IpNet;
use tunnel_common::{
    CaptureConfig, FLAG_ENABLED, FLAG_PORT_FILTER, FLAG_SOCKMAP, MAP_CONFIG, MAP_DESTINATIONS_V4,
    MAP_DESTINATIONS_V6, MAP_EXCLUDES_V4, MAP_EXCLUDES_V6, MAP_EXEMPT_CGROUPS,
    MAP_PLAINTEXT_LISTENERS, MAP_PORTS, MAP_STEER_PORTS, MAP_WORKLOAD_CGROUPS, PRESENT,
};

use super::{CaptureSpec, EbpfError};

/// `sockmap`: whether the hop through `LOCAL_PEERS` is on (asked for, and its program
/// attached).
pub fn sync(ebpf: &mut Ebpf, spec: &CaptureSpec, sockmap: bool) -> Result<(), EbpfError> {
    let wanted = Wanted::from(spec);
    wanted.apply(ebpf, Phase::AddNew)?;
    write_config(ebpf, spec, sockmap)?;
    wanted.apply(ebpf, Phase::RemoveStale)
}

#[derive(Clone, Copy)]
enum Phase {
    AddNew,
    RemoveStale,
}

/// The desired contents of every set-like map.
struct Wanted {
    destinations_v4: TrieKeys<4>,
    destinations_v6: TrieKeys<16>,
    exclude_v4: TrieKeys<4>,
    exclude_v6: TrieKeys<16>,
    ports: BTreeSet<u16>,
    exempt_cgroups: BTreeSet<u64>,
    workload_cgroups: BTreeSet<u64>,
    steer_ports: BTreeSet<u16>,
}

impl Wanted {
    fn from(spec: &CaptureSpec) -> Self {
        let (destinations_v4, destinations_v6) = trie_keys(&spec.destinations);
        let (exclude_v4, exclude_v6) = trie_keys(&spec.exclude);
        Self {
            destinations_v4,
            destinations_v6,
            exclude_v4,
            exclude_v6,
            ports: spec.ports.clone().unwrap_or_default(),
            exempt_cgroups: spec.exempt_cgroups.clone(),
            workload_cgroups: spec.workload_cgroups.clone(),
            steer_ports: spec.steer_ports.clone(),
        }
    }

    fn apply(&self, ebpf: &mut Ebpf, phase: Phase) -> Result<(), EbpfError> {
        sync_trie(ebpf, MAP_DESTINATIONS_V4, &self.destinations_v4, phase)?;
        sync_trie(ebpf, MAP_DESTINATIONS_V6, &self.destinations_v6, phase)?;
        sync_trie(ebpf, MAP_EXCLUDES_V4, &self.exclude_v4, phase)?;
        sync_trie(ebpf, MAP_EXCLUDES_V6, &self.exclude_v6, phase)?;
        sync_set(ebpf, MAP_PORTS, &self.ports, phase)?;
        sync_set(ebpf, MAP_EXEMPT_CGROUPS, &self.exempt_cgroups, phase)?;
        sync_set(ebpf, MAP_WORKLOAD_CGROUPS, &self.workload_cgroups, phase)?;
        sync_set(ebpf, MAP_STEER_PORTS, &self.steer_ports, phase)
    }
}

fn sync_set<K: Pod + Ord>(
    ebpf: &mut Ebpf,
    name: &'static str,
    wanted: &BTreeSet<K>,
    phase: Phase,
) -> Result<(), EbpfError> {
    let map = ebpf.map_mut(name).ok_or(EbpfError::MissingMap(name))?;
    let mut set: HashMap<&mut MapData, K, u8> =
        HashMap::try_from(map).map_err(EbpfError::map(name))?;
    match phase {
        Phase::AddNew => {
            for key in wanted {
                set.insert(key, PRESENT, 0).map_err(EbpfError::map(name))?;
            }
        }
        Phase::RemoveStale => {
            let present: Vec<K> = set
                .keys()
                .collect::<Result<_, _>>()
                .map_err(EbpfError::map(name))?;
            for key in present.iter().filter(|key| !wanted.contains(key)) {
                set.remove(key).map_err(EbpfError::map(name))?;
            }
        }
    }
    Ok(())
}

fn sync_trie<const N: usize>(
    ebpf: &mut Ebpf,
    name: &'static str,
    wanted: &TrieKeys<N>,
    phase: Phase,
) -> Result<(), EbpfError> {
    let map = ebpf.map_mut(name).ok_or(EbpfError::MissingMap(name))?;
    let mut trie: LpmTrie<&mut MapData, [u8; N], u8> =
        LpmTrie::try_from(map).map_err(EbpfError::map(name))?;
    match phase {
        Phase::AddNew => {
            for (prefix_len, addr) in wanted {
                trie.insert(&Key::new(*prefix_len, *addr), PRESENT, 0)
                    .map_err(EbpfError::map(name))?;
            }
        }
        Phase::RemoveStale => {
            let present: Vec<Key<[u8; N]>> = trie
                .keys()
                .collect::<Result<_, _>>()
                .map_err(EbpfError::map(name))?;
            for key in present {
                if !wanted.contains(&(key.prefix_len(), key.data())) {
                    trie.remove(&key).map_err(EbpfError::map(name))?;
                }
            }
        }
    }
    Ok(())
}

/// Puts the daemon's inbound-plaintext listeners in the slots `steer_inbound` redirects to,
/// replacing an earlier run's (whose sockets are closed, so their slots are empty anyway).
pub fn set_plaintext_listeners(
    ebpf: &mut Ebpf,
    listeners: &[(u32, BorrowedFd<'_>)],
) -> Result<(), EbpfError> {
    let name = MAP_PLAINTEXT_LISTENERS;
    let map = ebpf.map_mut(name).ok_or(EbpfError::MissingMap(name))?;
    let mut sockets: SockMap<&mut MapData> =
        SockMap::try_from(map).map_err(EbpfError::map(name))?;
    for (slot, socket) in listeners {
        sockets
            .set(*slot, socket, 0)
            .map_err(EbpfError::map(name))?;
    }
    Ok(())
}

fn write_config(ebpf: &mut Ebpf, spec: &CaptureSpec, sockmap: bool) -> Result<(), EbpfError> {
    let mut flags = FLAG_ENABLED;
    if spec.ports.is_some() {
        flags |= FLAG_PORT_FILTER;
    }
    if sockmap {
        flags |= FLAG_SOCKMAP;
    }
    let (listener_v6_addr, listener_v6_port) = spec
        .listener_v6
        .map_or(([0; 4], 0), |l| (ipv6_words(l.ip().octets()), l.port()));
    let config = CaptureConfig {
        listener_v4_addr: u32::from_ne_bytes(spec.listener_v4.ip().octets()),
        listener_v6_addr,
        listener_v4_port: spec.listener_v4.port(),
        listener_v6_port,
        flags,
    };
    set_only_slot(ebpf, MAP_CONFIG, config)
}

/// Writes `value` to the one slot of the array map `name`.
pub(super) fn set_only_slot<T: Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    value: T,
) -> Result<(), EbpfError> {
    let map = ebpf.map_mut(name).ok_or(EbpfError::MissingMap(name))?;
    let mut array: Array<&mut MapData, T> = Array::try_from(map).map_err(EbpfError::map(name))?;
    array.set(0, value, 0).map_err(EbpfError::map(name))
}

/// Trie keys: (prefix length, network address bytes).
type TrieKeys<const N: usize> = BTreeSet<(u32, [u8; N])>;

/// Trie keys per family.
fn trie_keys(nets: &[IpNet]) -> (TrieKeys<4>, TrieKeys<16>) {
    let mut v4 = BTreeSet::new();
    let mut v6 = BTreeSet::new();
    for net in nets {
        match net.trunc() {
            IpNet::V4(net) => v4.insert((u32::from(net.prefix_len()), net.network().octets())),
            IpNet::V6(net) => v6.insert((u32::from(net.prefix_len()), net.network().octets())),
        };
    }
    (v4, v6)
}

/// The address as the kernel programs hold it: four network-order words.
pub fn ipv6_words(octets: [u8; 16]) -> [u32; 4] {
    let mut words = [0u32; 4];
    for (word, chunk) in words.iter_mut().zip(octets.chunks_exact(4)) {
        *word = u32::from_ne_bytes(chunk.try_into().expect("chunks_exact(4) yields 4 bytes"));
    }
    words
}
