//! Delivery to a local workload: the one place the daemon connects to a workload's port,
//! for tunnelled streams and for plaintext passed in permissive or audit mode.

use std::{io, net::SocketAddr, time::Duration};

use tokio::{
    io::AsyncWriteExt as _,
    net::{TcpSocket, TcpStream},
};

use crate::{ebpf::DeliveryMarks, netns::PodNetwork, sys};

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("the destination is not an address of this host")]
    NotLocal,
    /// This host ran out of something (file descriptors, memory, ports): not the
    /// workload's doing, and said so.
    #[error("this host is out of resources to connect: {0}")]
    LocalResources(io::Error),
    #[error("the workload did not accept the connection: {0}")]
    Failed(io::Error),
}

impl DialError {
    fn local(error: io::Error) -> Self {
        match error.raw_os_error() {
            Some(
                libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL,
            ) => Self::LocalResources(error),
            _ => Self::Failed(error),
        }
    }
}

/// Connects to a destination of this host. Binding the source to the destination address
/// first proves the address is local (the kernel refuses with EADDRNOTAVAIL otherwise,
/// unless non-local binds are allowed, which `nonlocal_bind` keeps the daemon from running
/// with), so a CONNECT can never make the daemon dial another machine.
/// `preamble` (a PROXY protocol header) is written before anything else. With `marks` (the
/// sockmap hop on) the socket is marked before it connects, so its bytes to and from the
/// workload move through the sockmap.
pub async fn dial_local(
    dst: SocketAddr,
    timeout: Duration,
    preamble: Option<&[u8]>,
    via: Option<&PodNetwork>,
    marks: Option<&DeliveryMarks>,
) -> Result<TcpStream, DialError> {
    // A pod's workload is reached from inside its namespace, where its address is local.
    let socket = match via {
        Some(pod) => pod.tcp_socket(dst.is_ipv6()).await,
        None if dst.is_ipv4() => TcpSocket::new_v4(),
        None => TcpSocket::new_v6(),
    }
    .map_err(DialError::local)?;
    // The address check stays exact; only the choice of port moves to connect().
    let _ = sys::set_bind_address_no_port(&socket);
    match socket.bind(SocketAddr::new(dst.ip(), 0)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => return Err(DialError::NotLocal),
        Err(e) => return Err(DialError::local(e)),
    }
    if let Some(marks) = marks {
        marks.mark(&socket);
    }
    let mut stream = tokio::time::timeout(timeout, socket.connect(dst))
        .await
        .map_err(|_| {
            DialError::Failed(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
        })?
        .map_err(DialError::local)?;
    let _ = stream.set_nodelay(true);
    if let Some(preamble) = preamble {
        stream.write_all(preamble).await.map_err(DialError::local)?;
    }
    Ok(stream)
}
