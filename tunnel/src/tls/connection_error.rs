//! Why a connection to a peer daemon failed, in words that keep three causes apart: the peer
//! refusing us (only possible during the handshake), the peer or the network going away
//! (at any time), and this host running out of something (never the peer's doing). A
//! closed connection means a refusal only while the peer is still judging our certificate:
//! said of a pooled connection that broke later, it sends the operator after certificates
//! when a peer crashed.

use std::{error::Error as StdError, io};

use super::explain::{explain, rustls_error};

/// When the error happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Connecting: TCP, TLS, and the HTTP/2 preface and first answer on a fresh connection
    /// (in TLS 1.3 the server judges our certificate after our side of the handshake is done,
    /// so its refusal can arrive that late).
    Handshake,
    /// On a connection that was up and in use (a pooled connection that broke).
    Established,
}

/// One sentence for what broke a connection to a peer: the TLS reason if there is one in
/// the chain (also inside an `h2::Error`'s I/O error, which h2 keeps apart from the source
/// chain), else what the I/O error or the HTTP/2 error means in `during`.
pub fn describe_connection_error(error: &(dyn StdError + 'static), during: Phase) -> String {
    let io = io_error(error);
    if let Some(tls) = rustls_error(error).or_else(|| io.and_then(|io| rustls_error(io))) {
        return explain(tls);
    }
    if let Some(io) = io {
        return describe_io(io, during);
    }
    if let Some(h2) = find::<h2::Error>(error) {
        return describe_h2(h2);
    }
    error.to_string()
}

/// The first error of type `T` in the source chain.
fn find<'a, T: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// The innermost I/O error in the chain (the one that may carry the OS error code), looking
/// inside h2's errors too.
fn io_error<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a io::Error> {
    let mut current = Some(error);
    while let Some(e) = current {
        let found = e
            .downcast_ref::<io::Error>()
            .or_else(|| e.downcast_ref::<h2::Error>().and_then(h2::Error::get_io));
        if let Some(mut io) = found {
            while let Some(inner) = io.get_ref().and_then(|e| e.downcast_ref::<io::Error>()) {
                io = inner;
            }
            return Some(io);
        }
        current = e.source();
    }
    None
}

fn describe_io(error: &io::Error, during: Phase) -> String {
    if let Some(local) = local_shortage(error) {
        return format!("{local}; a problem of this host, not of the peer");
    }
    match (error.kind(), during) {
        // The server sent its alert and closed while we were still writing: we never got to
        // read the alert, but the meaning is the same.
        (
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted,
            Phase::Handshake,
        ) => "the peer closed the connection during the handshake: it refused our certificate \
              or our TLS parameters (its log says which)"
            .into(),
        (
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted,
            Phase::Established,
        ) => {
            "the peer closed the connection (crashed, restarted, or the network dropped it)".into()
        }
        (io::ErrorKind::ConnectionRefused, _) => "nothing listens on the peer's tunnel port \
             (connection refused): its daemon is not running"
            .into(),
        (io::ErrorKind::TimedOut, Phase::Handshake) => "the peer did not answer in time (TCP \
             timeout): the host is down, or a firewall drops the tunnel port"
            .into(),
        (io::ErrorKind::TimedOut, Phase::Established) => "the peer stopped answering (TCP \
             timeout): the host went down or the network between us broke"
            .into(),
        (io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable, _) => {
            format!("no route to the peer ({error})")
        }
        (io::ErrorKind::NetworkDown, _) => format!("this host's network is down ({error})"),
        _ => error.to_string(),
    }
}

/// What this host ran out of, if that is what the error says.
fn local_shortage(error: &io::Error) -> Option<&'static str> {
    let shortage = match error.raw_os_error() {
        Some(libc::EMFILE) => {
            "this host ran out of file descriptors (EMFILE: the daemon reached its open-file \
             limit, see LimitNOFILE or ulimit -n)"
        }
        Some(libc::ENFILE) => {
            "this host ran out of file descriptors (ENFILE: the system-wide limit, see \
             fs.file-max)"
        }
        Some(libc::ENOBUFS) => "this host ran out of socket buffer memory (ENOBUFS)",
        Some(libc::ENOMEM) => "this host ran out of memory (ENOMEM)",
        // On connect, the source port search found none free.
        Some(libc::EADDRNOTAVAIL) => {
            "this host ran out of local ports for new connections (EADDRNOTAVAIL, see \
             net.ipv4.ip_local_port_range)"
        }
        _ if error.kind() == io::ErrorKind::OutOfMemory => "this host ran out of memory",
        _ => return None,
    };
    Some(shortage)
}

fn describe_h2(error: &h2::Error) -> String {
    let Some(reason) = error.reason() else {
        return format!("HTTP/2 failed: {error}");
    };
    let name = reason_name(reason);
    if error.is_go_away() && error.is_remote() {
        if reason == h2::Reason::NO_ERROR {
            "the peer closed the connection on purpose (GOAWAY: it is shutting down or the \
             connection was idle)"
                .into()
        } else if reason == h2::Reason::ENHANCE_YOUR_CALM {
            "the peer is limiting us (GOAWAY ENHANCE_YOUR_CALM): this identity holds as many \
             connections from this host as the peer allows ([inbound] max_connections_per_peer), \
             or it sent something excessive; the peer's log says which"
                .into()
        } else {
            format!("the peer ended the connection with an HTTP/2 error: {reason} (GOAWAY {name})")
        }
    } else if error.is_reset() && error.is_remote() {
        if reason == h2::Reason::REFUSED_STREAM {
            "the peer refused the stream before processing it (REFUSED_STREAM: at its stream \
             limit, or shutting down)"
                .into()
        } else {
            format!("the peer reset the stream: {reason} ({name})")
        }
    } else if error.is_library() {
        format!("the peer broke the HTTP/2 protocol: {reason} ({name})")
    } else {
        format!("HTTP/2 failed: {reason} ({name})")
    }
}

/// The RFC 9113 name of an HTTP/2 error code.
fn reason_name(reason: h2::Reason) -> String {
    let code = u32::from(reason);
    // h2's Debug is the RFC name for the codes it knows, a struct dump for the others.
    if code <= u32::from(h2::Reason::HTTP_1_1_REQUIRED) {
        format!("{reason:?}")
    } else {
        format!("code {code}")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use rustls::{AlertDescription, CertificateError, OtherError};

    use super::*;

    const HANDSHAKE_CLOSE: &str = "the peer closed the connection during the handshake: it \
                                   refused our certificate or our TLS parameters (its log says \
                                   which)";
    const PEER_GONE: &str =
        "the peer closed the connection (crashed, restarted, or the network dropped it)";

    fn describe(error: &(dyn StdError + 'static), during: Phase) -> String {
        describe_connection_error(error, during)
    }

    #[test]
    fn a_closed_connection_is_a_refusal_only_during_the_handshake() {
        for kind in [
            io::ErrorKind::UnexpectedEof,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::BrokenPipe,
            io::ErrorKind::ConnectionAborted,
        ] {
            let error = io::Error::from(kind);
            assert_eq!(describe(&error, Phase::Handshake), HANDSHAKE_CLOSE);
            assert_eq!(describe(&error, Phase::Established), PEER_GONE);
        }
        // As the kernel reports them, too.
        let reset = io::Error::from_raw_os_error(libc::ECONNRESET);
        assert_eq!(describe(&reset, Phase::Established), PEER_GONE);
        let pipe = io::Error::from_raw_os_error(libc::EPIPE);
        assert_eq!(describe(&pipe, Phase::Handshake), HANDSHAKE_CLOSE);
    }

    #[test]
    fn running_out_of_something_is_named_as_this_hosts_problem() {
        for (code, names) in [
            (libc::EMFILE, "file descriptors (EMFILE"),
            (libc::ENFILE, "file descriptors (ENFILE"),
            (libc::ENOBUFS, "socket buffer memory (ENOBUFS)"),
            (libc::ENOMEM, "memory (ENOMEM)"),
            (
                libc::EADDRNOTAVAIL,
                "local ports for new connections (EADDRNOTAVAIL",
            ),
        ] {
            let wrapped = io::Error::other(io::Error::from_raw_os_error(code));
            for during in [Phase::Handshake, Phase::Established] {
                assert_eq!(
                    describe(&wrapped, during),
                    describe(&io::Error::from_raw_os_error(code), during)
                );
                let text = describe(&io::Error::from_raw_os_error(code), during);
                assert!(
                    text.starts_with(&format!("this host ran out of {names}")),
                    "{text}"
                );
                assert!(
                    text.ends_with("a problem of this host, not of the peer"),
                    "{text}"
                );
                assert!(!text.contains("refused"), "{text}");
            }
        }
    }

    #[test]
    fn a_tls_reason_wins_wherever_it_is_wrapped() {
        let alert = rustls::Error::AlertReceived(AlertDescription::CertificateExpired);
        let in_io = io::Error::new(io::ErrorKind::InvalidData, alert.clone());
        for during in [Phase::Handshake, Phase::Established] {
            assert_eq!(describe(&alert, during), explain(&alert));
            assert_eq!(describe(&in_io, during), explain(&alert));
        }
        let workload = rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(
            Arc::new(io::Error::other("not a node")),
        )));
        assert_eq!(describe(&workload, Phase::Handshake), "not a node");
    }

    #[test]
    fn other_transport_failures_say_what_happened() {
        let refused = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert!(describe(&refused, Phase::Handshake).starts_with("nothing listens"));
        let timeout = io::Error::from_raw_os_error(libc::ETIMEDOUT);
        assert!(describe(&timeout, Phase::Handshake).starts_with("the peer did not answer"));
        assert!(describe(&timeout, Phase::Established).starts_with("the peer stopped answering"));
        let unreachable = io::Error::from_raw_os_error(libc::EHOSTUNREACH);
        assert!(describe(&unreachable, Phase::Established).starts_with("no route to the peer"));
        let other = io::Error::other("something else");
        assert_eq!(describe(&other, Phase::Established), "something else");
    }

    /// An HTTP/2 client connected to a server over an in-memory pipe: the client's request
    /// handle, its connection driver, and the server's connection.
    async fn h2_pair() -> (
        h2::client::SendRequest<Bytes>,
        tokio::task::JoinHandle<Result<(), h2::Error>>,
        h2::server::Connection<tokio::io::DuplexStream, Bytes>,
    ) {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(h2::server::handshake(server_io));
        let (sender, client) = h2::client::handshake(client_io).await.unwrap();
        let driver = tokio::spawn(client);
        let server = server.await.unwrap().unwrap();
        (sender, driver, server)
    }

    fn request() -> http::Request<()> {
        http::Request::builder()
            .method(http::Method::CONNECT)
            .uri("10.0.0.2:8080")
            .body(())
            .unwrap()
    }

    #[tokio::test]
    async fn a_peer_gone_from_a_pooled_connection_is_not_a_refusal() {
        let (sender, _driver, mut server) = h2_pair().await;
        let (response, _send) = sender
            .ready()
            .await
            .unwrap()
            .send_request(request(), false)
            .unwrap();
        // The peer takes the stream, then dies with it open.
        let _stream = server.accept().await.unwrap().unwrap();
        drop(server);
        let error = response.await.unwrap_err();
        assert!(error.is_io(), "{error:?}");
        assert_eq!(describe(&error, Phase::Established), PEER_GONE);
        assert_eq!(describe(&error, Phase::Handshake), HANDSHAKE_CLOSE);
    }

    #[tokio::test]
    async fn a_peer_shutting_down_says_so() {
        let (sender, _driver, mut server) = h2_pair().await;
        let (response, _send) = sender
            .ready()
            .await
            .unwrap()
            .send_request(request(), false)
            .unwrap();
        server.abrupt_shutdown(h2::Reason::NO_ERROR);
        let served = tokio::spawn(async move { while server.accept().await.is_some() {} });
        let error = response.await.unwrap_err();
        served.await.unwrap();
        let text = describe(&error, Phase::Established);
        assert!(
            text.starts_with("the peer closed the connection on purpose (GOAWAY"),
            "{text} ({error:?})"
        );
    }

    #[test]
    fn http2_errors_have_their_rfc_names() {
        let error = h2::Error::from(h2::Reason::FLOW_CONTROL_ERROR);
        assert_eq!(
            describe(&error, Phase::Established),
            "HTTP/2 failed: flow-control protocol violated (FLOW_CONTROL_ERROR)"
        );
        assert_eq!(reason_name(h2::Reason::from(77)), "code 77");
    }
}
