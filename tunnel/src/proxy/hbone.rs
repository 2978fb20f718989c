//! HBONE as both ends speak it: HTTP/2 over mTLS on the tunnel port, one CONNECT stream per
//! application connection, `:authority` = the original destination `ip:port`, answered
//! `200` when the inbound side has connected to it.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use http::{Method, Request, StatusCode};

/// One stream's receive window: enough for a single stream to fill a fast link (the
/// bandwidth-delay product of a 25 Gbit/s, 1 ms path is ~3 MiB).
pub const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
/// The whole connection's receive window, shared by its streams, when the buffer budget
/// can give it (`budget::WINDOW_TIERS`).
pub const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
/// Largest DATA frame we accept; big frames mean fewer frame headers and wakeups per MiB.
pub const MAX_FRAME: u32 = 1024 * 1024;
/// Largest amount h2 buffers per stream before asking for back-pressure. The copy loop
/// reads at most this much at a time (`copy::MAX_READ`), so one read is in h2 while the next
/// is taken. It is a per-stream cost a peer can make us pay by never reading, so it is
/// kept small: streams × this is the send side of a connection's memory bound.
pub const MAX_SEND_BUFFER: usize = 256 * 1024;
/// Largest header block accepted (HPACK-decoded). A CONNECT needs a few hundred bytes; a
/// larger block is answered 431 by h2, and CONTINUATION frames past it are refused, so a
/// peer cannot make us buffer headers without bound.
pub const MAX_HEADER_LIST: u32 = 16 * 1024;
/// How many encrypted bytes rustls holds before they must be written to the socket. Its
/// default, 64 KiB, makes one system call per 64 KiB of a bulk transfer; a larger batch
/// carries one h2 DATA frame in a handful of writes. Only a busy connection fills it.
pub const TLS_WRITE_BATCH: usize = 256 * 1024;

/// What a connection's large TLS buffers take at most, charged to the buffer budget: the
/// write batch and the read-ahead.
pub const LARGE_TLS_BUFFERS: usize = TLS_WRITE_BATCH + super::read_ahead::READ_AHEAD;

/// Lets a TLS connection that carries HBONE batch [`TLS_WRITE_BATCH`] bytes per write and
/// read up to `READ_AHEAD` bytes per system call.
pub fn use_large_tls_buffers<IO, Data>(
    io: &mut super::read_ahead::ReadAhead<IO>,
    connection: &mut rustls::ConnectionCommon<Data>,
) {
    connection.set_buffer_limit(Some(TLS_WRITE_BATCH));
    io.switch_on();
}

/// Applies the shared settings to a client builder, with the receive window the buffer
/// budget gave the connection.
pub fn client_builder(max_streams: u32, connection_window: u32) -> h2::client::Builder {
    let mut builder = h2::client::Builder::new();
    builder
        .max_header_list_size(MAX_HEADER_LIST)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(connection_window)
        .max_frame_size(MAX_FRAME)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_concurrent_streams(max_streams)
        .enable_push(false);
    builder
}

/// Applies the shared settings to a server builder, with the receive window the buffer
/// budget gave the connection.
pub fn server_builder(max_streams: u32, connection_window: u32) -> h2::server::Builder {
    let mut builder = h2::server::Builder::new();
    builder
        .max_header_list_size(MAX_HEADER_LIST)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(connection_window)
        .max_frame_size(MAX_FRAME)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_concurrent_streams(max_streams);
    builder
}

/// The header that names the Service a caller addressed (`<namespace>/<name>`), for the
/// receiving side's access log and metrics. It is the authenticated caller's word, checked
/// for shape only: a caller can mislabel its own traffic, nothing more.
pub const SERVICE_HEADER: &str = "tunnel-destination-service";
/// The longest Service name said: a namespace (63) and a name (63, DNS-1035) with a slash,
/// with room to spare.
const MAX_SERVICE_NAME: usize = 256;

/// What a CONNECT says.
#[derive(Clone, Copy, Debug)]
pub struct Connect<'a> {
    pub destination: SocketAddr,
    /// The original source's address where it means something to the peer (a pod's).
    pub forwarded_for: Option<IpAddr>,
    /// The Service the caller addressed, if it addressed one.
    pub service: Option<&'a str>,
}

/// The CONNECT request for one application connection; `forwarded_for` goes in `Forwarded`
/// (RFC 7239) as ztunnel sends it, the Service in [`SERVICE_HEADER`].
pub fn connect_request(connect: &Connect) -> Request<()> {
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .uri(connect.destination.to_string());
    match connect.forwarded_for {
        Some(IpAddr::V4(ip)) => request = request.header("forwarded", format!("for={ip}")),
        Some(IpAddr::V6(ip)) => request = request.header("forwarded", format!("for=\"[{ip}]\"")),
        None => {}
    }
    if let Some(service) = connect.service {
        request = request.header(SERVICE_HEADER, service);
    }
    request
        .body(())
        .expect("a socket address is a valid CONNECT authority, a Service name a valid value")
}

/// The Service a CONNECT names, if it names one of the right shape: `<namespace>/<name>`,
/// lowercase letters, digits, `-` and `.` (anything else is not logged: a peer must not
/// write into our logs or metric labels what it likes).
pub fn requested_service<B>(request: &Request<B>) -> Option<&str> {
    let value = request.headers().get(SERVICE_HEADER)?.to_str().ok()?;
    let (namespace, name) = value.split_once('/')?;
    let label = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    (value.len() <= MAX_SERVICE_NAME && label(namespace) && label(name)).then_some(value)
}

/// The destination a CONNECT request names, or why it names none.
pub fn requested_destination<B>(request: &Request<B>) -> Result<SocketAddr, (StatusCode, String)> {
    if request.method() != Method::CONNECT {
        return Err((
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "method {} (only CONNECT is served)",
                shortened(request.method().as_str())
            ),
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
            format!("authority {:?} is not an ip:port", shortened(&authority)),
        )
    })
}

/// Most of a peer-supplied value that goes into a log line: a peer must not be able to
/// write megabytes into our log (or a terminal's escape sequences: the callers log with
/// `{:?}` or as a field, which escapes).
pub fn shortened(value: &str) -> std::borrow::Cow<'_, str> {
    const SHOWN: usize = 256;
    if value.len() <= SHOWN {
        return value.into();
    }
    let mut end = SHOWN;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &value[..end], value.len()).into()
}

/// An empty response with a status.
/// Carries why a CONNECT was refused: `<code>; <sentence>`, e.g. `policy_denied; no policy
/// allows spiffe://example.org/batch to reach orders (10.0.0.2:8080): ...`. The code is one
/// of a fixed set, for programs; the sentence is for the caller's log and `tunnel probe`.
pub const REFUSAL_HEADER: &str = "tunnel-refusal";

/// The most of a refusal sentence sent (the caller logs it; it must stay a header).
const REFUSAL_MAX: usize = 512;

/// A refusal answer: `status` and the reason in [`REFUSAL_HEADER`], cut to printable
/// ASCII and [`REFUSAL_MAX`] bytes.
pub fn refusal(status: StatusCode, code: &str, why: &str) -> http::Response<()> {
    let text: String = format!("{code}; {why}")
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(REFUSAL_MAX)
        .collect();
    let mut builder = http::Response::builder().status(status);
    if let Ok(value) = http::HeaderValue::from_str(&text) {
        builder = builder.header(REFUSAL_HEADER, value);
    }
    builder
        .body(())
        .expect("a status and a checked header make a valid response")
}

/// The refusal a peer daemon gave, from its answer: (code, sentence).
pub fn refusal_reason<B>(response: &http::Response<B>) -> Option<(String, String)> {
    let text = response.headers().get(REFUSAL_HEADER)?.to_str().ok()?;
    let text = shortened(text);
    let (code, why) = text.split_once("; ").unwrap_or(("", &text));
    Some((code.to_string(), why.to_string()))
}

pub fn response(status: StatusCode) -> http::Response<()> {
    http::Response::builder()
        .status(status)
        .body(())
        .expect("status-only response is valid")
}

/// TCP settings for tunnel connections, on both sides: no Nagle delay, and dead-peer
/// detection that does not wait for the kernel's two-hour keepalive default. Keepalive
/// probes an idle connection after 10 s (3 probes, 5 s apart); `TCP_USER_TIMEOUT` closes
/// one whose sent data stays unacknowledged for 30 s (a partition during a transfer), so
/// neither side holds a half-dead connection and its buffers for long.
pub fn configure_tunnel_socket(tcp: &tokio::net::TcpStream) {
    let _ = tcp.set_nodelay(true);
    let socket = socket2::SockRef::from(tcp);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5))
        .with_retries(3);
    let _ = socket.set_tcp_keepalive(&keepalive);
    let _ = socket.set_tcp_user_timeout(Some(Duration::from_secs(30)));
}

/// Sends a PING every `keepalive` and resolves when one goes unanswered for as long: the
/// peer is gone or wedged although TCP may not know yet. Runs beside the connection's own
/// polling (h2 answers PONGs only while the connection is driven); if the connection ends
/// first, the PING fails and this never resolves, which the caller's select ignores.
pub async fn unanswered_ping(mut pings: h2::PingPong, keepalive: Duration) {
    loop {
        tokio::time::sleep(keepalive).await;
        match tokio::time::timeout(keepalive, pings.ping(h2::Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(_)) => return std::future::pending().await,
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_requests_round_trip_their_destination() {
        for addr in ["10.0.0.2:8080", "[fd00::2]:443"] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(
                requested_destination(&connect_request(&to(addr))).unwrap(),
                addr
            );
        }
    }

    fn to(destination: SocketAddr) -> Connect<'static> {
        Connect {
            destination,
            forwarded_for: None,
            service: None,
        }
    }

    #[test]
    fn a_pods_address_is_sent_as_forwarded_for() {
        let dst: SocketAddr = "10.1.2.2:8080".parse().unwrap();
        let from = |ip: &str| Connect {
            forwarded_for: Some(ip.parse().unwrap()),
            ..to(dst)
        };
        let v4 = connect_request(&from("10.1.1.2"));
        assert_eq!(v4.headers()["forwarded"], "for=10.1.1.2");
        let v6 = connect_request(&from("fd00:1::2"));
        assert_eq!(v6.headers()["forwarded"], "for=\"[fd00:1::2]\"");
        assert!(
            connect_request(&to(dst))
                .headers()
                .get("forwarded")
                .is_none()
        );
    }

    #[test]
    fn the_service_named_is_read_back_only_in_its_shape() {
        let dst: SocketAddr = "10.1.2.2:8080".parse().unwrap();
        let named = connect_request(&Connect {
            service: Some("shop/orders"),
            ..to(dst)
        });
        assert_eq!(requested_service(&named), Some("shop/orders"));
        assert_eq!(requested_service(&connect_request(&to(dst))), None);
        for bad in [
            "orders",
            "shop/",
            "/orders",
            "Shop/orders",
            "shop/or ders",
            "shop/orders\u{1b}[31m",
            "a/b/c",
            &format!("shop/{}", "a".repeat(300)),
        ] {
            let mut request = connect_request(&to(dst));
            if let Ok(value) = http::HeaderValue::from_str(bad) {
                request.headers_mut().insert(SERVICE_HEADER, value);
                assert_eq!(requested_service(&request), None, "{bad:?}");
            }
        }
    }

    #[test]
    fn long_peer_values_are_shortened_for_logs() {
        assert_eq!(shortened("10.0.0.2:80"), "10.0.0.2:80");
        let long = "é".repeat(10_000);
        let shown = shortened(&long);
        assert!(shown.len() < 400, "{} bytes shown", shown.len());
        assert!(shown.ends_with("(20000 bytes in all)"));
        let bad = Request::builder()
            .method(Method::CONNECT)
            .uri(format!("{}:80", "a".repeat(50_000)))
            .body(())
            .unwrap();
        let (_, why) = requested_destination(&bad).unwrap_err();
        assert!(why.len() < 400, "the refusal reason is {} bytes", why.len());
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

/// What a TLS connection negotiated, for the access log (nginx's `$ssl_protocol` and
/// `$ssl_cipher`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsParams {
    pub protocol: &'static str,
    pub cipher: &'static str,
}

impl TlsParams {
    pub fn of(connection: &rustls::CommonState) -> Self {
        let protocol = match connection.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "-",
        };
        let cipher = connection
            .negotiated_cipher_suite()
            .and_then(|suite| suite.suite().as_str())
            .unwrap_or("-");
        Self { protocol, cipher }
    }
}
