//! The hops between the daemon and the applications of its host through a sockmap instead
//! of loopback TCP (`[capture] sockmap`): `redirect_local` (`sk_msg`) attached to
//! `LOCAL_PEERS`, and `sock_ops_daemon` on the daemon's own cgroup, which puts the daemon's
//! end of each captured connection in that map (the application's end joins in `sock_ops`),
//! and the daemon's end of each delivery to a workload here that [`DeliveryMarks`] marked
//! (the workload's end joins in `sock_ops`). See `tunnel-ebpf/src/redirect.rs` for what
//! moves and why the order holds.
//!
//! A socket takes the map's `sk_msg` program when it joins, so the program is attached
//! before the config word lets sockets join. The attachment is the map's, not a pinned
//! link's: it lasts while this daemon holds [`RedirectAttached`], and a successor's attach
//! replaces it (the kernel detaches a program at this daemon's exit only if it is still
//! the one attached). Sockets that joined keep the program they joined with.

use std::{fs::File, os::fd::AsRawFd, path::Path, sync::Mutex};

use aya::{
    Ebpf,
    maps::{Map, MapData, SkStorage, SockHash},
    programs::{ProgramError, SkMsg, sk_msg::SkMsgLink},
};
use btf_rs::{Backend, Btf, Type};
use tunnel_common::{
    KERNEL_OFFSET_LIMIT, KernelLayout, LOCAL_MAX_MOVED, LOCAL_MAX_UNREAD, MAP_LOCAL_LAYOUT,
    MAP_LOCAL_PEERS, MAP_LOCAL_SENT, PROGRAM_REDIRECT_LOCAL, SocketTuple,
};

use super::EbpfError;

/// `redirect_local` attached to `LOCAL_PEERS` for as long as this lives (the daemon's life:
/// the loaded object itself is dropped after the install unless pods are served).
pub struct RedirectAttached {
    _link: SkMsgLink,
}

/// Attaches `redirect_local` to `LOCAL_PEERS`.
pub(super) fn attach_redirect(ebpf: &mut Ebpf) -> Result<RedirectAttached, EbpfError> {
    let name = PROGRAM_REDIRECT_LOCAL;
    let failed = |step| {
        move |e: ProgramError| EbpfError::Program {
            step,
            name,
            source: e.into(),
        }
    };
    let map = ebpf
        .map(MAP_LOCAL_PEERS)
        .ok_or(EbpfError::MissingMap(MAP_LOCAL_PEERS))?;
    let peers: SockHash<_, SocketTuple> =
        SockHash::try_from(map).map_err(|source| EbpfError::Map {
            name: MAP_LOCAL_PEERS,
            source,
        })?;
    let map_fd = peers.fd().try_clone().map_err(|e| EbpfError::Program {
        step: "hold the map of",
        name,
        source: ProgramError::from(e).into(),
    })?;
    let program: &mut SkMsg = ebpf
        .program_mut(name)
        .ok_or(EbpfError::MissingProgram(name))?
        .try_into()
        .map_err(failed("find"))?;
    program.load().map_err(failed("load"))?;
    let link = program.attach(&map_fd).map_err(failed("attach"))?;
    let link = program
        .take_link(link)
        .map_err(failed("keep the link of"))?;
    tracing::info!(
        "sockmap hop on: captured applications and the daemon exchange bytes through LOCAL_PEERS"
    );
    Ok(RedirectAttached { _link: link })
}

/// Opens the daemon's own cgroup, where `sock_ops_daemon` is attached.
pub(super) fn daemon_cgroup(path: &std::path::Path) -> Result<File, EbpfError> {
    File::open(path).map_err(|source| EbpfError::OpenCgroup {
        path: path.to_path_buf(),
        source,
    })
}

/// Marks the daemon's delivery sockets for the hop: their `LOCAL_SENT` storage, made before
/// `connect()`, is what lets `sock_ops_daemon` put them in `LOCAL_PEERS` when established.
/// Each mark is one `bpf()` call on the socket's descriptor.
pub struct DeliveryMarks {
    // The lock only serializes the map handle's `&mut` (aya's signature); the call holds
    // no lock in the kernel beyond the socket's own.
    storage: Mutex<SkStorage<MapData, u64>>,
}

impl DeliveryMarks {
    /// Opens `LOCAL_SENT` from its pin.
    pub(super) fn open(pin: &Path) -> Result<Self, EbpfError> {
        let map = MapData::from_pin(pin).map_err(EbpfError::map(MAP_LOCAL_SENT))?;
        let storage =
            SkStorage::try_from(Map::SkStorage(map)).map_err(EbpfError::map(MAP_LOCAL_SENT))?;
        Ok(Self {
            storage: Mutex::new(storage),
        })
    }

    /// Marks `socket` (not yet connected). A failure (memory) leaves that delivery on TCP.
    pub fn mark(&self, socket: &impl AsRawFd) {
        let mut storage = self.storage.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = storage.insert(socket, 0, 0) {
            tracing::debug!(error = %e, "sockmap: a delivery stays on loopback TCP: its socket could not be marked");
        }
    }
}

/// The kernel's own type information.
const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Writes `LOCAL_LAYOUT`: where this kernel keeps a receiving socket's count of redirected
/// bytes not yet read, so `redirect_local` bounds what waits unread rather than what ever
/// moved, and TCP's memory-pressure flag, under which it leaves senders on TCP. A kernel
/// without them (or without BTF) gets zeros and the moved-bytes bound; the log says which
/// bound is in force.
pub(super) fn write_kernel_layout(ebpf: &mut Ebpf) -> Result<(), EbpfError> {
    let found = receiver_unread_count();
    tracing::info!("sockmap: {}", bound_in_force(&found));
    super::maps::set_only_slot(ebpf, MAP_LOCAL_LAYOUT, found.unwrap_or_default())
}

/// Which bound sends a direction back to TCP, given what [`receiver_unread_count`] found
/// (the start log and `tunnel check` say it).
pub fn bound_in_force(found: &Result<KernelLayout, String>) -> String {
    match found {
        Ok(_) => format!(
            "a direction goes back to TCP when its receiver has {} KiB unread",
            LOCAL_MAX_UNREAD / 1024
        ),
        Err(why) => format!(
            "{why}, so each direction moves at most {} KiB through the map, then TCP",
            LOCAL_MAX_MOVED / 1024
        ),
    }
}

/// Where this kernel keeps a receiving socket's unread count, from its BTF, or why it
/// cannot be read (`tunnel check` says which bound the hop will use).
pub fn receiver_unread_count() -> Result<KernelLayout, String> {
    kernel_layout(Path::new(KERNEL_BTF))
}

/// The offsets from the BTF at `path`, or what is missing.
fn kernel_layout(path: &Path) -> Result<KernelLayout, String> {
    let btf = Btf::from_file_with_backend(path, Backend::Mmap)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // `sk_prot` is `__sk_common.skc_prot`; `__sk_common` opens `struct sock`.
    let common = field_offset_from(&btf, "sock", "__sk_common", 0)?;
    Ok(KernelLayout {
        sk_msg_sk_redir: field_offset(&btf, "sk_msg", "sk_redir")?,
        sock_user_data: field_offset(&btf, "sock", "sk_user_data")?,
        psock_unread: field_offset(&btf, "sk_psock", "msg_tot_len")?,
        sock_prot: common + field_offset(&btf, "sock_common", "skc_prot")?,
        proto_memory_pressure: field_offset(&btf, "proto", "memory_pressure")?,
        _reserved: 0,
    })
}

/// Byte offset of `field`, a direct member of `struct name`: non-zero, whole bytes and
/// below the limit the program masks with.
fn field_offset(btf: &Btf, name: &str, field: &str) -> Result<u32, String> {
    field_offset_from(btf, name, field, 1)
}

/// As [`field_offset`], with `lowest` the smallest offset accepted.
fn field_offset_from(btf: &Btf, name: &str, field: &str, lowest: u32) -> Result<u32, String> {
    let missing = || format!("no struct {name}.{field} in the kernel's BTF");
    let types = btf.resolve_types_by_name(name).map_err(|_| missing())?;
    let member = types
        .iter()
        .filter_map(|t| match t {
            Type::Struct(s) => Some(s),
            _ => None,
        })
        .flat_map(|s| s.members.iter())
        .find(|m| btf.resolve_name(*m).is_ok_and(|n| n == field))
        .ok_or_else(missing)?;
    let bits = member.bit_offset();
    let offset = bits / 8;
    if bits % 8 != 0 || offset < lowest || offset >= KERNEL_OFFSET_LIMIT {
        return Err(format!(
            "struct {name}.{field} is at bit {bits}, which the program cannot read"
        ));
    }
    Ok(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_kernels_btf_says_where_a_receivers_unread_count_is() {
        let path = Path::new(KERNEL_BTF);
        if !path.exists() {
            eprintln!("skipped: {KERNEL_BTF} does not exist on this kernel");
            return;
        }
        let layout = kernel_layout(path).expect("the offsets of a 6.18 kernel");
        // `sk_redir` follows the scatterlist ring in `struct sk_msg`; `sk_user_data` is deep in
        // `struct sock`; `msg_tot_len` is after the psock's queues.
        assert!(layout.sk_msg_sk_redir > 64, "{layout:?}");
        assert!(layout.sock_user_data > 64, "{layout:?}");
        assert!(layout.psock_unread > 64, "{layout:?}");
        assert!(
            layout.sock_prot > 0 && layout.proto_memory_pressure > 0,
            "{layout:?}"
        );
        let missing = Btf::from_file_with_backend(path, Backend::Mmap).unwrap();
        assert_eq!(
            field_offset(&missing, "sk_psock", "no_such_field").unwrap_err(),
            "no struct sk_psock.no_such_field in the kernel's BTF"
        );
        assert!(kernel_layout(Path::new("/nonexistent/btf")).is_err());
    }
}
