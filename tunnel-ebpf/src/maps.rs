//! The maps shared with the daemon. Names and value types come from `tunnel-common`; the
//! daemon writes the config, tries and sets, and only reads the tuple map (`sock_ops` adds
//! and removes its entries).

use aya_ebpf::{
    btf_maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, SkStorage, SockHash, SockMap},
    macros::btf_map,
};
use tunnel_common::{
    CaptureConfig, IpKey, KernelLayout, LOCAL_COUNTERS, MAX_CIDRS, MAX_EXEMPT_CGROUPS,
    MAX_LOCAL_PEERS, MAX_NODE_ADDRESSES, MAX_POD_ADDRESSES, MAX_POD_LISTENERS, MAX_PORTS,
    MAX_TRACKED_CONNECTIONS, MAX_WORKLOAD_CGROUPS, OriginalDst, PodSteer, SocketTuple,
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

/// Registered pods' addresses: where their plaintext is steered (see `steer_inbound`).
#[btf_map]
pub static POD_ADDRESSES: HashMap<IpKey, PodSteer, { MAX_POD_ADDRESSES as usize }> = HashMap::new();

/// Each pod's plaintext listeners; emptied by the kernel when they close.
#[btf_map]
pub static POD_LISTENERS: SockMap<{ MAX_POD_LISTENERS as usize }> = SockMap::new();

/// The node's own addresses, whose connections to its pods are not steered.
#[btf_map]
pub static NODE_ADDRESSES: HashMap<IpKey, u8, { MAX_NODE_ADDRESSES as usize }> = HashMap::new();

/// Both ends of captured connections to the daemon's outbound listener, and of the daemon's
/// deliveries to workloads of this host, each under its own view of the connection;
/// `redirect_local` is attached to it.
#[btf_map]
pub static LOCAL_PEERS: SockHash<SocketTuple, { MAX_LOCAL_PEERS as usize }> = SockHash::new();

/// On each socket of `LOCAL_PEERS`: bytes it moved, or `LOCAL_ON_TCP` (see
/// `redirect_local`). Lives and dies with the socket. The daemon makes it on a delivery
/// socket before connecting, which is how `sock_ops_daemon` knows that socket.
#[btf_map]
pub static LOCAL_SENT: SkStorage<u64> = SkStorage::new();

/// Deliveries whose daemon end joined `LOCAL_PEERS`, under the daemon's view, until the
/// workload's end joins (`sock_ops` takes the entry then). LRU: an entry no workload end
/// takes (a workload outside the capture cgroup) is dropped when room is needed.
#[btf_map]
pub static LOCAL_DELIVERIES: LruHashMap<SocketTuple, u8, { MAX_TRACKED_CONNECTIONS as usize }> =
    LruHashMap::new();

/// Where this kernel keeps a receiving socket's unread count (written by the daemon).
#[btf_map]
pub static LOCAL_LAYOUT: Array<KernelLayout, 1> = Array::new();

/// What the sockmap hop did, per CPU (`LOCAL_REDIRECTED` and the other indexes).
#[btf_map]
pub static LOCAL_COUNTS: PerCpuArray<u64, { LOCAL_COUNTERS as usize }> = PerCpuArray::new();
