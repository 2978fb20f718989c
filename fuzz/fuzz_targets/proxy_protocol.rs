//! The PROXY protocol v2 header the inbound side writes before a delivery
//! (`proxy::proxy_protocol::header`), read back by a parser written here from haproxy's
//! specification (proxy-protocol.txt, section 2.2).
//!
//! Input: a byte of flags (bit 0: an IPv6 source, bit 1: an IPv6 destination, bit 2: an
//! identity), 16 bytes of source address, 2 of source port, 16 of destination, 2 of
//! destination port, then the identity (text, at most 2048 bytes: a SPIFFE ID's limit).
//!
//! Checked: the header parses as a whole (signature, version 2, command PROXY, TCP over the
//! family written, a length that covers exactly the rest), and carries the source and
//! destination written (both as IPv4 when both are IPv4 or v4-mapped, else both as IPv6,
//! an IPv4 one v4-mapped) and exactly one TLV 0xE0 holding the identity when there is one,
//! none otherwise.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use tunnel::proxy::proxy_protocol::{TLV_SPIFFE_ID, header};

const FIXED: usize = 1 + 16 + 2 + 16 + 2;
/// The longest SPIFFE ID (SPIFFE-ID.md §2.3): what `identity` is given.
const MAX_ID: usize = 2048;

fuzz_target!(|data: &[u8]| {
    if data.len() < FIXED {
        return;
    }
    let (fixed, rest) = data.split_at(FIXED);
    let flags = fixed[0];
    let source = SocketAddr::new(
        address(flags & 1 != 0, &fixed[1..17]),
        u16::from_be_bytes([fixed[17], fixed[18]]),
    );
    let destination = SocketAddr::new(
        address(flags & 2 != 0, &fixed[19..35]),
        u16::from_be_bytes([fixed[35], fixed[36]]),
    );
    let identity = String::from_utf8_lossy(&rest[..rest.len().min(MAX_ID)]);
    let mut end = identity.len().min(MAX_ID);
    while !identity.is_char_boundary(end) {
        end -= 1;
    }
    let identity = (flags & 4 != 0).then(|| &identity[..end]);

    let written = header(source, destination, identity);
    let parsed = parse(&written).unwrap_or_else(|why| panic!("{why}: {written:02x?}"));

    let (src, dst) = (source.ip().to_canonical(), destination.ip().to_canonical());
    let (src, dst) = match (src, dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => (src, dst),
        _ => (IpAddr::V6(v6(src)), IpAddr::V6(v6(dst))),
    };
    assert_eq!(parsed.source, SocketAddr::new(src, source.port()));
    assert_eq!(parsed.destination, SocketAddr::new(dst, destination.port()));
    let identities: Vec<&[u8]> = parsed
        .tlvs
        .iter()
        .filter(|(kind, _)| *kind == TLV_SPIFFE_ID)
        .map(|(_, value)| *value)
        .collect();
    assert_eq!(
        parsed.tlvs.len(),
        identities.len(),
        "a TLV other than the identity"
    );
    match identity {
        Some(id) => assert_eq!(identities, [id.as_bytes()]),
        None => assert!(identities.is_empty()),
    }
});

fn address(v6: bool, octets: &[u8]) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(octets).unwrap()))
    } else {
        IpAddr::V4(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]))
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

struct Header<'a> {
    source: SocketAddr,
    destination: SocketAddr,
    tlvs: Vec<(u8, &'a [u8])>,
}

/// A whole v2 header, nothing after it.
fn parse(bytes: &[u8]) -> Result<Header<'_>, &'static str> {
    const SIGNATURE: &[u8; 12] = b"\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A";
    let rest = bytes.strip_prefix(SIGNATURE).ok_or("no signature")?;
    let [version_command, family, l0, l1, rest @ ..] = rest else {
        return Err("cut short");
    };
    if *version_command != 0x21 {
        return Err("not version 2, command PROXY");
    }
    let length = usize::from(u16::from_be_bytes([*l0, *l1]));
    if rest.len() != length {
        return Err("the length is not the rest");
    }
    let (size, v6) = match family {
        0x11 => (4, false),
        0x21 => (16, true),
        _ => return Err("not TCP over IPv4 or IPv6"),
    };
    if rest.len() < 2 * size + 4 {
        return Err("addresses cut short");
    }
    let ip = |octets: &[u8]| -> IpAddr {
        if v6 {
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(octets).unwrap()))
        } else {
            IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(octets).unwrap()))
        }
    };
    let port = |at: usize| u16::from_be_bytes([rest[at], rest[at + 1]]);
    let source = SocketAddr::new(ip(&rest[..size]), port(2 * size));
    let destination = SocketAddr::new(ip(&rest[size..2 * size]), port(2 * size + 2));
    let mut tlvs = Vec::new();
    let mut rest = &rest[2 * size + 4..];
    while !rest.is_empty() {
        let [kind, l0, l1, value @ ..] = rest else {
            return Err("a TLV header cut short");
        };
        let length = usize::from(u16::from_be_bytes([*l0, *l1]));
        if value.len() < length {
            return Err("a TLV value cut short");
        }
        tlvs.push((*kind, &value[..length]));
        rest = &value[length..];
    }
    Ok(Header {
        source,
        destination,
        tlvs,
    })
}
