//! Small byte helpers: names compared, numbers written without `fmt`, the caller's text made
//! fit for a log line.

use crate::XFCC;

/// Whether a field name is `X-Forwarded-Client-Cert`, in any case, with `_` taken for `-`
/// (CGI-style servers turn both into `HTTP_X_FORWARDED_CLIENT_CERT`).
pub(crate) fn is_xfcc(name: &str) -> bool {
    name.len() == XFCC.len()
        && name
            .bytes()
            .zip(XFCC.bytes())
            .all(|(a, b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
}

/// Appends `n` in decimal.
pub(crate) fn decimal(n: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends `n` in lowercase hex.
pub(crate) fn hex(n: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// The caller's bytes as they may appear in a message: printable ASCII as is, anything else
/// as `\xNN`, at most 80 bytes of it.
pub(crate) fn shown(bytes: &[u8]) -> String {
    const MAX: usize = 80;
    let mut text = String::new();
    for &b in bytes.iter().take(MAX) {
        match b {
            b' '..=b'~' if b != b'\\' => text.push(char::from(b)),
            _ => text.push_str(&format!("\\x{b:02x}")),
        }
    }
    if bytes.len() > MAX {
        text.push_str("...");
    }
    text
}
