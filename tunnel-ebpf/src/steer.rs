//! `steer_inbound` (`sk_lookup`, attached to the daemon's network namespace): a TCP
//! connection from another host to a port a workload owns is handed to the daemon's
//! inbound-plaintext listener instead of the workload, which would otherwise take plaintext
//! from anyone. The listener learns the original destination from the socket's local address
//! (steering changes which socket accepts, not the addresses).
//!
//! Never steered: other ports (the tunnel port among them), and local callers. A connection
//! is local when its source is a loopback address, or is the destination address itself:
//! the kernel gives a connection to one of the host's own addresses that address as its
//! source, unless the caller binds another one. That covers callers on 127.0.0.1 and on the
//! host's own address, and the daemon's own deliveries (it binds the destination address).
//! (The ingress interface does not tell: for a local connection to a non-loopback address
//! the kernel reports the interface that owns the address, not `lo`.) With no daemon, the
//! listener slot is empty and the connection is dropped (the caller sees a reset or a
//! timeout): fail closed.
//!
//! The same program is attached in every registered pod's network namespace. There, a
//! connection to one of the pod's addresses (`POD_ADDRESSES`) from outside the pod, on any
//! port but the pod's HBONE port, goes to the pod's own plaintext listener (its slot in
//! `POD_LISTENERS`; dropped when the slot is empty), unless it comes from one of the node's
//! own addresses (`NODE_ADDRESSES`: the kubelet's probes). A pod's address is checked first:
//! the node's `STEER_PORTS` are about the node's workloads.

use aya_ebpf::{
    bindings::{sk_action::SK_DROP, sk_action::SK_PASS},
    macros::sk_lookup,
    programs::SkLookupContext,
};
use tunnel_common::{AF_INET, IpKey, PLAINTEXT_LISTENER_V4, PLAINTEXT_LISTENER_V6};

use crate::maps::{NODE_ADDRESSES, PLAINTEXT_LISTENERS, POD_ADDRESSES, POD_LISTENERS, STEER_PORTS};

const IPPROTO_TCP: u32 = 6;
/// 127.0.0.0/8, as the first byte of a network-order address.
const LOOPBACK_V4_FIRST_BYTE: u8 = 127;
/// `::1` as four network-order words.
const LOOPBACK_V6: [u32; 4] = [0, 0, 0, u32::from_ne_bytes([0, 0, 0, 1])];

#[sk_lookup]
pub fn steer_inbound(ctx: SkLookupContext) -> u32 {
    // SAFETY: `ctx.lookup` is this program's `bpf_sk_lookup` context, valid for reads for
    // the whole run; the verifier checks each field access.
    let lookup = unsafe { &*ctx.lookup };
    if lookup.protocol != IPPROTO_TCP || is_local(lookup) {
        return SK_PASS;
    }
    // `local_port` is in host byte order in this context.
    let port = lookup.local_port as u16;
    // SAFETY: lookups in hash maps of plain values; the values are copied out at once.
    if let Some(steer) = unsafe { POD_ADDRESSES.get(&local_key(lookup)) }.copied() {
        if port == steer.hbone_port || unsafe { NODE_ADDRESSES.get(&remote_key(lookup)) }.is_some()
        {
            return SK_PASS;
        }
        return match POD_LISTENERS.redirect_sk_lookup(&ctx, steer.slot, 0) {
            Ok(()) => SK_PASS,
            // The pod's listener is gone (no daemon): refuse, never the pod's application.
            Err(_) => SK_DROP,
        };
    }
    // SAFETY: a lookup in a hash map of plain values; the value is not kept.
    if unsafe { STEER_PORTS.get(&port) }.is_none() {
        return SK_PASS;
    }
    let slot = if lookup.family == u32::from(AF_INET) {
        PLAINTEXT_LISTENER_V4
    } else {
        PLAINTEXT_LISTENER_V6
    };
    match PLAINTEXT_LISTENERS.redirect_sk_lookup(&ctx, slot, 0) {
        Ok(()) => SK_PASS,
        // No listener (no daemon): refuse rather than let the workload take plaintext.
        Err(_) => SK_DROP,
    }
}

/// The address the connection is for.
fn local_key(lookup: &aya_ebpf::bindings::bpf_sk_lookup) -> IpKey {
    ip_key(lookup.family, lookup.local_ip4, &lookup.local_ip6)
}

/// The address the connection comes from.
fn remote_key(lookup: &aya_ebpf::bindings::bpf_sk_lookup) -> IpKey {
    ip_key(lookup.family, lookup.remote_ip4, &lookup.remote_ip6)
}

/// One end's address as the maps key it: the IPv4 field, or the IPv6 one, by family.
#[inline(always)]
fn ip_key(family: u32, ip4: u32, ip6: &[u32; 4]) -> IpKey {
    let addr = if family == u32::from(AF_INET) {
        [ip4, 0, 0, 0]
    } else {
        words(ip6)
    };
    IpKey { addr, family }
}

/// An address field of the context, read one word at a time: the verifier only allows
/// loads at a constant offset from the context pointer, and a whole-array copy compiles to
/// a moved pointer.
#[inline(always)]
fn words(field: &[u32; 4]) -> [u32; 4] {
    // SAFETY: `field` is a field of the live context; each read is an aligned u32 inside it.
    unsafe {
        [
            core::ptr::read_volatile(&field[0]),
            core::ptr::read_volatile(&field[1]),
            core::ptr::read_volatile(&field[2]),
            core::ptr::read_volatile(&field[3]),
        ]
    }
}

/// Whether the caller is on this host (see the module doc).
fn is_local(lookup: &aya_ebpf::bindings::bpf_sk_lookup) -> bool {
    if lookup.family == u32::from(AF_INET) {
        let remote = lookup.remote_ip4;
        remote == lookup.local_ip4 || remote.to_ne_bytes()[0] == LOOPBACK_V4_FIRST_BYTE
    } else {
        let remote = lookup.remote_ip6;
        remote == lookup.local_ip6 || remote == LOOPBACK_V6
    }
}
