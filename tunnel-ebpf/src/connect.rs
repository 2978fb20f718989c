//! `connect4`/`connect6`: decide whether a TCP connect is captured and, if so, remember the
//! destination on the socket and send the connect to the daemon's outbound listener.
//!
//! Never captured, whatever the maps say: non-TCP sockets, loopback and unspecified
//! destinations, and processes in an exempt cgroup (the daemon itself, so its own upstream
//! connections cannot loop back into it).

use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

use aya_ebpf::{
    btf_maps::lpm_trie::Key,
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_pid_tgid,
    },
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use tunnel_common::{
    AF_INET, AF_INET6, CaptureConfig, FLAG_ENABLED, FLAG_PORT_FILTER, MAX_CGROUP_DEPTH, OriginalDst,
};

use crate::{
    addr::{
        is_loopback_or_any_v4, is_loopback_or_any_v6, to_v4_mapped, v4_bytes, v4_mapped, v6_bytes,
    },
    maps::{
        CONFIG, DESTINATIONS_V4, DESTINATIONS_V6, EXCLUDES_V4, EXCLUDES_V6, EXEMPT_CGROUPS,
        ORIGINAL_DST_BY_SOCKET, PORTS, WORKLOAD_CGROUPS,
    },
};

const SOCK_STREAM: u32 = 1;
const IPPROTO_TCP: u32 = 6;
/// Return value that lets `connect()` proceed (with whatever address the program left).
const ALLOW: i32 = 1;
/// Return value that fails `connect()` with EPERM. Used when a connection should be captured
/// but its destination cannot be recorded: better refused than sent in plaintext.
const REFUSE: i32 = 0;

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    match try_connect4(&ctx) {
        Ok(()) => ALLOW,
        Err(()) => REFUSE,
    }
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    match try_connect6(&ctx) {
        Ok(()) => ALLOW,
        Err(()) => REFUSE,
    }
}

fn try_connect4(ctx: &SockAddrContext) -> Result<(), ()> {
    let Some(config) = capturing_config(ctx) else {
        return Ok(());
    };
    let sa = ctx.sock_addr;
    // The verifier wants 4-byte context accesses here; volatile keeps LLVM from widening them.
    // SAFETY: `sa` is the `bpf_sock_addr` context the kernel passed to this program, valid
    // for the whole run; the verifier checks each access to it (field, offset, size).
    let dst = unsafe { read_volatile(addr_of!((*sa).user_ip4)) };
    // SAFETY: as above.
    let port = u16::from_be(unsafe { read_volatile(addr_of!((*sa).user_port)) } as u16);
    if is_loopback_or_any_v4(dst) || !wants_v4(dst, port) {
        return Ok(());
    }
    record(ctx, [dst, 0, 0, 0], port, AF_INET)?;
    // SAFETY: the same context; `connect4` programs may write `user_ip4` and `user_port`,
    // which is how the connect is sent elsewhere.
    unsafe {
        write_volatile(addr_of_mut!((*sa).user_ip4), config.listener_v4_addr);
        write_volatile(
            addr_of_mut!((*sa).user_port),
            u32::from(config.listener_v4_port.to_be()),
        );
    }
    Ok(())
}

fn try_connect6(ctx: &SockAddrContext) -> Result<(), ()> {
    let Some(config) = capturing_config(ctx) else {
        return Ok(());
    };
    let sa = ctx.sock_addr;
    let dst = read_ip6(ctx);
    // SAFETY: `sa` is this program's `bpf_sock_addr` context; the verifier checks the access.
    let port = u16::from_be(unsafe { read_volatile(addr_of!((*sa).user_port)) } as u16);
    if is_loopback_or_any_v6(&dst) {
        return Ok(());
    }
    // A dual-stack socket dialling ::ffff:a.b.c.d is an IPv4 connection (Java does this by
    // default): judge it by the IPv4 maps and send it to the IPv4 listener, v4-mapped.
    let (listener, listener_port) = if let Some(v4) = v4_mapped(&dst) {
        if !wants_v4(v4, port) {
            return Ok(());
        }
        record(ctx, [v4, 0, 0, 0], port, AF_INET)?;
        (
            to_v4_mapped(config.listener_v4_addr),
            config.listener_v4_port,
        )
    } else {
        if !wants_v6(&dst, port) {
            return Ok(());
        }
        // Capture configured for IPv6 without an IPv6 listener would be a daemon bug; refuse
        // rather than let the connect leave untouched.
        if config.listener_v6_port == 0 {
            return Err(());
        }
        record(ctx, dst, port, AF_INET6)?;
        (config.listener_v6_addr, config.listener_v6_port)
    };
    // SAFETY: `sa` is this program's context; `connect6` programs may write `user_ip6` and
    // `user_port`, in 4-byte words as here.
    unsafe {
        for (i, word) in listener.iter().enumerate() {
            write_volatile(addr_of_mut!((*sa).user_ip6[i]), *word);
        }
        write_volatile(
            addr_of_mut!((*sa).user_port),
            u32::from(listener_port.to_be()),
        );
    }
    Ok(())
}

/// The config if this is a TCP connect and capture is on.
fn capturing_config(ctx: &SockAddrContext) -> Option<CaptureConfig> {
    let sa = ctx.sock_addr;
    // SAFETY: `sa` is this program's `bpf_sock_addr` context; `type` and `protocol` are
    // readable from every sock_addr hook, and the verifier checks the accesses.
    let (sock_type, protocol) = unsafe {
        (
            read_volatile(addr_of!((*sa).type_)),
            read_volatile(addr_of!((*sa).protocol)),
        )
    };
    if sock_type != SOCK_STREAM || protocol != IPPROTO_TCP {
        return None;
    }
    let config = *CONFIG.get(0)?;
    if config.flags & FLAG_ENABLED == 0 {
        return None;
    }
    Some(config)
}

fn wants_v4(dst: u32, port: u16) -> bool {
    let key = Key::new(32, v4_bytes(dst));
    port_selected(port)
        && EXCLUDES_V4.get(&key).is_none()
        && DESTINATIONS_V4.get(&key).is_some()
        && !caller_exempt()
}

fn wants_v6(dst: &[u32; 4], port: u16) -> bool {
    let key = Key::new(128, v6_bytes(dst));
    port_selected(port)
        && EXCLUDES_V6.get(&key).is_none()
        && DESTINATIONS_V6.get(&key).is_some()
        && !caller_exempt()
}

fn port_selected(port: u16) -> bool {
    match CONFIG.get(0) {
        // SAFETY: `get` is unsafe because another CPU may change or delete the value while
        // the returned reference lives; only the key's presence is used here.
        Some(config) if config.flags & FLAG_PORT_FILTER != 0 => unsafe {
            PORTS.get(port).is_some()
        },
        _ => true,
    }
}

fn caller_exempt() -> bool {
    // SAFETY: a helper without arguments, available to cgroup sock_addr programs.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: only the key's presence is used, never the value another CPU might change.
    unsafe { EXEMPT_CGROUPS.get(cgroup).is_some() }
}

/// Attaches the original destination to the socket; the kernel frees it with the socket.
fn record(ctx: &SockAddrContext, addr: [u32; 4], port: u16, family: u16) -> Result<(), ()> {
    let value = OriginalDst {
        addr,
        // SAFETY: a helper without arguments, available to cgroup sock_addr programs.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        workload_cgroup_id: workload_cgroup(),
        pid: (bpf_get_current_pid_tgid() >> 32) as u32,
        port,
        family,
    };
    // SAFETY: `ctx` is this program's context, whose socket the storage is attached to; the
    // pointer returned is checked for null before use.
    let slot = unsafe { ORIGINAL_DST_BY_SOCKET.get_or_insert_ptr_mut(ctx, None) };
    if slot.is_null() {
        return Err(());
    }
    // SAFETY: `slot` is non-null and points to this socket's storage, an `OriginalDst` (the
    // map's BTF says so), which the kernel keeps for the socket's life.
    unsafe { *slot = value };
    Ok(())
}

/// The deepest ancestor-or-self of the caller's cgroup that is a workload cgroup, or 0.
/// Walking root → leaf and keeping the last hit is "longest cgroup path wins".
fn workload_cgroup() -> u64 {
    let mut found = 0;
    for level in 0..MAX_CGROUP_DEPTH {
        // SAFETY: the helper takes a plain level and returns 0 beyond the caller's depth.
        let ancestor = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
        if ancestor == 0 {
            break; // deeper than the caller's own cgroup
        }
        // SAFETY: only the key's presence is used, never the value another CPU might change.
        if unsafe { WORKLOAD_CGROUPS.get(ancestor).is_some() } {
            found = ancestor;
        }
    }
    found
}

fn read_ip6(ctx: &SockAddrContext) -> [u32; 4] {
    let sa = ctx.sock_addr;
    let mut out = [0u32; 4];
    for (i, word) in out.iter_mut().enumerate() {
        // SAFETY: `sa` is this program's context; `user_ip6` is read in 4-byte words, as the
        // verifier requires.
        *word = unsafe { read_volatile(addr_of!((*sa).user_ip6[i])) };
    }
    out
}
