//! One request head: parsed by httparse, judged for framing (RFC 9112 §6), written again.

use std::mem::MaybeUninit;

use httparse::{Header, Status};

use crate::{
    Error, MAX_HEADERS, Unit,
    text::{decimal, is_xfcc, shown},
};

/// How the request's body is framed (RFC 9112 §6.3; a request without either header has
/// none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Body {
    None,
    Length(u64),
    Chunked,
}

/// What follows the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Framing {
    pub body: Body,
    /// `Upgrade` in HTTP/1.1, or `CONNECT`: the connection may carry another protocol after
    /// this request.
    pub may_switch: bool,
}

/// Parses `head` (a request line and header section through the empty line that ends it,
/// nothing before or after) and appends it to `out` without any XFCC field, with `added`
/// (a whole field line, or nothing) last. Nothing is appended when it is refused.
pub(crate) fn rewrite(head: &[u8], added: &[u8], out: &mut Vec<u8>) -> Result<Framing, Error> {
    let mut fields = [const { MaybeUninit::<Header<'_>>::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    match request.parse_with_uninit_headers(head, &mut fields) {
        Ok(Status::Complete(n)) if n == head.len() => {}
        Ok(_) => return Err(Error::Malformed(Unit::Head)),
        Err(e) => return Err(diagnose_head(head, e)),
    }
    let (Some(method), Some(target), Some(minor)) = (request.method, request.path, request.version)
    else {
        return Err(Error::Malformed(Unit::Head));
    };
    let framing = framing(method, minor, request.headers)?;

    out.reserve(head.len() + added.len());
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(if minor == 0 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    let mut length_written = false;
    for field in request.headers.iter() {
        let name = field.name;
        let is_length = name.eq_ignore_ascii_case("content-length");
        // Repeated lengths were found equal (`framing`): the workload gets one.
        if is_xfcc(name) || (is_length && length_written) {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        if is_length {
            length_written = true;
            if let Body::Length(n) = framing.body {
                decimal(n, out);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            out.extend_from_slice(b"chunked");
        } else {
            out.extend_from_slice(field.value);
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(added);
    out.extend_from_slice(b"\r\n");
    Ok(framing)
}

/// The body's framing, or why it cannot be known for sure.
fn framing(method: &str, minor: u8, fields: &[Header<'_>]) -> Result<Framing, Error> {
    let (mut length, mut chunked, mut upgrade) = (None, false, false);
    for field in fields {
        let name = field.name;
        if name.eq_ignore_ascii_case("content-length") {
            // Repeated with the same value, as fields or as a list: accepted (RFC 9110 §8.6)
            // and forwarded once. With another value: refused.
            let n = content_length(field.value)?;
            match length {
                Some(earlier) if earlier != n => {
                    return Err(Error::ConflictingLengths(earlier, n));
                }
                _ => length = Some(n),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if minor == 0 {
                return Err(Error::TransferEncodingInHttp10);
            }
            if chunked {
                // Two fields make one list (RFC 9110 §5.3): "chunked, ..." is chunked twice
                // or not last, either way refused.
                return Err(Error::TransferEncodingRepeated);
            }
            // httparse took the SP and HTAB around the value off (they are not part of it);
            // anything else, such as "xchunked", "chunked, identity" or "gzip, chunked", is
            // refused.
            if !field.value.eq_ignore_ascii_case(b"chunked") {
                return Err(Error::NotChunked(shown(field.value)));
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    let body = match (length, chunked) {
        (Some(_), true) => return Err(Error::LengthAndTransferEncoding),
        (Some(n), false) => Body::Length(n),
        (None, true) => Body::Chunked,
        (None, false) => Body::None,
    };
    Ok(Framing {
        body,
        // A server ignores Upgrade in an HTTP/1.0 request (RFC 9110 §7.8).
        may_switch: method == "CONNECT" || (upgrade && minor == 1),
    })
}

/// `Content-Length = 1*DIGIT`, or a list of the same such value (RFC 9110 §8.6 lets a
/// recipient take "5, 5" as 5). No sign, no empty element, nothing past `u64`.
fn content_length(value: &[u8]) -> Result<u64, Error> {
    let invalid = || Error::ContentLength(shown(value));
    let mut length = None;
    for element in value.split(|b| *b == b',') {
        let ows = |b: &u8| *b == b' ' || *b == b'\t';
        let start = element
            .iter()
            .position(|b| !ows(b))
            .unwrap_or(element.len());
        let end = element
            .iter()
            .rposition(|b| !ows(b))
            .map_or(start, |i| i + 1);
        let digits = &element[start..end];
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(invalid());
        }
        let n = digits.iter().try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        });
        let n = n.ok_or_else(invalid)?;
        match length {
            Some(earlier) if earlier != n => return Err(Error::ConflictingLengths(earlier, n)),
            _ => length = Some(n),
        }
    }
    length.ok_or_else(invalid)
}

/// Which part of a head httparse refused, in words.
fn diagnose_head(head: &[u8], error: httparse::Error) -> Error {
    let line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(head.len());
    let request_line = &head[..line_end];
    match error {
        httparse::Error::Version => Error::NotHttp1(shown(request_line)),
        httparse::Error::Token | httparse::Error::NewLine => {
            Error::RequestLine(shown(request_line))
        }
        httparse::Error::TooManyHeaders => Error::TooManyFields(Unit::Head),
        _ => diagnose_fields(head.get(line_end + 2..).unwrap_or_default())
            .unwrap_or(Error::Malformed(Unit::Head)),
    }
}

/// The first field line of `section` (CRLF-separated lines up to an empty one) that is not
/// `name: value` with a token for a name and a value httparse takes.
pub(crate) fn diagnose_fields(section: &[u8]) -> Option<Error> {
    let lines = section
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    for line in lines.take_while(|l| !l.is_empty()) {
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            return Some(Error::ObsFold(shown(line)));
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            return Some(Error::NoColon(shown(line)));
        };
        let name = &line[..colon];
        if !name.iter().all(|b| is_tchar(*b)) || name.is_empty() {
            let trimmed = name.trim_ascii_end();
            return Some(
                if trimmed.len() < name.len()
                    && !trimmed.is_empty()
                    && trimmed.iter().all(|b| is_tchar(*b))
                {
                    Error::WhitespaceBeforeColon(shown(name))
                } else {
                    Error::FieldName(shown(name))
                },
            );
        }
        let value = &line[colon + 1..];
        if !value
            .iter()
            .all(|b| *b == b'\t' || (b' '..=b'~').contains(b) || *b >= 0x80)
        {
            return Some(Error::FieldValue(shown(name)));
        }
    }
    None
}

/// RFC 9110 §5.6.2 `tchar`.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
