//! Kernel side of transparent capture. Each hook is a small program that reads its decisions
//! from maps the daemon fills (see `maps.rs`); nothing here knows about policy or TLS.
//!
//! | program        | hook                   | job                                               |
//! |----------------|------------------------|---------------------------------------------------|
//! | `connect4/6`   | cgroup `connect()`     | redirect captured TCP connects to the daemon      |
//! | `sock_ops`     | cgroup TCP events      | publish the 4-tuple → original destination        |
//! | `getpeername4/6` | cgroup `getpeername()` | show the application the address it dialled     |
//! | `steer_inbound` | netns `sk_lookup`      | steer other hosts' plaintext to the daemon        |
//! | `migrate_queued` | `SO_REUSEPORT` group  | hand a closing listener's queue to its successor  |
//! | `sock_ops_daemon` | daemon's cgroup TCP events | the daemon's end of a captured connection joins `LOCAL_PEERS` |
//! | `redirect_local` | `LOCAL_PEERS` `sk_msg` | move bytes between an application and the daemon without loopback TCP |
#![no_std]
#![no_main]

mod addr;
mod connect;
mod getpeername;
mod maps;
mod migrate;
mod redirect;
mod sock_ops;
mod steer;
mod tuple;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier proves the programs cannot panic; this only satisfies `no_std`.
    loop {}
}

// SAFETY: the kernel reads the program's license from this section, and nothing else in the
// object is named LICENSE, so neither attribute can clash with another symbol or section.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
