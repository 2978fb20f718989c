//! `getpeername4`/`getpeername6`: a captured socket is connected to the daemon's listener,
//! but the application must see the address it dialled (some clients check it, and logs
//! should be truthful). The original destination is on the socket's storage.

use core::ptr::{addr_of_mut, write_volatile};

use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};
use tunnel_common::{AF_INET, OriginalDst};

use crate::{addr::to_v4_mapped, maps::ORIGINAL_DST_BY_SOCKET};

/// `getpeername` hooks must return 1; they can only rewrite the answer.
const DONE: i32 = 1;

#[cgroup_sock_addr(getpeername4)]
pub fn getpeername4(ctx: SockAddrContext) -> i32 {
    if let Some(original) = original_dst(&ctx)
        && original.family == AF_INET
    {
        let sa = ctx.sock_addr;
        // SAFETY: `sa` is this program's `bpf_sock_addr` context; `getpeername4` programs may
        // write `user_ip4` and `user_port`, and the verifier checks the accesses.
        unsafe {
            write_volatile(addr_of_mut!((*sa).user_ip4), original.addr[0]);
            write_volatile(
                addr_of_mut!((*sa).user_port),
                u32::from(original.port.to_be()),
            );
        }
    }
    DONE
}

#[cgroup_sock_addr(getpeername6)]
pub fn getpeername6(ctx: SockAddrContext) -> i32 {
    if let Some(original) = original_dst(&ctx) {
        // An IPv4 destination on an IPv6 socket was dialled in its v4-mapped form.
        let addr = if original.family == AF_INET {
            to_v4_mapped(original.addr[0])
        } else {
            original.addr
        };
        let sa = ctx.sock_addr;
        // SAFETY: `sa` is this program's context; `getpeername6` programs may write
        // `user_ip6` (in 4-byte words, as here) and `user_port`.
        unsafe {
            for (i, word) in addr.iter().enumerate() {
                write_volatile(addr_of_mut!((*sa).user_ip6[i]), *word);
            }
            write_volatile(
                addr_of_mut!((*sa).user_port),
                u32::from(original.port.to_be()),
            );
        }
    }
    DONE
}

fn original_dst(ctx: &SockAddrContext) -> Option<OriginalDst> {
    // SAFETY: `ctx` is this program's context, whose socket the storage belongs to; the
    // pointer is checked for null before use.
    let slot = unsafe { ORIGINAL_DST_BY_SOCKET.get_ptr_mut(ctx) };
    if slot.is_null() {
        None
    } else {
        // SAFETY: `slot` is non-null and points to this socket's `OriginalDst` storage.
        Some(unsafe { *slot })
    }
}
