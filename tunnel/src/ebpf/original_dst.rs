//! Finding the original destination of an accepted connection: `sock_ops` published the
//! application's 4-tuple with what it dialled; the daemon looks it up with the accepted
//! socket's peer and local addresses, seen from the other end. `sock_ops` deletes the entry
//! when the application's socket closes, so the daemon only reads.

use std::net::{IpAddr, SocketAddr};

use aya::maps::{HashMap, Map, MapData, MapError};
use tunnel_common::{AF_INET, AF_INET6, MAP_ORIGINAL_DST_BY_TUPLE, OriginalDst, SocketTuple};

use super::{EbpfError, maps::ipv6_words};

/// What the application dialled, and who dialled it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OriginalDestination {
    pub addr: SocketAddr,
    pub pid: u32,
    /// cgroup of the calling process.
    pub cgroup_id: u64,
    /// The workload cgroup the caller belongs to (deepest match), if any.
    pub workload_cgroup_id: Option<u64>,
}

/// Read access to the tuple map. Lookups are one `bpf()` syscall and take `&self`, so the
/// table is shared by all accept loops without a lock.
pub struct OriginalDstTable {
    map: HashMap<MapData, SocketTuple, OriginalDst>,
}

impl OriginalDstTable {
    pub fn new(map: Map) -> Result<Self, EbpfError> {
        let map = HashMap::try_from(map).map_err(|source| EbpfError::Map {
            name: MAP_ORIGINAL_DST_BY_TUPLE,
            source,
        })?;
        Ok(Self { map })
    }

    /// The map itself, for `/debug/capture`'s metadata.
    pub(super) fn map_data(&self) -> &MapData {
        use aya::maps::IterableMap as _;
        self.map.map()
    }

    /// How many connections are published now: one `bpf()` syscall per entry (see
    /// `inventory`).
    pub(super) fn entries(&self) -> Result<u64, MapError> {
        let mut n = 0;
        for key in self.map.keys() {
            key?;
            n += 1;
        }
        Ok(n)
    }

    /// `peer` is the application's end of the connection, `local` the listener's, and
    /// `netns_cookie` the namespace of the listening socket.
    pub fn lookup(
        &self,
        netns_cookie: u64,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Result<Option<OriginalDestination>, MapError> {
        let key = tuple(netns_cookie, peer, local);
        match self.map.get(&key, 0) {
            Ok(value) => Ok(Some(destination(&value))),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The key exactly as `sock_ops` builds it: v4-mapped addresses count as IPv4.
fn tuple(netns_cookie: u64, peer: SocketAddr, local: SocketAddr) -> SocketTuple {
    let (peer_ip, local_ip) = (peer.ip().to_canonical(), local.ip().to_canonical());
    let mut tuple = SocketTuple {
        netns_cookie,
        src_port: peer.port(),
        dst_port: local.port(),
        ..SocketTuple::default()
    };
    match (peer_ip, local_ip) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            tuple.family = u32::from(AF_INET);
            tuple.src_addr[0] = u32::from_ne_bytes(src.octets());
            tuple.dst_addr[0] = u32::from_ne_bytes(dst.octets());
        }
        (src, dst) => {
            tuple.family = u32::from(AF_INET6);
            tuple.src_addr = ipv6_words(to_v6(src).octets());
            tuple.dst_addr = ipv6_words(to_v6(dst).octets());
        }
    }
    tuple
}

fn to_v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn destination(value: &OriginalDst) -> OriginalDestination {
    let ip = if value.family == AF_INET {
        IpAddr::from(value.addr[0].to_ne_bytes())
    } else {
        let mut octets = [0u8; 16];
        for (chunk, word) in octets.chunks_exact_mut(4).zip(value.addr) {
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        IpAddr::from(octets)
    };
    OriginalDestination {
        addr: SocketAddr::new(ip, value.port),
        pid: value.pid,
        cgroup_id: value.cgroup_id,
        workload_cgroup_id: (value.workload_cgroup_id != 0).then_some(value.workload_cgroup_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_mapped_peers_are_keyed_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:40000".parse().unwrap();
        let plain: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:15001".parse().unwrap();
        assert_eq!(tuple(7, mapped, local), tuple(7, plain, local));
        assert_eq!(tuple(7, plain, local).family, u32::from(AF_INET));
    }

    #[test]
    fn decodes_both_families() {
        let v4 = OriginalDst {
            addr: [u32::from_ne_bytes([10, 0, 0, 2]), 0, 0, 0],
            port: 8080,
            family: AF_INET,
            ..OriginalDst::default()
        };
        assert_eq!(destination(&v4).addr, "10.0.0.2:8080".parse().unwrap());
        let v6 = OriginalDst {
            addr: ipv6_words("fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets()),
            port: 443,
            family: AF_INET6,
            workload_cgroup_id: 9,
            ..OriginalDst::default()
        };
        assert_eq!(destination(&v6).addr, "[fd00::2]:443".parse().unwrap());
        assert_eq!(destination(&v6).workload_cgroup_id, Some(9));
    }
}
