//! HBONE as both ends speak it: HTTP/2 over mTLS on the tunnel port, one CONNECT stream per
//! application connection, `:authority` = the original destination `ip:port`, answered
//! `200` when the inbound side has connected to it.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::{Method, Request, StatusCode};

/// One stream's receive window: enough for a single stream to fill a fast link (the
/// bandwidth-delay product of a 25 Gbit/s, 1 ms path is ~3 MiB).
pub const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
/// The whole connection's receive window, shared by its streams.
pub const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
/// Largest DATA frame we accept; big frames mean fewer frame headers and wakeups per MiB.
pub const MAX_FRAME: u32 = 1024 * 1024;
/// Largest amount h2 buffers per stream before asking for back-pressure.
pub const MAX_SEND_BUFFER: usize = 1024 * 1024;
/// How many encrypted bytes rustls holds before they must be written to the socket. Its
/// default, 64 KiB, makes one system call per 64 KiB of a bulk transfer; a larger batch
/// carries one h2 DATA frame in a handful of writes. Only a busy connection fills it.
const TLS_WRITE_BATCH: usize = 256 * 1024;
/// TLS + HTTP/2 handshakes must finish within this on the inbound side.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Lets a TLS connection that carries HBONE batch [`TLS_WRITE_BATCH`] bytes per write.
pub fn batch_tls_writes<Data>(connection: &mut rustls::ConnectionCommon<Data>) {
    connection.set_buffer_limit(Some(TLS_WRITE_BATCH));
}

/// Applies the shared settings to a client builder.
pub fn client_builder(max_streams: u32) -> h2::client::Builder {
    let mut builder = h2::client::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_concurrent_streams(max_streams)
        .enable_push(false);
    builder
}

/// Applies the shared settings to a server builder.
pub fn server_builder(max_streams: u32) -> h2::server::Builder {
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_concurrent_streams(max_streams);
    builder
}

/// The CONNECT request for one application connection.
pub fn connect_request(destination: SocketAddr) -> Request<()> {
    Request::builder()
        .method(Method::CONNECT)
        .uri(destination.to_string())
        .body(())
        .expect("a socket address is a valid CONNECT authority")
}

/// The destination a CONNECT request names, or why it names none.
pub fn requested_destination<B>(request: &Request<B>) -> Result<SocketAddr, (StatusCode, String)> {
    if request.method() != Method::CONNECT {
        return Err((
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {} (only CONNECT is served)", request.method()),
        ));
    }
    let authority = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    authority.parse().map_err(|_| {
        (
            StatusCode::BAD_REQUEST,
            format!("authority {authority:?} is not an ip:port"),
        )
    })
}

/// An empty response with a status.
pub fn response(status: StatusCode) -> http::Response<()> {
    http::Response::builder()
        .status(status)
        .body(())
        .expect("status-only response is valid")
}

/// Marker for the body type both ends send.
pub type Body = Bytes;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_requests_round_trip_their_destination() {
        for addr in ["10.0.0.2:8080", "[fd00::2]:443"] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(requested_destination(&connect_request(addr)).unwrap(), addr);
        }
    }

    #[test]
    fn other_requests_are_refused_with_a_status() {
        let get = Request::builder()
            .method(Method::GET)
            .uri("http://10.0.0.2:8080/")
            .body(())
            .unwrap();
        assert_eq!(
            requested_destination(&get).unwrap_err().0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        let bad = Request::builder()
            .method(Method::CONNECT)
            .uri("example.org:80")
            .body(())
            .unwrap();
        assert_eq!(
            requested_destination(&bad).unwrap_err().0,
            StatusCode::BAD_REQUEST
        );
    }
}
