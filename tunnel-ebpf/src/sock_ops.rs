//! `sock_ops`: when a captured connection is established, publish its 4-tuple → original
//! destination, so the daemon can find the destination of the socket it accepts; when the
//! socket closes, delete the entry (the daemon only reads them).
//!
//! Ordering: `ACTIVE_ESTABLISHED` runs on the client while it processes the SYN-ACK, before
//! its final ACK is sent, so the entry exists before the daemon's `accept()` can return.
//!
//! With the sockmap hop on (`FLAG_SOCKMAP`), both ends of such a connection also join
//! `LOCAL_PEERS` before either can send: the application's end here, at
//! `ACTIVE_ESTABLISHED`; the daemon's end in `sock_ops_daemon` (attached to the daemon's
//! cgroup) at `PASSIVE_ESTABLISHED`, when the final ACK reaches the listener, before
//! `accept()` returns it. `redirect_local` then moves each end's sends into the other's
//! receive queue.
//!
//! The called host's hop (the daemon delivering to a workload here) joins the same way the
//! other way round: the daemon marks its socket (makes its `LOCAL_SENT` storage) before
//! `connect()`; `sock_ops_daemon` puts the marked socket in the map at
//! `ACTIVE_ESTABLISHED` and records it in `LOCAL_DELIVERIES`; the workload's accepted socket
//! joins here at `PASSIVE_ESTABLISHED` when its reversed tuple is recorded. The daemon's end
//! is established (and joined) before its final ACK leaves, so before the workload's end
//! can be; whatever either end sends before its peer is in the map goes by TCP.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{
        BPF_ANY, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG, BPF_TCP_CLOSE, bpf_sock,
    },
    helpers::{bpf_get_netns_cookie, generated::bpf_sk_storage_get},
    macros::sock_ops,
    programs::SockOpsContext,
};
use tunnel_common::{
    FLAG_SOCKMAP, LOCAL_JOIN_FAILED, LOCAL_JOINED, OriginalDst, PRESENT, SocketTuple,
};

use crate::{
    maps::{
        CONFIG, LOCAL_DELIVERIES, LOCAL_PEERS, LOCAL_SENT, ORIGINAL_DST_BY_SOCKET,
        ORIGINAL_DST_BY_TUPLE,
    },
    redirect::count,
    tuple::{SocketFields, reversed, socket_tuple},
};
/// `sock_ops` programs return 1; the value only matters for ops that ask for a reply.
const DONE: u32 = 1;

#[sock_ops]
pub fn sock_ops(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => on_established(&ctx),
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB if sockmap_on() => on_delivered(&ctx),
        BPF_SOCK_OPS_STATE_CB if ctx.arg(1) == BPF_TCP_CLOSE => on_close(&ctx),
        _ => {}
    }
    DONE
}

/// The daemon's end of a captured connection (accepted by the outbound listener from a
/// socket `sock_ops` published) and of a delivery it marked. Attached to the daemon's own
/// cgroup.
#[sock_ops]
pub fn sock_ops_daemon(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB if sockmap_on() => {
            let tuple = tuple(&ctx);
            if ORIGINAL_DST_BY_TUPLE.get_ptr(reversed(&tuple)).is_some() {
                join_local_peers(&ctx, tuple);
            }
        }
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB if sockmap_on() && marked_by_daemon(&ctx) => {
            let tuple = tuple(&ctx);
            if LOCAL_DELIVERIES.insert(&tuple, &PRESENT, 0).is_ok() {
                join_local_peers(&ctx, tuple);
            } else {
                count(LOCAL_JOIN_FAILED);
            }
        }
        _ => {}
    }
    DONE
}

/// A workload's end of a delivery whose daemon end joined (see `sock_ops_daemon`).
fn on_delivered(ctx: &SockOpsContext) {
    let tuple = tuple(ctx);
    let daemon_end = reversed(&tuple);
    if LOCAL_DELIVERIES.get_ptr(daemon_end).is_some() {
        let _ = LOCAL_DELIVERIES.remove(daemon_end);
        join_local_peers(ctx, tuple);
    }
}

/// Whether the daemon made this socket's `LOCAL_SENT` storage (before its `connect()`):
/// only delivery sockets have it at `ACTIVE_ESTABLISHED`.
fn marked_by_daemon(ctx: &SockOpsContext) -> bool {
    !socket_storage(ctx, (&raw const LOCAL_SENT).cast_mut().cast(), 0).is_null()
}

/// This socket's value in the socket storage map `map`, made zeroed first with
/// `SK_STORAGE_CREATE` in `flags`; null when there is none (or no socket, or no memory).
fn socket_storage(ctx: &SockOpsContext, map: *mut c_void, flags: u64) -> *mut c_void {
    // SAFETY: `ctx.ops` is the `bpf_sock_ops` context the kernel passed to this program; the
    // verifier lets it read `sk`, typed as a socket pointer that may be null (checked).
    let sk: *mut bpf_sock = unsafe { (*ctx.ops).__bindgen_anon_2.sk };
    if sk.is_null() {
        return core::ptr::null_mut();
    }
    // SAFETY: `map` is a socket storage map (every caller passes one), `sk` a non-null socket
    // from the context; with F_CREATE and no initial value the kernel makes a zeroed value,
    // without it nothing is made. Callers check the result for null.
    unsafe { bpf_sk_storage_get(map, sk.cast(), core::ptr::null_mut(), flags) }
}

fn on_established(ctx: &SockOpsContext) {
    let Some(original) = original_dst(ctx) else {
        return;
    };
    let tuple = tuple(ctx);
    if ORIGINAL_DST_BY_TUPLE.insert(&tuple, &original, 0).is_ok() {
        // Ask for state changes of this socket (only captured ones) to clean up at close.
        let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
        if sockmap_on() {
            join_local_peers(ctx, tuple);
        }
    }
}

fn on_close(ctx: &SockOpsContext) {
    // The only place entries go (the daemon only reads them); a missing one (evicted by the
    // LRU) is no error.
    let _ = ORIGINAL_DST_BY_TUPLE.remove(&tuple(ctx));
}

fn sockmap_on() -> bool {
    CONFIG
        .get(0)
        .is_some_and(|config| config.flags & FLAG_SOCKMAP != 0)
}

/// Gives this socket its count of moved bytes (`LOCAL_SENT`, zero), then puts it in
/// `LOCAL_PEERS` under its own view of the connection. If either fails (memory, or the map
/// is full) the socket stays out of the map and its connection on TCP.
fn join_local_peers(ctx: &SockOpsContext, mut tuple: SocketTuple) {
    let map = (&raw const LOCAL_SENT).cast_mut().cast();
    if socket_storage(ctx, map, SK_STORAGE_CREATE).is_null() {
        count(LOCAL_JOIN_FAILED);
        return;
    }
    // SAFETY: `ctx.ops` is this program's context, valid for its run; the helper reads the
    // socket from it.
    let ops = unsafe { &mut *ctx.ops };
    if LOCAL_PEERS
        .update(&mut tuple, ops, u64::from(BPF_ANY))
        .is_ok()
    {
        count(LOCAL_JOINED);
    } else {
        count(LOCAL_JOIN_FAILED);
    }
}

/// `BPF_SK_STORAGE_GET_F_CREATE`.
const SK_STORAGE_CREATE: u64 = 1;

fn original_dst(ctx: &SockOpsContext) -> Option<OriginalDst> {
    let map = (&raw const ORIGINAL_DST_BY_SOCKET).cast_mut().cast();
    let slot = socket_storage(ctx, map, 0).cast::<OriginalDst>();
    if slot.is_null() {
        None
    } else {
        // SAFETY: `slot` is non-null and points to this socket's `OriginalDst` storage.
        Some(unsafe { *slot })
    }
}

/// The connection as this socket sees it (local end in `src`): for the application's
/// socket, application side first.
fn tuple(ctx: &SockOpsContext) -> SocketTuple {
    socket_tuple(SocketFields {
        // SAFETY: the helper is given this program's own context, as sock_ops programs must.
        netns_cookie: unsafe { bpf_get_netns_cookie(ctx.ops.cast()) },
        family: ctx.family(),
        local_port: ctx.local_port(),
        remote_port: ctx.remote_port(),
        ip4: || (ctx.local_ip4(), ctx.remote_ip4()),
        ip6: || (ctx.local_ip6(), ctx.remote_ip6()),
    })
}
