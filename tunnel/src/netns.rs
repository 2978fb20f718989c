//! Sockets inside other network namespaces (a pod's). A socket belongs to the namespace of
//! the thread that created it, for its whole life; so the daemon keeps one dedicated thread
//! that enters a namespace (`setns`), creates what it is asked for, and hands it back. The
//! runtime's own threads never leave the daemon's namespace, and everything created there is
//! served from the one runtime like any other socket.

use std::{
    fs::File,
    io,
    net::IpAddr,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
    sync::{Arc, mpsc},
    thread,
};

use nix::sched::{CloneFlags, setns};
use tokio::sync::oneshot;

/// An open network namespace: holding the file keeps the namespace alive and names it even
/// if its path is unmounted.
#[derive(Debug)]
pub struct Netns {
    file: File,
    path: PathBuf,
}

impl Netns {
    /// Opens `path` (`/var/run/netns/<name>`, `/proc/<pid>/ns/net`); whether it is a network
    /// namespace is known when it is first entered.
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(Self {
            file: File::open(path)?,
            path: path.into(),
        })
    }

    /// The open namespace file (what `setns` and a netns attach take).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The namespace's identity (its nsfs inode), to tell whether a path still names it.
    pub fn inode(&self) -> io::Result<u64> {
        use std::os::unix::fs::MetadataExt as _;
        Ok(self.file.metadata()?.ino())
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// The thread that makes sockets in other namespaces. Cloned freely; the thread ends when
/// the last clone is dropped.
#[derive(Clone, Debug)]
pub struct NetnsThread {
    jobs: mpsc::Sender<Job>,
}

impl NetnsThread {
    pub fn start() -> io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("tunnel-netns".into())
            .spawn(move || {
                // Each job enters its own namespace first: where the last one left the thread
                // does not matter.
                while let Ok(job) = queue.recv() {
                    job();
                }
            })?;
        Ok(Self { jobs })
    }

    /// Runs `make` inside `netns` and returns what it made. The closure must not block: it
    /// holds up every other pod's sockets.
    pub async fn run<T: Send + 'static>(
        &self,
        netns: &Arc<Netns>,
        make: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let (reply, answer) = oneshot::channel();
        let netns = netns.clone();
        let job: Job = Box::new(move || {
            let made = setns(netns.file.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(|e| {
                    io::Error::new(
                        io::Error::from(e).kind(),
                        format!(
                            "cannot enter the network namespace {}: {e}",
                            netns.path.display()
                        ),
                    )
                })
                .and_then(|()| make());
            let _ = reply.send(made);
        });
        self.jobs
            .send(job)
            .map_err(|_| io::Error::other("the network namespace thread has stopped"))?;
        answer
            .await
            .map_err(|_| io::Error::other("the network namespace thread dropped a request"))?
    }

    /// A namespace's [`interface_addresses`] (a pod's IPs).
    pub async fn addresses(&self, netns: &Arc<Netns>) -> io::Result<Vec<IpAddr>> {
        self.run(netns, interface_addresses).await
    }
}

/// The addresses of the calling thread's namespace, loopback and IPv6 link-local aside:
/// those name no host across the network (and on a node every pod's veth has a link-local
/// one).
pub fn interface_addresses() -> io::Result<Vec<IpAddr>> {
    let mut ips = Vec::new();
    for interface in nix::ifaddrs::getifaddrs().map_err(io::Error::from)? {
        let Some(address) = interface.address else {
            continue;
        };
        let ip = if let Some(v4) = address.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = address.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        let link_local_v6 = matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local());
        if !ip.is_loopback() && !link_local_v6 && !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    Ok(ips)
}

/// Where a pod's sockets are made: its namespace, and the thread that enters it. Equal (and
/// hashed) by the namespace it holds, so it can be part of a pool key.
#[derive(Clone, Debug)]
pub struct PodNetwork {
    pub netns: Arc<Netns>,
    pub thread: NetnsThread,
    /// The pod's addresses (found in its namespace at registration).
    pub addresses: Arc<[IpAddr]>,
}

impl PartialEq for PodNetwork {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.netns, &other.netns)
    }
}

impl Eq for PodNetwork {}

impl std::hash::Hash for PodNetwork {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.netns).hash(state);
    }
}

impl PodNetwork {
    /// The pod's address of `other`'s family: what a peer knows the pod by.
    pub fn address_like(&self, other: IpAddr) -> Option<IpAddr> {
        self.addresses
            .iter()
            .copied()
            .find(|ip| ip.is_ipv4() == other.to_canonical().is_ipv4())
    }

    /// A TCP socket of the pod's namespace, for `family`'s addresses. Only its creation
    /// needs the namespace: bind and connect act in the namespace the socket belongs to,
    /// whichever thread calls them.
    pub async fn tcp_socket(&self, ipv6: bool) -> io::Result<tokio::net::TcpSocket> {
        let domain = if ipv6 {
            socket2::Domain::IPV6
        } else {
            socket2::Domain::IPV4
        };
        let socket = self
            .thread
            .run(&self.netns, move || {
                let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
                socket.set_nonblocking(true)?;
                Ok(socket)
            })
            .await?;
        Ok(tokio::net::TcpSocket::from_std_stream(socket.into()))
    }

    /// Connects from inside the pod (its address is the source) to `peer`.
    pub async fn connect(&self, peer: std::net::SocketAddr) -> io::Result<tokio::net::TcpStream> {
        self.tcp_socket(peer.is_ipv6()).await?.connect(peer).await
    }

    /// A listener on `addr` inside the pod's namespace.
    pub async fn listen(
        &self,
        addr: std::net::SocketAddr,
        backlog: u32,
    ) -> io::Result<tokio::net::TcpListener> {
        let listener = self
            .thread
            .run(&self.netns, move || {
                crate::sys::listen_socket(addr, backlog)
            })
            .await?;
        tokio::net::TcpListener::from_std(listener)
    }
}
