//! The key every program gives a TCP connection (`SocketTuple`), from what its hook's
//! context says of the socket. `sock_ops` publishes it and `redirect_local` looks the other
//! end up by it, so both must build it the same way: this is the one place that does.

use tunnel_common::{AF_INET, AF_INET6, SocketTuple};

use crate::addr::v4_mapped;

const AF_INET_SOCKET: u32 = 2;

/// What a hook's context says of a socket, as the kernel lays it out for `sock_ops` and
/// `sk_msg` alike: `local_port` in host order, `remote_port` in network order in the upper
/// 16 bits of the word on little-endian (kernel: `sock_ops_convert_ctx_access`,
/// `sk_msg_convert_ctx_access`).
pub struct SocketFields<Ip4, Ip6> {
    pub netns_cookie: u64,
    pub family: u32,
    pub local_port: u32,
    pub remote_port: u32,
    /// (local, remote) IPv4 addresses, read only for an IPv4 socket.
    pub ip4: Ip4,
    /// (local, remote) IPv6 addresses, read only for an IPv6 socket.
    pub ip6: Ip6,
}

/// The connection as this socket sees it (local end in `src`). A v4-mapped IPv6 socket is
/// keyed as IPv4, which is how the daemon's IPv4 listener sees it.
pub fn socket_tuple<Ip4, Ip6>(fields: SocketFields<Ip4, Ip6>) -> SocketTuple
where
    Ip4: FnOnce() -> (u32, u32),
    Ip6: FnOnce() -> ([u32; 4], [u32; 4]),
{
    let dst_port = u16::from_be(if cfg!(target_endian = "little") {
        (fields.remote_port >> 16) as u16
    } else {
        fields.remote_port as u16
    });
    let mut tuple = SocketTuple {
        netns_cookie: fields.netns_cookie,
        src_port: fields.local_port as u16,
        dst_port,
        ..SocketTuple::default()
    };
    if fields.family == AF_INET_SOCKET {
        let (src, dst) = (fields.ip4)();
        tuple.family = u32::from(AF_INET);
        tuple.src_addr[0] = src;
        tuple.dst_addr[0] = dst;
        return tuple;
    }
    let (src, dst) = (fields.ip6)();
    match (v4_mapped(&src), v4_mapped(&dst)) {
        (Some(src4), Some(dst4)) => {
            tuple.family = u32::from(AF_INET);
            tuple.src_addr[0] = src4;
            tuple.dst_addr[0] = dst4;
        }
        _ => {
            tuple.family = u32::from(AF_INET6);
            tuple.src_addr = src;
            tuple.dst_addr = dst;
        }
    }
    tuple
}

/// The same connection as the other end sees it.
pub fn reversed(tuple: &SocketTuple) -> SocketTuple {
    SocketTuple {
        src_addr: tuple.dst_addr,
        dst_addr: tuple.src_addr,
        src_port: tuple.dst_port,
        dst_port: tuple.src_port,
        ..*tuple
    }
}
