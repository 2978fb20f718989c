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
use tunnel_common::{MAP_LOCAL_PEERS, MAP_LOCAL_SENT, PROGRAM_REDIRECT_LOCAL, SocketTuple};

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
        let map = MapData::from_pin(pin).map_err(|source| EbpfError::Map {
            name: MAP_LOCAL_SENT,
            source,
        })?;
        let storage =
            SkStorage::try_from(Map::SkStorage(map)).map_err(|source| EbpfError::Map {
                name: MAP_LOCAL_SENT,
                source,
            })?;
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
