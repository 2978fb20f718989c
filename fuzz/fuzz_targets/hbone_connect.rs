//! The HBONE CONNECT request: what the outbound side writes (`hbone::connect_request`) and
//! what the inbound side reads from a peer's request (`requested_destination`,
//! `requested_service`), and the refusal header both ends use (`refusal`, `refusal_reason`).
//!
//! Input: `kind` (a byte: bit 0 picks IPv6 for the destination, bit 1 and 2 a
//! `forwarded_for` of each family, bit 3 a Service), 16 bytes of destination address, 2 of
//! port, 16 of `forwarded_for`, 2 of status; then, cut at NUL bytes: a method, a request
//! target, a Service name, a refusal sentence, and header lines `name: value`.
//!
//! Checked:
//! 1. the request written for a destination, a pod's address and a Service reads back as
//!    the same destination and Service (when it has the shape the reader accepts: two
//!    lowercase DNS-ish labels joined by '/', at most 256 bytes), with `forwarded` as RFC
//!    7239 writes that address;
//! 2. any request a peer can send (any method, target and headers h2 lets through): a
//!    destination only from a CONNECT whose authority is an `ip:port`, that address; else a
//!    405 or a 400 whose reason stays short (it is logged and sent back); a Service only of
//!    the accepted shape;
//! 3. a refusal carries `<code>; <sentence>` as printable ASCII of at most 512 bytes, and the
//!    caller reads back the code and the sentence (shortened as the caller's log shortens).
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use http::{HeaderValue, Method, Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use tunnel::proxy::hbone::{
    Connect, REFUSAL_HEADER, connect_request, refusal, refusal_reason, requested_destination,
    requested_service, shortened,
};
use tunnel_fuzz::parts;

const FIXED: usize = 1 + 16 + 2 + 16 + 2;

fuzz_target!(|data: &[u8]| {
    if data.len() < FIXED {
        return;
    }
    let (fixed, rest) = data.split_at(FIXED);
    let kind = fixed[0];
    let octets: [u8; 16] = fixed[1..17].try_into().unwrap();
    let port = u16::from_be_bytes([fixed[17], fixed[18]]);
    let from: [u8; 16] = fixed[19..35].try_into().unwrap();
    let status = u16::from_be_bytes([fixed[35], fixed[36]]);
    let [method, target, service, sentence, headers] = parts(rest, 5)[..] else {
        unreachable!()
    };
    let service = String::from_utf8_lossy(service);
    let sentence = String::from_utf8_lossy(sentence);

    // 1. What we send, read back.
    let destination = SocketAddr::new(address(kind & 1 == 1, octets), port);
    let forwarded_for = match kind >> 1 & 3 {
        1 => Some(address(false, from)),
        2 | 3 => Some(address(true, from)),
        _ => None,
    };
    // A Service name comes from the cluster view (a namespace and a name): a header value.
    let service = (kind & 8 != 0 && HeaderValue::from_str(&service).is_ok()).then_some(&*service);
    let connect = Connect {
        destination,
        forwarded_for,
        service,
    };
    let request = connect_request(&connect);
    assert_eq!(requested_destination(&request), Ok(destination));
    let shaped = service.filter(|s| service_shape(s));
    assert_eq!(requested_service(&request), shaped);
    let forwarded = request
        .headers()
        .get("forwarded")
        .map(|v| v.to_str().expect("ASCII"));
    assert_eq!(
        forwarded.map(forwarded_for_address),
        forwarded_for.map(Some)
    );

    // 2. What a peer sends.
    if let Some(request) = peer_request(method, target, headers) {
        match requested_destination(&request) {
            Ok(addr) => {
                assert_eq!(request.method(), Method::CONNECT);
                let authority = request.uri().authority().expect("an authority").as_str();
                assert_eq!(authority.parse::<SocketAddr>(), Ok(addr));
            }
            Err((status, why)) => {
                assert!(
                    status == StatusCode::METHOD_NOT_ALLOWED || status == StatusCode::BAD_REQUEST,
                    "{status}"
                );
                assert!(why.len() <= 400, "a {} byte reason", why.len());
            }
        }
        if let Some(service) = requested_service(&request) {
            assert!(service_shape(service), "{service:?}");
        }
    }

    // 3. A refusal, read back.
    if let Ok(status) = StatusCode::from_u16(status) {
        for code in ["policy_denied", "bad_request", "not_local"] {
            let response = refusal(status, code, &sentence);
            assert_eq!(response.status(), status);
            let sent = response.headers()[REFUSAL_HEADER].to_str().expect("ASCII");
            assert!(sent.len() <= 512);
            assert!(
                sent.bytes().all(|b| b == b' ' || b.is_ascii_graphic()),
                "{sent:?}"
            );
            let printable: String = format!("{code}; {sentence}")
                .chars()
                .map(|c| {
                    if c == ' ' || c.is_ascii_graphic() {
                        c
                    } else {
                        '?'
                    }
                })
                .take(512)
                .collect();
            assert_eq!(sent, printable);
            let (read_code, why) = refusal_reason(&response).expect("a refusal header");
            let shown = shortened(sent);
            let expected = shown.split_once("; ").unwrap_or(("", &shown));
            assert_eq!((read_code.as_str(), why.as_str()), expected);
            if sent.len() <= 256 && !code.contains("; ") {
                assert_eq!(read_code, code);
            }
        }
    }
});

fn address(v6: bool, octets: [u8; 16]) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(octets))
    } else {
        IpAddr::V4(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]))
    }
}

/// `<namespace>/<name>`: lowercase letters, digits, '-' and '.', at most 256 bytes.
fn service_shape(value: &str) -> bool {
    let label = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    value.len() <= 256
        && value
            .split_once('/')
            .is_some_and(|(namespace, name)| label(namespace) && label(name))
}

/// The address of `for=` in a `Forwarded` value (RFC 7239: a bare IPv4 address, an IPv6 one
/// quoted in brackets).
fn forwarded_for_address(value: &str) -> Option<IpAddr> {
    let node = value.strip_prefix("for=")?;
    match node.strip_prefix("\"[") {
        Some(quoted) => quoted
            .strip_suffix("]\"")?
            .parse::<Ipv6Addr>()
            .ok()
            .map(IpAddr::V6),
        None => node.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

/// A request as h2 hands it over: the pseudo-headers and fields it could carry; `None` for
/// what no HTTP/2 peer can send (an invalid method, target or field).
fn peer_request(method: &[u8], target: &[u8], headers: &[u8]) -> Option<Request<()>> {
    let mut builder = Request::builder()
        .method(Method::from_bytes(method).ok()?)
        .uri(http::Uri::try_from(target).ok()?);
    for line in headers.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = http::HeaderName::from_bytes(&line[..colon]).ok()?;
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).ok()?;
        builder = builder.header(name, value);
    }
    builder.body(()).ok()
}
