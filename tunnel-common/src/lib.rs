//! Types shared by the kernel programs (`tunnel-ebpf`) and the daemon (`tunnel`): map names,
//! `#[repr(C)]` keys and values, flags. Data only; all logic lives on either side.
//!
//! Byte order: addresses are kept exactly as the kernel hands them to BPF programs (network
//! order, read as a native `u32` word), so neither side swaps them. Ports are host order
//! everywhere in these types; the programs convert at the context boundary.
#![no_std]

/// Map: `Array<CaptureConfig, 1>`, written by the daemon at start.
pub const MAP_CONFIG: &str = "CONFIG";
/// Maps: `LpmTrie<[u8; 4|16], u8>`, the capture destinations and exclusions per family.
pub const MAP_DESTINATIONS_V4: &str = "DESTINATIONS_V4";
pub const MAP_DESTINATIONS_V6: &str = "DESTINATIONS_V6";
pub const MAP_EXCLUDES_V4: &str = "EXCLUDES_V4";
pub const MAP_EXCLUDES_V6: &str = "EXCLUDES_V6";
/// Map: `HashMap<u16, u8>`, destination ports to capture when [`FLAG_PORT_FILTER`] is set.
pub const MAP_PORTS: &str = "PORTS";
/// Map: `HashMap<u64, u8>`, cgroup ids whose connects are never captured (the daemon's own).
pub const MAP_EXEMPT_CGROUPS: &str = "EXEMPT_CGROUPS";
/// Map: `HashMap<u64, u8>`, cgroup ids of the configured workloads. At connect time the
/// deepest ancestor of the caller's cgroup found here is recorded as its workload.
pub const MAP_WORKLOAD_CGROUPS: &str = "WORKLOAD_CGROUPS";
/// Map: `SkStorage<OriginalDst>`, the original destination attached to the application's
/// socket; the kernel frees it with the socket.
pub const MAP_ORIGINAL_DST_BY_SOCKET: &str = "ORIGINAL_DST_BY_SOCKET";
/// Map: `LruHashMap<SocketTuple, OriginalDst>`, how the daemon finds the original destination
/// of a connection it accepted. `sock_ops` inserts an entry when a captured connection is
/// established and deletes it when the application's socket closes; the daemon only reads
/// it, once per accepted connection.
pub const MAP_ORIGINAL_DST_BY_TUPLE: &str = "ORIGINAL_DST_BY_TUPLE";

/// Map: `HashMap<u16, u8>`, local ports owned by workloads. Connections from other hosts to
/// these ports are steered to the daemon's inbound-plaintext listener (`steer_inbound`).
pub const MAP_STEER_PORTS: &str = "STEER_PORTS";
/// Map: `SockMap`, the daemon's inbound-plaintext listeners at [`PLAINTEXT_LISTENER_V4`]
/// and [`PLAINTEXT_LISTENER_V6`]. The kernel removes a socket when it closes, so with no
/// daemon the slots are empty and steered connections are refused.
pub const MAP_PLAINTEXT_LISTENERS: &str = "PLAINTEXT_LISTENERS";
pub const PLAINTEXT_LISTENER_V4: u32 = 0;
pub const PLAINTEXT_LISTENER_V6: u32 = 1;

/// Map: `HashMap<IpKey, PodSteer>`, every registered pod's addresses. `steer_inbound`,
/// attached in each pod's network namespace too, hands a connection to one of them from
/// outside the pod and its node, on any port but the pod's HBONE port, to the pod's own
/// plaintext listener in [`MAP_POD_LISTENERS`] (or drops it if that slot is empty).
pub const MAP_POD_ADDRESSES: &str = "POD_ADDRESSES";
/// Map: `SockMap`, each registered pod's plaintext listeners (one slot per pod and family,
/// given out by the daemon).
pub const MAP_POD_LISTENERS: &str = "POD_LISTENERS";
/// Map: `HashMap<IpKey, u8>`, the node's own addresses: connections from the node to its
/// pods (the kubelet's probes) are not steered.
pub const MAP_NODE_ADDRESSES: &str = "NODE_ADDRESSES";

/// Map: `SockHash<SocketTuple>`, both ends of each captured application's connection to the
/// daemon's outbound listener, and both ends of the daemon's deliveries to workloads of this
/// host, each keyed by its own view of the connection (local end in `src`) when the sockmap
/// hop is on ([`FLAG_SOCKMAP`]). `redirect_local`, attached to it,
/// moves what one end sends straight into the other's receive queue. The kernel removes a
/// socket when it closes.
pub const MAP_LOCAL_PEERS: &str = "LOCAL_PEERS";
/// Map: `SkStorage<u64>`, on each socket of [`MAP_LOCAL_PEERS`]: the bytes it has moved
/// through the map, or [`LOCAL_ON_TCP`] once it has gone back to TCP for good (its share
/// spent, or no peer found). Made when the socket joins, freed with it.
/// The daemon makes it (value 0) on a delivery socket before its `connect()`: the mark that
/// lets that socket join when it is established.
pub const MAP_LOCAL_SENT: &str = "LOCAL_SENT";
/// [`MAP_LOCAL_SENT`]'s value for a sender that stays on TCP.
pub const LOCAL_ON_TCP: u64 = u64::MAX;
/// Bytes one direction of a connection may move through the sockmap before it goes back to
/// TCP. Moved bytes wait in the receiver's queue outside TCP's flow control and memory
/// accounting: a receiver slower than its sender would let them pile up until the host's
/// TCP memory ran out, and then the sender's writes fail with ENOMEM (iperf3 through the
/// hop: "Cannot allocate memory"). TCP's own default receive buffer (`tcp_rmem`'s middle
/// value) bounds what waits unread, as TCP would let it.
pub const LOCAL_MAX_MOVED: u64 = 128 * 1024;
/// Bytes that may wait unread in the receiver's queue of redirected messages before a
/// direction goes back to TCP, where the kernel says how many wait ([`KernelLayout`] known):
/// the same bound as [`LOCAL_MAX_MOVED`], on what waits instead of on what ever moved, so a
/// connection whose receiver keeps up (requests and responses) stays on the map for good. A
/// sender can overshoot it by one message (the one whose redirect revealed the queue).
pub const LOCAL_MAX_UNREAD: u64 = 128 * 1024;
/// Map: `Array<KernelLayout, 1>`, where this kernel keeps what `redirect_local` reads of
/// the receiving socket (from its BTF, written by the daemon); all zero when unknown, and
/// then [`LOCAL_MAX_MOVED`] bounds each direction instead.
pub const MAP_LOCAL_LAYOUT: &str = "LOCAL_LAYOUT";
/// Map: `PerCpuArray<u64>`, messages `redirect_local` moved ([`LOCAL_REDIRECTED`]) and left
/// on TCP ([`LOCAL_FELL_BACK`]), sockets that joined [`MAP_LOCAL_PEERS`]
/// ([`LOCAL_JOINED`]) and those the map refused ([`LOCAL_JOIN_FAILED`]: full).
pub const MAP_LOCAL_COUNTS: &str = "LOCAL_COUNTS";
pub const LOCAL_REDIRECTED: u32 = 0;
pub const LOCAL_FELL_BACK: u32 = 1;
pub const LOCAL_JOINED: u32 = 2;
pub const LOCAL_JOIN_FAILED: u32 = 3;
pub const LOCAL_COUNTERS: u32 = 4;
/// Map: `LruHashMap<SocketTuple, u8>`, the daemon's deliveries that joined
/// [`MAP_LOCAL_PEERS`] (under the daemon's view), until the workload's end of the
/// connection is established and joins too. LRU: a workload outside the capture cgroup
/// never consumes its entry.
pub const MAP_LOCAL_DELIVERIES: &str = "LOCAL_DELIVERIES";

/// Every map the programs use; the daemon pins each under `<bpf_dir>/maps-v<LAYOUT>/`.
pub const MAP_NAMES: [&str; 20] = [
    MAP_CONFIG,
    MAP_DESTINATIONS_V4,
    MAP_DESTINATIONS_V6,
    MAP_EXCLUDES_V4,
    MAP_EXCLUDES_V6,
    MAP_PORTS,
    MAP_EXEMPT_CGROUPS,
    MAP_WORKLOAD_CGROUPS,
    MAP_ORIGINAL_DST_BY_SOCKET,
    MAP_ORIGINAL_DST_BY_TUPLE,
    MAP_STEER_PORTS,
    MAP_PLAINTEXT_LISTENERS,
    MAP_POD_ADDRESSES,
    MAP_POD_LISTENERS,
    MAP_NODE_ADDRESSES,
    MAP_LOCAL_PEERS,
    MAP_LOCAL_SENT,
    MAP_LOCAL_COUNTS,
    MAP_LOCAL_DELIVERIES,
    MAP_LOCAL_LAYOUT,
];

/// Version of the map layout above. A daemon only reuses pinned maps of its own layout; a
/// change to any type in this file must bump it. A map added to the list needs no bump: a
/// daemon that finds it unpinned makes it, and one that does not know it leaves it alone.
pub const MAP_LAYOUT_VERSION: u32 = 3;

/// Registered pods' addresses (two per dual-stack pod).
pub const MAX_POD_ADDRESSES: u32 = 4096;
/// Slots for pods' plaintext listeners (one per pod and family).
pub const MAX_POD_LISTENERS: u32 = 4096;
/// The node's own addresses.
pub const MAX_NODE_ADDRESSES: u32 = 256;

/// Capacity of each destination/exclusion trie.
pub const MAX_CIDRS: u32 = 1024;
/// Capacity of the port filter, and of the steered-port set.
pub const MAX_PORTS: u32 = 1024;
/// Capacity of the exempt-cgroup set.
pub const MAX_EXEMPT_CGROUPS: u32 = 64;
/// Capacity of the workload-cgroup set.
pub const MAX_WORKLOAD_CGROUPS: u32 = 4096;
/// How deep below the cgroup v2 root a workload cgroup may be (the root is level 0).
pub const MAX_CGROUP_DEPTH: u32 = 32;
/// Capacity of the tuple map: captured connections open at once (an entry lives from
/// establishment to close). Beyond it the LRU map drops the least recently used entries,
/// those of connections the daemon accepted long ago and will not look up again.
pub const MAX_TRACKED_CONNECTIONS: u32 = 65536;
/// Sockets in [`MAP_LOCAL_PEERS`], two per connection (captured or delivered). Past it a
/// connection keeps the TCP path (its insertion fails; nothing is evicted).
pub const MAX_LOCAL_PEERS: u32 = 2 * MAX_TRACKED_CONNECTIONS;

/// Program names, as the `#[...]` attributes in `tunnel-ebpf` name the functions.
pub const PROGRAM_CONNECT4: &str = "connect4";
pub const PROGRAM_CONNECT6: &str = "connect6";
pub const PROGRAM_GETPEERNAME4: &str = "getpeername4";
pub const PROGRAM_GETPEERNAME6: &str = "getpeername6";
pub const PROGRAM_SOCK_OPS: &str = "sock_ops";
/// `sock_ops` on the daemon's own cgroup: its end of a captured connection, and its end of
/// a delivery it marked, join [`MAP_LOCAL_PEERS`].
pub const PROGRAM_SOCK_OPS_DAEMON: &str = "sock_ops_daemon";
/// The `sk_msg` program, attached to [`MAP_LOCAL_PEERS`] (not a cgroup).
pub const PROGRAM_REDIRECT_LOCAL: &str = "redirect_local";
/// The `sk_lookup` program, attached to the daemon's network namespace (not a cgroup).
pub const PROGRAM_STEER_INBOUND: &str = "steer_inbound";
/// The `sk_reuseport/migrate` program, attached to each listener's `SO_REUSEPORT` group.
pub const PROGRAM_MIGRATE_QUEUED: &str = "migrate_queued";

/// `CaptureConfig::flags`: only destination ports in [`MAP_PORTS`] are captured.
pub const FLAG_PORT_FILTER: u32 = 1;
/// `CaptureConfig::flags`: the daemon has written the config; nothing is captured before.
pub const FLAG_ENABLED: u32 = 2;
/// `CaptureConfig::flags`: the loopback hop between applications and the daemon goes
/// through [`MAP_LOCAL_PEERS`] (`[capture] sockmap`).
pub const FLAG_SOCKMAP: u32 = 4;

/// Value stored in the tries and sets (presence is what counts).
pub const PRESENT: u8 = 1;

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Where captured connections are sent, and how capture is filtered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct CaptureConfig {
    /// IPv4 outbound listener, network order.
    pub listener_v4_addr: u32,
    /// IPv6 outbound listener, network order; all zero when IPv6 is not captured.
    pub listener_v6_addr: [u32; 4],
    pub listener_v4_port: u16,
    pub listener_v6_port: u16,
    pub flags: u32,
}

/// Byte offsets of the kernel fields `redirect_local` reads: behind the unread count of a
/// socket in [`MAP_LOCAL_PEERS`], `struct sk_msg`'s `sk_redir` (the receiver a redirect
/// chose), `struct sock`'s `sk_user_data` (its `struct sk_psock`, tagged in the low bits)
/// and `struct sk_psock`'s `msg_tot_len` (bytes of redirected messages not yet read; Linux
/// 6.18 has it); behind TCP's memory pressure, `struct sock`'s `sk_prot` (in its
/// `__sk_common`) and `struct proto`'s `memory_pressure`. Each is below
/// [`KERNEL_OFFSET_LIMIT`]; zero means unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct KernelLayout {
    pub sk_msg_sk_redir: u32,
    pub sock_user_data: u32,
    pub psock_unread: u32,
    pub sock_prot: u32,
    pub proto_memory_pressure: u32,
    pub _reserved: u32,
}

/// Offsets in [`KernelLayout`] are masked to this in the program (the verifier needs the
/// bound to add one to the context pointer); the daemon refuses a layout past it.
pub const KERNEL_OFFSET_LIMIT: u32 = 4096;

/// The destination an application dialled, and who dialled it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct OriginalDst {
    /// Network order; IPv4 in word 0.
    pub addr: [u32; 4],
    /// cgroup v2 id of the calling process at connect time.
    pub cgroup_id: u64,
    /// The deepest ancestor-or-self of `cgroup_id` that is in [`MAP_WORKLOAD_CGROUPS`]
    /// (longest cgroup path wins); 0 when the caller belongs to no workload.
    pub workload_cgroup_id: u64,
    /// Thread-group id (pid) of the calling process, for logs.
    pub pid: u32,
    pub port: u16,
    /// [`AF_INET`] or [`AF_INET6`]. A v4-mapped IPv6 destination is stored as IPv4.
    pub family: u16,
}

/// One TCP connection as the application's socket sees it: application side is `src`, the
/// daemon's listener is `dst`. IPv4 (and v4-mapped IPv6) in word 0 of the address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct SocketTuple {
    /// Network namespace cookie, so equal tuples in two namespaces never meet.
    pub netns_cookie: u64,
    pub src_addr: [u32; 4],
    pub dst_addr: [u32; 4],
    pub src_port: u16,
    pub dst_port: u16,
    pub family: u32,
}

/// An IPv4 or IPv6 address as `sk_lookup` gives it: network order, IPv4 in word 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(C)]
pub struct IpKey {
    pub addr: [u32; 4],
    /// [`AF_INET`] or [`AF_INET6`], widened.
    pub family: u32,
}

/// Where a pod's plaintext goes: its listener's slot in [`MAP_POD_LISTENERS`], and the
/// port that is never steered (the pod's HBONE listener's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PodSteer {
    pub slot: u32,
    pub hbone_port: u16,
    pub _pad: u16,
}

// The sizes and alignments the `aya::Pod` SAFETY notes below rely on, each the sum of its
// fields: a field added, removed or reordered into padding fails the build on both sides.
const _: () = assert!(size_of::<CaptureConfig>() == 4 + 16 + 2 + 2 + 4); // 28
const _: () = assert!(align_of::<CaptureConfig>() == 4);
const _: () = assert!(size_of::<OriginalDst>() == 16 + 8 + 8 + 4 + 2 + 2); // 40
const _: () = assert!(align_of::<OriginalDst>() == 8);
const _: () = assert!(size_of::<SocketTuple>() == 8 + 16 + 16 + 2 + 2 + 4); // 48
const _: () = assert!(align_of::<SocketTuple>() == 8);
const _: () = assert!(size_of::<IpKey>() == 16 + 4); // 20
const _: () = assert!(align_of::<IpKey>() == 4);
const _: () = assert!(size_of::<PodSteer>() == 4 + 2 + 2); // 8
const _: () = assert!(align_of::<PodSteer>() == 4);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `repr(C)` structs of integers with no implicit padding: each size is the
    // sum of its fields' sizes (checked at compile time above), which leaves no room for
    // padding. `CaptureConfig` is 28 bytes, 4-aligned (u32s and u16s only); `OriginalDst`
    // (40) and `SocketTuple` (48) are 8-aligned by their u64s, and every field starts at an
    // offset that is a multiple of its own alignment.
    unsafe impl aya::Pod for super::CaptureConfig {}
    unsafe impl aya::Pod for super::KernelLayout {}
    unsafe impl aya::Pod for super::OriginalDst {}
    unsafe impl aya::Pod for super::SocketTuple {}
    // SAFETY: as above: `IpKey` is 5 u32s (20 bytes, 4-aligned), `PodSteer` a u32 and two
    // u16s (8 bytes, 4-aligned).
    unsafe impl aya::Pod for super::IpKey {}
    unsafe impl aya::Pod for super::PodSteer {}
}

#[cfg(test)]
mod tests {
    use core::mem::size_of;

    use super::*;

    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(size_of::<CaptureConfig>(), 4 + 16 + 2 + 2 + 4);
        assert_eq!(size_of::<OriginalDst>(), 16 + 8 + 8 + 4 + 2 + 2);
        assert_eq!(size_of::<SocketTuple>(), 8 + 16 + 16 + 2 + 2 + 4);
        assert_eq!(size_of::<IpKey>(), 16 + 4);
        assert_eq!(size_of::<PodSteer>(), 4 + 2 + 2);
    }
}
