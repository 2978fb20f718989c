//! System calls that std and tokio do not make for us, through nix and socket2 where they
//! wrap them. What neither offers is done here with `unsafe`, each block saying why it is
//! sound: reading `SO_NETNS_COOKIE`, attaching a program with `SO_ATTACH_REUSEPORT_EBPF`,
//! marking the bytes `recv` wrote into a buffer's spare capacity as initialised, handing
//! free heap back to the system (`malloc_trim`), and a thread's priority (`setpriority`). This is the only module of `tunnel` with
//! `unsafe`.
#![expect(
    unsafe_code,
    reason = "five calls nix and socket2 do not wrap, audited here"
)]

use std::{
    io,
    mem::size_of,
    net::SocketAddr,
    os::fd::{AsFd, AsRawFd},
    path::Path,
};

use nix::{
    mount::MsFlags,
    sys::{
        resource::{Resource, getrlimit, setrlimit},
        socket::{setsockopt, sockopt::IpBindAddressNoPort},
    },
};

/// A non-blocking listener made without the runtime, so that it can be made on a thread
/// that has entered a pod's network namespace.
pub fn listen_socket(addr: SocketAddr, backlog: u32) -> io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    // A new daemon binds beside the one it replaces (a DaemonSet's rolling update with
    // surge, or a restart that overlaps): both serve until the old one drains, and the
    // kernel spreads new connections between them. Only the same user (root) can join.
    socket.set_reuse_port(true)?;
    // Accepted sockets inherit it: no Nagle delay on anything the daemon carries, without a
    // setsockopt per connection.
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(socket.into())
}

/// Attaches a loaded `BPF_PROG_TYPE_SK_REUSEPORT` program to the `SO_REUSEPORT` group of
/// `socket`, for the whole group (`SO_ATTACH_REUSEPORT_EBPF`). aya's `SkReuseport::attach`
/// needs the program object, which stays inside its loaded `Ebpf`; nix wraps only the
/// classic-BPF variant of the option.
pub fn attach_reuseport_program(socket: &impl AsFd, program: &impl AsFd) -> io::Result<()> {
    let program = program.as_fd().as_raw_fd();
    // SAFETY: the option value is a valid `c_int` (an fd the caller keeps open for the
    // call) and its exact size is passed; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_EBPF,
            (&raw const program).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `SO_NETNS_COOKIE` (Linux 5.14, asm-generic value): libc does not export it yet, nor do
/// nix or socket2 wrap it.
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

/// Sets IP_BIND_ADDRESS_NO_PORT: a later `bind(addr, 0)` fixes only the address and leaves
/// the port to `connect()`, which can share ports across destinations (bind alone must pick
/// a port unique for every destination, and gets slow as ports run short).
pub fn set_bind_address_no_port(socket: &impl AsFd) -> io::Result<()> {
    Ok(setsockopt(socket, IpBindAddressNoPort, &true)?)
}

/// Reads what is queued on a stream socket into `buf`'s spare capacity, without waiting
/// (`MSG_DONTWAIT`) and without zeroing the capacity first; returns the bytes read (0 at EOF).
pub fn recv_queued(socket: &impl AsFd, buf: &mut bytes::BytesMut) -> io::Result<usize> {
    let n = socket2::SockRef::from(socket)
        .recv_with_flags(buf.spare_capacity_mut(), libc::MSG_DONTWAIT)?;
    // SAFETY: `recv` initialised the first `n` bytes of the spare capacity (it returns at
    // most the length it was given).
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Mounts a BPF filesystem at `target` (what `mount -t bpf bpf TARGET` does).
pub fn mount_bpffs(target: &Path) -> io::Result<()> {
    nix::mount::mount(
        Some("bpf"),
        target,
        Some("bpf"),
        MsFlags::empty(),
        None::<&str>,
    )?;
    Ok(())
}

/// Raises this process's soft limit on open files to its hard limit, returning the new soft
/// limit: every carried connection holds one or two descriptors, and the usual soft default
/// (1024) would cap the daemon at a few hundred connections.
pub fn raise_open_files_limit() -> io::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
        return Ok(hard);
    }
    Ok(soft)
}

/// Lowers the calling thread's scheduling priority to `nice` (Linux: `setpriority` with
/// `PRIO_PROCESS` and a thread id applies to that thread only). Lowering needs no
/// privilege. nix wraps neither call.
pub fn lower_this_thread_priority(nice: i32) -> io::Result<()> {
    let tid = nix::unistd::gettid().as_raw();
    let tid = libc::id_t::try_from(tid).map_err(io::Error::other)?;
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Hands the heap's free pages back to the system (glibc's `malloc_trim(0)`). glibc keeps
/// what the process frees for reuse, and once a block of many megabytes has been freed it
/// serves blocks up to that size from its arenas instead of fresh mappings: the megabytes a
/// big CRL passes through at load (the file, its DER, the sort) would stay resident long
/// after they are freed, and so would a whole list replaced by a short one; so would the
/// 16–256 KiB read buffers of a flood once it has passed (`proxy::budget`). Called after
/// such a release, never on a path that runs per connection. Elsewhere than glibc, nothing.
pub fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes no pointer and only walks glibc's own arenas, each under
    // its lock; it may be called from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
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

    #[test]
    fn an_accepted_connection_has_no_nagle_delay_from_its_listener() {
        let listener = listen_socket("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        listener.set_nonblocking(false).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(accepted.nodelay().unwrap(), "TCP_NODELAY is inherited");
    }

    #[test]
    fn reads_what_is_queued_without_waiting() {
        use std::io::Write as _;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut buf = bytes::BytesMut::with_capacity(64);
        let error = recv_queued(&server, &mut buf).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
        client.write_all(b"hello").unwrap();
        // Loopback delivers at once, but give the kernel a moment on a loaded machine.
        let mut n = 0;
        for _ in 0..100 {
            match recv_queued(&server, &mut buf) {
                Ok(read) => {
                    n = read;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(n, 5);
        assert_eq!(&buf[..], b"hello");
    }

    #[test]
    fn the_open_files_limit_ends_at_the_hard_limit() {
        let raised = raise_open_files_limit().unwrap();
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!((raised, soft), (hard, hard));
    }
}
