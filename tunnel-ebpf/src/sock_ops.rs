//! `sock_ops`: when a captured connection is established, publish its 4-tuple → original
//! destination, so the daemon can find the destination of the socket it accepts; when the
//! socket closes, delete the entry (the daemon only reads them).
//!
//! Ordering: `ACTIVE_ESTABLISHED` runs on the client while it processes the SYN-ACK, before
//! its final ACK is sent, so the entry exists before the daemon's `accept()` can return.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG,
        BPF_TCP_CLOSE, bpf_sock,
    },
    helpers::{bpf_get_netns_cookie, generated::bpf_sk_storage_get},
    macros::sock_ops,
    programs::SockOpsContext,
};
use tunnel_common::{AF_INET, OriginalDst, SocketTuple};

use crate::{
    addr::v4_mapped,
    maps::{ORIGINAL_DST_BY_SOCKET, ORIGINAL_DST_BY_TUPLE},
};

const AF_INET_SOCKET: u32 = 2;
/// `sock_ops` programs return 1; the value only matters for ops that ask for a reply.
const DONE: u32 = 1;

#[sock_ops]
pub fn sock_ops(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => on_established(&ctx),
        BPF_SOCK_OPS_STATE_CB if ctx.arg(1) == BPF_TCP_CLOSE => on_close(&ctx),
        _ => {}
    }
    DONE
}

fn on_established(ctx: &SockOpsContext) {
    let Some(original) = original_dst(ctx) else {
        return;
    };
    let tuple = tuple(ctx);
    if ORIGINAL_DST_BY_TUPLE.insert(&tuple, &original, 0).is_ok() {
        // Ask for state changes of this socket (only captured ones) to clean up at close.
        let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
    }
}

fn on_close(ctx: &SockOpsContext) {
    // The only place entries go (the daemon only reads them); a missing one (evicted by the
    // LRU) is no error.
    let _ = ORIGINAL_DST_BY_TUPLE.remove(&tuple(ctx));
}

fn original_dst(ctx: &SockOpsContext) -> Option<OriginalDst> {
    // SAFETY: `ctx.ops` is the `bpf_sock_ops` context the kernel passed to this program; the
    // verifier lets it read `sk`, typed as a socket pointer that may be null (checked below).
    let sk: *mut bpf_sock = unsafe { (*ctx.ops).__bindgen_anon_2.sk };
    if sk.is_null() {
        return None;
    }
    let map = (&raw const ORIGINAL_DST_BY_SOCKET)
        .cast_mut()
        .cast::<c_void>();
    // SAFETY: `map` is the socket storage map, `sk` a non-null socket from the context; with
    // flags 0 nothing is created, so no initial value is needed; the result is checked for
    // null before use.
    let slot = unsafe { bpf_sk_storage_get(map, sk.cast(), core::ptr::null_mut(), 0) }
        .cast::<OriginalDst>();
    if slot.is_null() {
        None
    } else {
        // SAFETY: `slot` is non-null and points to this socket's `OriginalDst` storage.
        Some(unsafe { *slot })
    }
}

/// The connection as the application's socket sees it (local = application side). A
/// v4-mapped IPv6 socket is keyed as IPv4, which is how the daemon's IPv4 listener sees it.
fn tuple(ctx: &SockOpsContext) -> SocketTuple {
    // SAFETY: the helper is given this program's own context, as sock_ops programs must.
    let netns_cookie = unsafe { bpf_get_netns_cookie(ctx.ops.cast()) };
    // local_port is host order; remote_port is network order in the upper 16 bits on
    // little-endian (kernel: sock_ops_convert_ctx_access).
    let src_port = ctx.local_port() as u16;
    let dst_port = u16::from_be(if cfg!(target_endian = "little") {
        (ctx.remote_port() >> 16) as u16
    } else {
        ctx.remote_port() as u16
    });
    let mut tuple = SocketTuple {
        netns_cookie,
        src_port,
        dst_port,
        ..SocketTuple::default()
    };
    if ctx.family() == AF_INET_SOCKET {
        tuple.family = u32::from(AF_INET);
        tuple.src_addr[0] = ctx.local_ip4();
        tuple.dst_addr[0] = ctx.remote_ip4();
        return tuple;
    }
    let (src, dst) = (ctx.local_ip6(), ctx.remote_ip6());
    match (v4_mapped(&src), v4_mapped(&dst)) {
        (Some(src4), Some(dst4)) => {
            tuple.family = u32::from(AF_INET);
            tuple.src_addr[0] = src4;
            tuple.dst_addr[0] = dst4;
        }
        _ => {
            tuple.family = u32::from(tunnel_common::AF_INET6);
            tuple.src_addr = src;
            tuple.dst_addr = dst;
        }
    }
    tuple
}
