//! The PROXY protocol, version 2 (haproxy's binary header, which nginx, HAProxy, Envoy and
//! many servers read): sent first on a delivered connection to ports that ask for it, so the
//! workload learns who called. It carries the source and destination addresses and, for a
//! tunnelled connection, the caller's SPIFFE ID in a TLV of type [`TLV_SPIFFE_ID`]; a
//! plaintext connection passed in permissive or audit mode has no such TLV, which is how
//! the workload tells it was not authenticated.

use std::net::SocketAddr;

/// The fixed 12-byte signature every v2 header starts with.
const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Version 2, command PROXY (the connection was relayed on behalf of another).
const VERSION_2_PROXY: u8 = 0x21;
const TCP_OVER_IPV4: u8 = 0x11;
const TCP_OVER_IPV6: u8 = 0x21;
/// The caller's SPIFFE ID (UTF-8): the first of the range the specification leaves to
/// applications (0xE0–0xEF), as no registered type carries a peer identity.
pub const TLV_SPIFFE_ID: u8 = 0xE0;

/// The header for a connection from `source` to `destination`, with the caller's identity
/// when it is known. Both addresses are given in one family (an IPv4 source with an IPv6
/// destination is written as IPv6, v4-mapped).
pub fn header(source: SocketAddr, destination: SocketAddr, identity: Option<&str>) -> Vec<u8> {
    let mut addresses = Vec::with_capacity(36);
    let family = match (source.ip().to_canonical(), destination.ip().to_canonical()) {
        (std::net::IpAddr::V4(src), std::net::IpAddr::V4(dst)) => {
            addresses.extend_from_slice(&src.octets());
            addresses.extend_from_slice(&dst.octets());
            TCP_OVER_IPV4
        }
        (src, dst) => {
            addresses.extend_from_slice(&v6_octets(src));
            addresses.extend_from_slice(&v6_octets(dst));
            TCP_OVER_IPV6
        }
    };
    addresses.extend_from_slice(&source.port().to_be_bytes());
    addresses.extend_from_slice(&destination.port().to_be_bytes());
    if let Some(identity) = identity {
        // SPIFFE IDs are at most 2048 bytes, far below a TLV's 16-bit length.
        let length = u16::try_from(identity.len()).expect("a SPIFFE ID fits a TLV");
        addresses.push(TLV_SPIFFE_ID);
        addresses.extend_from_slice(&length.to_be_bytes());
        addresses.extend_from_slice(identity.as_bytes());
    }
    let mut header = Vec::with_capacity(16 + addresses.len());
    header.extend_from_slice(&SIGNATURE);
    header.push(VERSION_2_PROXY);
    header.push(family);
    let length = u16::try_from(addresses.len()).expect("addresses and one TLV fit 16 bits");
    header.extend_from_slice(&length.to_be_bytes());
    header.extend_from_slice(&addresses);
    header
}

fn v6_octets(ip: std::net::IpAddr) -> [u8; 16] {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(v6) => v6.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv4_header_with_an_identity_is_laid_out_as_the_specification_says() {
        let header = header(
            "10.0.0.1:40000".parse().unwrap(),
            "10.0.0.2:8080".parse().unwrap(),
            Some("spiffe://example.org/frontend"),
        );
        assert_eq!(&header[..12], b"\r\n\r\n\0\r\nQUIT\n");
        assert_eq!(header[12], 0x21, "version 2, PROXY");
        assert_eq!(header[13], 0x11, "TCP over IPv4");
        let id = b"spiffe://example.org/frontend";
        assert_eq!(
            u16::from_be_bytes([header[14], header[15]]) as usize,
            12 + 3 + id.len()
        );
        assert_eq!(&header[16..20], &[10, 0, 0, 1]);
        assert_eq!(&header[20..24], &[10, 0, 0, 2]);
        assert_eq!(u16::from_be_bytes([header[24], header[25]]), 40000);
        assert_eq!(u16::from_be_bytes([header[26], header[27]]), 8080);
        assert_eq!(header[28], TLV_SPIFFE_ID);
        assert_eq!(
            u16::from_be_bytes([header[29], header[30]]) as usize,
            id.len()
        );
        assert_eq!(&header[31..], id);
    }

    #[test]
    fn ipv6_and_mixed_families_are_written_as_ipv6_and_no_identity_means_no_tlv() {
        let header = header(
            "10.0.0.1:1".parse().unwrap(),
            "[fd00::2]:8080".parse().unwrap(),
            None,
        );
        assert_eq!(header[13], 0x21, "TCP over IPv6");
        assert_eq!(u16::from_be_bytes([header[14], header[15]]), 36);
        assert_eq!(header.len(), 16 + 36);
        assert_eq!(
            &header[16..32],
            &"::ffff:10.0.0.1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
    }
}
