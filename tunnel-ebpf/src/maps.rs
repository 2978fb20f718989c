//! The maps shared with the daemon. Names and value types come from `tunnel-common`; the
//! daemon writes the config, tries and sets, and only reads the tuple map (`sock_ops` adds
//! and removes its entries).

use aya_ebpf::{
    btf_maps::{Array, HashMap, LpmTrie, LruHashMap, SkStorage, SockMap},
    macros::btf_map,
};
use tunnel_common::{
    CaptureConfig, MAX_CIDRS, MAX_EXEMPT_CGROUPS, MAX_PORTS, MAX_TRACKED_CONNECTIONS,
    MAX_WORKLOAD_CGROUPS, OriginalDst, SocketTuple,
};

#[btf_map]
pub static CONFIG: Array<CaptureConfig, 1> = Array::new();

#[btf_map]
pub static DESTINATIONS_V4: LpmTrie<[u8; 4], u8, { MAX_CIDRS as usize }> = LpmTrie::new();
#[btf_map]
pub static DESTINATIONS_V6: LpmTrie<[u8; 16], u8, { MAX_CIDRS as usize }> = LpmTrie::new();
#[btf_map]
pub static EXCLUDES_V4: LpmTrie<[u8; 4], u8, { MAX_CIDRS as usize }> = LpmTrie::new();
#[btf_map]
pub static EXCLUDES_V6: LpmTrie<[u8; 16], u8, { MAX_CIDRS as usize }> = LpmTrie::new();

#[btf_map]
pub static PORTS: HashMap<u16, u8, { MAX_PORTS as usize }> = HashMap::new();

#[btf_map]
pub static EXEMPT_CGROUPS: HashMap<u64, u8, { MAX_EXEMPT_CGROUPS as usize }> = HashMap::new();

#[btf_map]
pub static WORKLOAD_CGROUPS: HashMap<u64, u8, { MAX_WORKLOAD_CGROUPS as usize }> = HashMap::new();

/// Lives and dies with the application's socket, so it needs no cleanup.
#[btf_map]
pub static ORIGINAL_DST_BY_SOCKET: SkStorage<OriginalDst> = SkStorage::new();

/// `sock_ops` deletes an entry when its socket closes. LRU so that an entry whose close goes
/// unseen (the socket's state callbacks could not be enabled) cannot stay for good, and a
/// full map drops old entries instead of refusing new ones: the least recently used go
/// first, and the daemon uses an entry only once, when it accepts the connection.
#[btf_map]
pub static ORIGINAL_DST_BY_TUPLE: LruHashMap<
    SocketTuple,
    OriginalDst,
    { MAX_TRACKED_CONNECTIONS as usize },
> = LruHashMap::new();

/// Local ports of workloads: connections from other hosts to them are steered.
#[btf_map]
pub static STEER_PORTS: HashMap<u16, u8, { MAX_PORTS as usize }> = HashMap::new();

/// The daemon's inbound-plaintext listeners (IPv4 at 0, IPv6 at 1); emptied by the kernel
/// when they close.
#[btf_map]
pub static PLAINTEXT_LISTENERS: SockMap<2> = SockMap::new();
