//! The data plane. Outbound takes connections the kernel programs captured and carries each
//! as one HBONE stream over a pooled mTLS connection; inbound serves HBONE from peer daemons
//! and delivers to local workloads.

pub mod admission;
pub mod budget;
pub mod copy;
mod deliver;
pub mod destination;
pub mod hbone;
pub mod inbound;
pub mod outbound;
pub mod plaintext;
pub mod pool;
/// Public for the `proxy_protocol` fuzz target (fuzz/).
pub mod proxy_protocol;
mod read_ahead;
mod record_tls_error;
pub mod xfcc;

/// A listening socket with an explicit backlog: a burst of connects larger than the
/// backlog overflows the accept queue, and each overflowed SYN waits a second for its
/// retransmission. An IPv6 address takes only IPv6 (IPV6_V6ONLY), so it can sit next to an
/// IPv4 wildcard on the same port.
pub(crate) fn listen(
    addr: std::net::SocketAddr,
    backlog: u32,
) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::from_std(crate::sys::listen_socket(addr, backlog)?)
}

#[cfg(test)]
mod tests;

/// The next accepted connection, or `None` once a drain is signalled. An accept that fails
/// (EMFILE and friends: this host is out of a resource) is logged, naming `listener`, and
/// retried after a pause instead of spinning on a listener that stays readable.
async fn next_connection(
    listener: &tokio::net::TcpListener,
    drain: &mut crate::drain::DrainWatcher,
    name: &str,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = drain.signaled() => return None,
        };
        match accepted {
            Ok(accepted) => return Some(accepted),
            Err(e) => {
                tracing::warn!(error = %e, "{name} accept failed: this host is out of file descriptors or memory");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
