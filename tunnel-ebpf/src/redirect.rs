//! `redirect_local` (`sk_msg`, attached to `LOCAL_PEERS`): what one end of a captured
//! connection sends to the other end on this host (the application to the daemon's
//! outbound listener, and back) goes straight into the other end's receive queue, without a
//! trip through loopback TCP (segments, ACKs, softirq work on both ends). The FIN and a
//! reset still go through TCP; they follow the bytes, which were queued when sent.
//!
//! Order: both ends join `LOCAL_PEERS` before either can send (see `sock_ops`), so from the
//! first byte each direction is redirected. A receiver reads the bytes queued by redirects
//! before those TCP queued, so a direction may go from the map to TCP (what it sent earlier
//! is read first) but never back: once on TCP, a sender stays there (`LOCAL_SENT` says
//! `LOCAL_ON_TCP`). It goes there when it finds no peer (the map was full) and when its
//! receiver has `LOCAL_MAX_UNREAD` bytes of redirected messages unread: those wait outside
//! TCP's flow control, so only that much (and the message that showed it) may wait. A
//! receiver that keeps up (requests and responses, however many) stays on the map; a bulk
//! transfer faster than its reader goes to TCP once the reader falls behind. The unread count
//! is the receiver's psock's `msg_tot_len`, read through the redirect's choice of receiver
//! (`sk_msg.sk_redir`) at offsets the daemon found in the kernel's BTF (`LOCAL_LAYOUT`).
//! Without them (a kernel without that count) the bound is on the bytes ever moved
//! instead: `LOCAL_MAX_MOVED` per direction, then TCP.
//!
//! A sender also goes to TCP, before its message moves, while TCP is under memory pressure
//! (the protocol's `memory_pressure`, read through the sender's `sk_prot`): a redirected
//! message is charged to the receiver like TCP's own, but where TCP makes a sender wait for
//! memory, the redirect fails the sender's write with ENOMEM, which applications (and the
//! daemon) take as fatal. Seen in the hardening test, whose attack takes the TCP memory of
//! the one kernel its test hosts share: with the hop on, a legitimate download was reset.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_F_INGRESS, sk_action::SK_PASS},
    helpers::{
        bpf_get_netns_cookie, bpf_probe_read_kernel,
        generated::{bpf_sk_storage_get, bpf_skc_to_tcp_sock},
    },
    macros::sk_msg,
    programs::SkMsgContext,
};
use tunnel_common::{
    KERNEL_OFFSET_LIMIT, KernelLayout, LOCAL_FELL_BACK, LOCAL_MAX_MOVED, LOCAL_MAX_UNREAD,
    LOCAL_ON_TCP, LOCAL_REDIRECTED, SocketTuple,
};

use crate::{
    maps::{LOCAL_COUNTS, LOCAL_LAYOUT, LOCAL_PEERS, LOCAL_SENT},
    tuple::{SocketFields, reversed, socket_tuple},
};

#[sk_msg]
pub fn redirect_local(ctx: SkMsgContext) -> u32 {
    let Some(moved) = moved_by(&ctx) else {
        // Every socket of the map has its count from when it joined; one without cannot be
        // told apart from one that went back to TCP, so it stays there.
        count(LOCAL_FELL_BACK);
        return SK_PASS;
    };
    // SAFETY: this socket's own storage, valid while the program runs; the socket's lock,
    // held by the send, serializes its messages.
    let already = unsafe { *moved };
    if already == LOCAL_ON_TCP {
        // Nothing more to read or decide (the bulk of a long transfer).
        count(LOCAL_FELL_BACK);
        return SK_PASS;
    }
    let size = u64::from(ctx.size());
    let layout = kernel_layout();
    let may_move = match layout {
        Some(layout) => !tcp_memory_pressure(&ctx, &layout),
        None => already.saturating_add(size) <= LOCAL_MAX_MOVED,
    };
    if may_move {
        let mut peer = reversed(&tuple(&ctx));
        // Sets the redirect and answers SK_PASS when the peer is in the map, SK_DROP when it
        // is not; the verdict is what this program returns.
        let flags = u64::from(BPF_F_INGRESS);
        if LOCAL_PEERS.redirect_msg(&ctx, &mut peer, flags) == i64::from(SK_PASS) {
            let next = match layout {
                // This message goes; the next ones go by TCP once the receiver is behind.
                Some(layout) => match unread_by_receiver(&ctx, &layout) {
                    Some(unread) if unread + size <= LOCAL_MAX_UNREAD => already + size,
                    _ => LOCAL_ON_TCP,
                },
                None => already + size,
            };
            // SAFETY: as above.
            unsafe { *moved = next };
            count(LOCAL_REDIRECTED);
            return SK_PASS;
        }
    }
    // SAFETY: as above.
    unsafe { *moved = LOCAL_ON_TCP };
    count(LOCAL_FELL_BACK);
    SK_PASS
}

/// The daemon's `LOCAL_LAYOUT`, if it found every offset.
fn kernel_layout() -> Option<KernelLayout> {
    let layout = *LOCAL_LAYOUT.get(0)?;
    let offsets = [
        layout.sk_msg_sk_redir,
        layout.sock_user_data,
        layout.psock_unread,
        layout.sock_prot,
        layout.proto_memory_pressure,
    ];
    offsets.iter().all(|o| *o != 0).then_some(layout)
}

/// Whether the sender's protocol (TCP) is under memory pressure; `true` when it cannot be
/// read (then the sender goes to TCP, which is always safe).
fn tcp_memory_pressure(ctx: &SkMsgContext, layout: &KernelLayout) -> bool {
    // SAFETY: `ctx.msg` is this program's context; the verifier lets it read `sk`.
    let sk = unsafe { (*ctx.msg).__bindgen_anon_3.sk };
    if sk.is_null() {
        return true;
    }
    // SAFETY: `sk` is the context's non-null socket; the helper answers null for one that
    // is not TCP. The result is only used as an address to copy from.
    let tcp = unsafe { bpf_skc_to_tcp_sock(sk.cast()) };
    if tcp.is_null() {
        return true;
    }
    let prot = tcp
        .cast::<u8>()
        .wrapping_add((layout.sock_prot & (KERNEL_OFFSET_LIMIT - 1)) as usize);
    let Some(proto) = read_kernel::<u64>(prot) else {
        return true;
    };
    let Some(flag_address) = read_kernel::<u64>(at(proto, layout.proto_memory_pressure)) else {
        return true;
    };
    if flag_address == 0 {
        // A protocol without the flag is never under pressure.
        return false;
    }
    read_kernel::<u64>(at(flag_address, 0)) != Some(0)
}

/// Bytes of redirected messages the receiver `redirect_msg` just chose has not read yet,
/// or `None` if they cannot be read (then the sender goes to TCP).
fn unread_by_receiver(ctx: &SkMsgContext, layout: &KernelLayout) -> Option<u64> {
    // The context is the kernel's `struct sk_msg`; the mask keeps the verifier's bound on
    // the pointer it is added to (the daemon writes no offset past the limit).
    let sk_redir = ctx
        .msg
        .cast::<u8>()
        .wrapping_add((layout.sk_msg_sk_redir & (KERNEL_OFFSET_LIMIT - 1)) as usize);
    let receiver = read_kernel::<u64>(sk_redir)?;
    if receiver == 0 {
        return None;
    }
    let psock = read_kernel::<u64>(at(receiver, layout.sock_user_data))?;
    if psock & SK_USER_DATA_PSOCK == 0 {
        return None;
    }
    let unread = read_kernel::<u32>(at(psock & SK_USER_DATA_PTRMASK, layout.psock_unread))?;
    Some(u64::from(unread))
}

/// `SK_USER_DATA_PSOCK`: the tag on `sk_user_data` when it is a psock.
const SK_USER_DATA_PSOCK: u64 = 4;
/// `SK_USER_DATA_PTRMASK`: `sk_user_data` without its tags (the low three bits).
const SK_USER_DATA_PTRMASK: u64 = !7;

/// The kernel address `offset` bytes into the object at `base`.
fn at(base: u64, offset: u32) -> *const u8 {
    (base + u64::from(offset)) as *const u8
}

/// A `T` copied from kernel memory at `address`; `None` where nothing can be read there.
fn read_kernel<T>(address: *const u8) -> Option<T> {
    // SAFETY: the helper copies kernel memory without faulting (a bad address is an error,
    // answered with `None`); every caller reads a plain integer, valid for any bits.
    unsafe { bpf_probe_read_kernel(address.cast::<T>()) }.ok()
}

/// The sending socket's count in `LOCAL_SENT` (made when it joined the map).
fn moved_by(ctx: &SkMsgContext) -> Option<*mut u64> {
    // SAFETY: `ctx.msg` is the `sk_msg_md` context the kernel passed to this program; the
    // verifier lets it read `sk`, the sending socket.
    let sk = unsafe { (*ctx.msg).__bindgen_anon_3.sk };
    if sk.is_null() {
        return None;
    }
    let map = (&raw const LOCAL_SENT).cast_mut().cast::<c_void>();
    // SAFETY: `map` is a socket storage map and `sk` a non-null socket from the context;
    // flags 0 creates nothing, so no initial value is needed; the result is checked.
    let slot = unsafe { bpf_sk_storage_get(map, sk.cast(), core::ptr::null_mut(), 0) };
    (!slot.is_null()).then_some(slot.cast::<u64>())
}

/// Adds one to this CPU's counter `index` of `LOCAL_COUNTS`.
pub fn count(index: u32) {
    if let Some(counter) = LOCAL_COUNTS.get_ptr_mut(index) {
        // SAFETY: a per-CPU array slot, valid for the map's life and touched only by this CPU
        // while the program runs.
        unsafe { *counter += 1 };
    }
}

/// The connection as the sending socket sees it, keyed as `sock_ops` keys it.
fn tuple(ctx: &SkMsgContext) -> SocketTuple {
    // SAFETY: `ctx.msg` is the `sk_msg_md` context the kernel passed to this program.
    let md = unsafe { &*ctx.msg };
    socket_tuple(SocketFields {
        // SAFETY: the helper is given this program's own context.
        netns_cookie: unsafe { bpf_get_netns_cookie(ctx.msg.cast()) },
        family: md.family,
        local_port: md.local_port,
        remote_port: md.remote_port,
        ip4: || (md.local_ip4, md.remote_ip4),
        ip6: || (md.local_ip6, md.remote_ip6),
    })
}
