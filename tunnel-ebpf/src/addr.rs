//! Address helpers shared by the hooks. Addresses are network-order words as the kernel
//! gives them, so comparisons use the network-order constants below.

/// `127.0.0.0/8`: first byte 127, which is the lowest byte of the word on a little-endian
/// load and the highest on big-endian; `u32::from_be_bytes` keeps it right on both.
pub fn is_loopback_or_any_v4(addr: u32) -> bool {
    let first_octet = addr.to_ne_bytes()[0];
    first_octet == 127 || addr == 0
}

/// `::1`, `::` and the v4-mapped loopback/any addresses.
pub fn is_loopback_or_any_v6(addr: &[u32; 4]) -> bool {
    if let Some(v4) = v4_mapped(addr) {
        return is_loopback_or_any_v4(v4);
    }
    let one = u32::from_ne_bytes([0, 0, 0, 1]);
    addr[0] == 0 && addr[1] == 0 && addr[2] == 0 && (addr[3] == 0 || addr[3] == one)
}

/// The IPv4 address inside `::ffff:a.b.c.d`, if it is one.
pub fn v4_mapped(addr: &[u32; 4]) -> Option<u32> {
    let mapped_prefix = u32::from_ne_bytes([0, 0, 0xff, 0xff]);
    if addr[0] == 0 && addr[1] == 0 && addr[2] == mapped_prefix {
        Some(addr[3])
    } else {
        None
    }
}

/// `::ffff:a.b.c.d` for an IPv4 address.
pub fn to_v4_mapped(addr: u32) -> [u32; 4] {
    [0, 0, u32::from_ne_bytes([0, 0, 0xff, 0xff]), addr]
}

/// The bytes of a network-order word, as the tries key them.
pub fn v4_bytes(addr: u32) -> [u8; 4] {
    addr.to_ne_bytes()
}

pub fn v6_bytes(addr: &[u32; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let word = addr[i].to_ne_bytes();
        out[i * 4] = word[0];
        out[i * 4 + 1] = word[1];
        out[i * 4 + 2] = word[2];
        out[i * 4 + 3] = word[3];
        i += 1;
    }
    out
}
