//! The chunked transfer coding (RFC 9112 §7.1): chunk-size lines and the trailer section.
//! Chunk data passes as it is; `rewriter` counts it.

use httparse::Status;

use crate::{
    Error, MAX_HEADERS, Unit,
    head::{diagnose_fields, is_tchar},
    text::{is_xfcc, shown},
};

/// The most hex digits of a chunk size: 16 fill a `u64`, so it cannot overflow.
const MAX_SIZE_DIGITS: usize = 16;

/// A chunk-size line without its CRLF: `chunk-size [ chunk-ext ]`. Returns the size; the
/// extensions are checked and dropped.
pub(crate) fn size(line: &[u8]) -> Result<u64, Error> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > MAX_SIZE_DIGITS {
        return Err(Error::ChunkSize(shown(line)));
    }
    let size = line[..digits].iter().fold(0u64, |size, d| {
        let d = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => d - b'A' + 10,
        };
        (size << 4) | u64::from(d)
    });
    let rest = &line[digits..];
    if !rest.is_empty() {
        // Only an extension may follow, after optional whitespace (BWS): "5 " or "5x" is no
        // size.
        if !rest[ows(rest)..].starts_with(b";") {
            return Err(Error::ChunkSize(shown(line)));
        }
        if !extensions(rest) {
            return Err(Error::ChunkExtension(shown(line)));
        }
    }
    Ok(size)
}

/// `chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )`, names
/// tokens, values tokens or quoted strings.
fn extensions(mut rest: &[u8]) -> bool {
    while !rest.is_empty() {
        rest = &rest[ows(rest)..];
        let Some(after) = rest.strip_prefix(b";") else {
            return false;
        };
        rest = &after[ows(after)..];
        let name = rest.iter().take_while(|b| is_tchar(**b)).count();
        if name == 0 {
            return false;
        }
        rest = &rest[name..];
        let ws = ows(rest);
        let Some(after) = rest[ws..].strip_prefix(b"=") else {
            continue;
        };
        rest = &after[ows(after)..];
        let value = match rest.first() {
            Some(b'"') => quoted_string(rest),
            _ => rest.iter().take_while(|b| is_tchar(**b)).count(),
        };
        if value == 0 {
            return false;
        }
        rest = &rest[value..];
    }
    true
}

/// How many SP and HTAB `s` starts with.
fn ows(s: &[u8]) -> usize {
    s.iter().take_while(|b| **b == b' ' || **b == b'\t').count()
}

/// The length of the quoted string `s` starts with (RFC 9110 §5.6.4), 0 if it is not one.
fn quoted_string(s: &[u8]) -> usize {
    let text = |b: u8| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80;
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'"' => return i + 1,
            b'\\' if s.get(i + 1).is_some_and(|b| text(*b)) => i += 2,
            b'\\' => return 0,
            b if text(b) => i += 1,
            _ => return 0,
        }
    }
    0
}

/// A trailer section (its field lines and the empty line that ends it) appended to `out`
/// without any XFCC field. Nothing is appended when it is refused.
pub(crate) fn rewrite_trailers(section: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    if section == b"\r\n" {
        out.extend_from_slice(b"\r\n");
        return Ok(());
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let fields = match httparse::parse_headers(section, &mut fields) {
        Ok(Status::Complete((n, fields))) if n == section.len() => fields,
        Ok(_) => return Err(Error::Malformed(Unit::Trailers)),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::TooManyFields(Unit::Trailers)),
        Err(_) => {
            return Err(diagnose_fields(section).unwrap_or(Error::Malformed(Unit::Trailers)));
        }
    };
    out.reserve(section.len());
    for field in fields.iter().filter(|f| !is_xfcc(f.name)) {
        out.extend_from_slice(field.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(field.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}
