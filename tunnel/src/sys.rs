//! Raw syscalls and socket options that std, socket2 and aya do not wrap. This is the only
//! module of `tunnel` that contains `unsafe`; each block states why it is sound.
#![expect(unsafe_code, reason = "thin wrappers over libc calls, audited here")]

use std::{
    ffi::CString,
    io,
    mem::size_of,
    os::{fd::AsRawFd, unix::ffi::OsStrExt as _},
    path::Path,
};

/// `SO_NETNS_COOKIE` (Linux 5.14, asm-generic value; libc does not export it yet).
const SO_NETNS_COOKIE: libc::c_int = 71;

/// The cookie of the network namespace a socket lives in: the same value the kernel
/// programs get from `bpf_get_netns_cookie`, so both sides key connections alike.
pub fn netns_cookie(socket: &impl AsRawFd) -> io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: `cookie` and `len` are valid for writes of the sizes passed, and the kernel
    // writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

/// Mounts a BPF filesystem at `target` (what `mount -t bpf bpf TARGET` does).
pub fn mount_bpffs(target: &Path) -> io::Result<()> {
    let target = CString::new(target.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call; `data`
    // may be null for bpffs.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn sockets_in_one_namespace_share_a_cookie() {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let b = TcpListener::bind("127.0.0.1:0").unwrap();
        let cookie = netns_cookie(&a).unwrap();
        assert_ne!(cookie, 0);
        assert_eq!(cookie, netns_cookie(&b).unwrap());
    }
}
