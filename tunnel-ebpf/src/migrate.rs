//! `migrate_queued` (`sk_reuseport/migrate`, attached to the `SO_REUSEPORT` group of each of
//! the daemon's listeners): when a listener closes, the connections waiting in its accept
//! queue (and those still mid-handshake) move to another listener of the group instead of
//! being reset. That is the moment of a takeover: the old daemon closes its listeners while
//! the new one, bound to the same ports, serves on.
//!
//! The kernel migrates a closing listener's queue only if `net.ipv4.tcp_migrate_req` is set
//! in the namespace, or if the group has a program of this attach type
//! (`BPF_SK_REUSEPORT_SELECT_OR_MIGRATE`, Linux 5.14); attaching one needs no sysctl, which
//! a pod's namespace or a container's read-only `/proc/sys` would not let the daemon set.
//! The program chooses nothing: `SK_PASS` without a selection leaves both the usual choice
//! of a listener and the migration's to the kernel's hash over the group.

use aya_ebpf::{bindings::sk_action::SK_PASS, macros::sk_reuseport, programs::SkReuseportContext};

#[sk_reuseport(migrate)]
pub fn migrate_queued(_ctx: SkReuseportContext) -> u32 {
    SK_PASS
}
