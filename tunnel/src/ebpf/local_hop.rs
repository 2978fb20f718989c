//! The hop between captured applications and the daemon through a sockmap instead of
//! loopback TCP (`[capture] sockmap`): `redirect_local` (`sk_msg`) attached to
//! `LOCAL_PEERS`, and `sock_ops_daemon` on the daemon's own cgroup, which puts the daemon's
//! end of each captured connection in that map (the application's end joins in `sock_ops`).
//! See `tunnel-ebpf/src/redirect.rs` for what moves and why the order holds.
//!
//! A socket takes the map's `sk_msg` program when it joins, so the program is attached
//! before the config word lets sockets join. The attachment is the map's, not a pinned
//! link's: it lasts while this daemon holds [`RedirectAttached`], and a successor's attach
//! replaces it (the kernel detaches a program at this daemon's exit only if it is still
//! the one attached). Sockets that joined keep the program they joined with.

use std::fs::File;

use aya::{
    Ebpf,
    maps::SockHash,
    programs::{ProgramError, SkMsg, sk_msg::SkMsgLink},
};
use tunnel_common::{MAP_LOCAL_PEERS, PROGRAM_REDIRECT_LOCAL, SocketTuple};

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
