//! tunnel-http1's `RequestRewriter` against a differential oracle.
//!
//! Input: `flags, cut × n, payload`. Bit 0 of `flags` picks the stripping rewriter (an
//! unauthenticated caller's) over the one that adds our XFCC; bits 1 to 4 are n; each cut is
//! a little-endian u16, a position in the payload modulo its length + 1. The payload is fed
//! whole, cut at those points, and byte by byte when short.
//!
//! Checked:
//! 1. every way of feeding it gives the same output and the same outcome;
//! 2. what was forwarded (before an error too) reads as complete request heads (httparse,
//!    no bare LF, no empty line before one), each with one XFCC, ours, as its last field (none
//!    from the stripping rewriter), bodies framed by one Content-Length or strict chunked
//!    coding, no XFCC in trailers;
//! 3. an independent reading of the input as a whole (httparse for heads, RFC 9112 §6.3 for
//!    framing, in this file) finds the same requests: request lines, fields (less XFCC, the
//!    framing ones by meaning), body data and trailers; after a protocol switch the same
//!    bytes passed through; and when the rewriter refused nothing, exactly what it forwarded.
#![no_main]

use httparse::{EMPTY_HEADER, Status};
use libfuzzer_sys::fuzz_target;
use tunnel_http1::{Error, RequestRewriter};

const BY: &str = "spiffe://td/node/b";
const URI: &str = "spiffe://td/frontend";

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let stripping = flags & 1 == 1;
    let n = usize::from((flags >> 1) & 0xf);
    if rest.len() < 2 * n {
        return;
    }
    let (cuts, payload) = rest.split_at(2 * n);
    let mut cuts: Vec<usize> = cuts
        .chunks(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (payload.len() + 1))
        .collect();
    cuts.sort_unstable();
    let make = || {
        if stripping {
            RequestRewriter::stripping()
        } else {
            RequestRewriter::new(BY, URI)
        }
    };

    let whole = run(make(), [payload]);
    let mut pieces = Vec::new();
    let mut at = 0;
    for &cut in &cuts {
        pieces.push(&payload[at..cut]);
        at = cut;
    }
    pieces.push(&payload[at..]);
    assert_eq!(run(make(), pieces), whole, "cut at {cuts:?}");
    if payload.len() <= 512 {
        assert_eq!(run(make(), payload.chunks(1)), whole, "byte by byte");
    }

    let (out, outcome) = whole;
    let (forwarded, out_end) = read(&out, Side::Forwarded);
    if let End::Invalid(why) = out_end {
        panic!("forwarded {why}: {:?}", String::from_utf8_lossy(&out));
    }
    let ours = format!("By={BY};URI={URI}");
    for message in &forwarded {
        let expected: &[&[u8]] = if stripping { &[] } else { &[ours.as_bytes()] };
        assert_eq!(message.xfcc, expected, "{message:?}");
        assert!(
            stripping || message.xfcc_last,
            "ours is not last: {message:?}"
        );
        assert_eq!(message.trailer_xfcc, 0, "{message:?}");
    }

    let (sent, in_end) = read(payload, Side::Sent);
    assert!(
        forwarded.len() <= sent.len(),
        "forwarded {} requests, the input has {} ({in_end:?})",
        forwarded.len(),
        sent.len()
    );
    for (i, (f, s)) in requests(&forwarded)
        .into_iter()
        .zip(requests(&sent))
        .enumerate()
    {
        let last = i + 1 == forwarded.len();
        if last && !f.complete {
            assert_eq!((&f.line, &f.fields), (&s.line, &s.fields));
            assert!(s.body.starts_with(&f.body), "body {i}: {f:?} {s:?}");
        } else {
            assert_eq!(f, s, "request {i}");
        }
    }
    // When nothing was refused, nothing was held back either (but an unfinished head).
    if outcome.is_ok() {
        assert_eq!(
            requests(&forwarded),
            requests(&sent),
            "accepted all, forwarded other requests"
        );
        match (&out_end, &in_end) {
            (End::PassThrough(a), End::PassThrough(b)) => assert_eq!(a, b),
            (End::PassThrough(_), _) | (_, End::PassThrough(_)) => {
                panic!("passed through {out_end:?}, the input has {in_end:?}")
            }
            _ => {}
        }
    }
});

fn requests<'m>(messages: &'m [Message<'_>]) -> Vec<&'m Request> {
    messages.iter().map(|m| &m.request).collect()
}

fn run<'a>(
    mut rewriter: RequestRewriter,
    pieces: impl IntoIterator<Item = &'a [u8]>,
) -> (Vec<u8>, Result<(), Error>) {
    let mut out = Vec::new();
    for piece in pieces {
        if let Err(e) = rewriter.feed(piece, &mut out) {
            return (out, Err(e));
        }
    }
    (out, Ok(()))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// What the rewriter forwarded: it must be in the one form it writes.
    Forwarded,
    /// What the caller sent.
    Sent,
}

/// One request as read.
#[derive(Debug)]
struct Message<'a> {
    request: Request,
    /// The values of the XFCC fields in its head, and whether one is the last field.
    xfcc: Vec<&'a [u8]>,
    xfcc_last: bool,
    /// How many XFCC fields its trailers have.
    trailer_xfcc: usize,
}

/// What must be the same on both sides: field names lowercased, less XFCC; Content-Length
/// as a number and Transfer-Encoding as "chunked", last; body data without chunk framing.
#[derive(Debug, Default, PartialEq, Eq)]
struct Request {
    line: (String, String, u8),
    fields: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    trailers: Vec<(String, Vec<u8>)>,
    complete: bool,
}

#[derive(Debug)]
enum End<'a> {
    /// At a message's end, or within one (or within a head: nothing of it read).
    Open,
    /// Not a valid request from here: the reason.
    Invalid(&'static str),
    /// Switched protocols: the rest.
    PassThrough(&'a [u8]),
}

fn is_xfcc(name: &str) -> bool {
    name.replace('_', "-")
        .eq_ignore_ascii_case("x-forwarded-client-cert")
}

/// Reads `buf` as requests, as far as it goes.
fn read(buf: &[u8], side: Side) -> (Vec<Message<'_>>, End<'_>) {
    let mut messages = Vec::new();
    let mut pos = 0;
    loop {
        if side == Side::Sent {
            while buf[pos..].starts_with(b"\r\n") {
                pos += 2;
            }
        }
        if pos == buf.len() {
            return (messages, End::Open);
        }
        if side == Side::Forwarded && matches!(buf[pos], b'\r' | b'\n') {
            return (messages, End::Invalid("an empty line before a head"));
        }
        let mut fields = [EMPTY_HEADER; 128];
        let mut request = httparse::Request::new(&mut fields);
        let n = match request.parse(&buf[pos..]) {
            Ok(Status::Complete(n)) => n,
            Ok(Status::Partial) => return (messages, End::Open),
            Err(_) => return (messages, End::Invalid("a head httparse refuses")),
        };
        let head = &buf[pos..pos + n];
        if side == Side::Forwarded && head.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r') {
            return (messages, End::Invalid("a bare LF in a head"));
        }
        pos += n;
        let (method, target, minor) = (
            request.method.unwrap_or_default(),
            request.path.unwrap_or_default(),
            request.version.unwrap_or_default(),
        );
        let Some((body, mut message)) = framing(request.headers) else {
            return (messages, End::Invalid("ambiguous framing"));
        };
        if minor == 0 && matches!(body, Framing::Chunked) {
            return (messages, End::Invalid("Transfer-Encoding in HTTP/1.0"));
        }
        message.request.line = (method.into(), target.into(), minor);
        let upgrade = request
            .headers
            .iter()
            .any(|f| f.name.eq_ignore_ascii_case("upgrade"));
        let switches = method == "CONNECT" || (upgrade && minor == 1);
        let end = match body {
            Framing::Length(length) => {
                let take =
                    usize::try_from(length).map_or(buf.len() - pos, |l| l.min(buf.len() - pos));
                message
                    .request
                    .body
                    .extend_from_slice(&buf[pos..pos + take]);
                pos += take;
                (take as u64 == length).then_some(()).ok_or(End::Open)
            }
            Framing::Chunked => chunks(buf, &mut pos, &mut message, side),
        };
        message.request.complete = end.is_ok();
        messages.push(message);
        if let Err(end) = end {
            return (messages, end);
        }
        if switches && pos < buf.len() {
            let (b0, b1) = (buf[pos], buf.get(pos + 1));
            let text = matches!(b0, b'\t'..=b'\r' | b' '..=b'~');
            match b1 {
                _ if !text => return (messages, End::PassThrough(&buf[pos..])),
                Some(&b1) if b1 >= 0x80 => return (messages, End::PassThrough(&buf[pos..])),
                None => return (messages, End::Open),
                Some(_) => {}
            }
        }
    }
}

enum Framing {
    Length(u64),
    Chunked,
}

/// RFC 9112 §6.3 for a request: chunked if it is the final transfer coding (anything else
/// is ambiguous), else Content-Length if all its values agree, else no body. Both at once is
/// refused (a server may, §6.1).
fn framing<'a>(fields: &[httparse::Header<'a>]) -> Option<(Framing, Message<'a>)> {
    let mut message = Message {
        request: Request::default(),
        xfcc: Vec::new(),
        xfcc_last: false,
        trailer_xfcc: 0,
    };
    let (mut codings, mut lengths) = (Vec::new(), Vec::new());
    for field in fields {
        let name = field.name.to_ascii_lowercase();
        message.xfcc_last = is_xfcc(&name);
        if message.xfcc_last {
            message.xfcc.push(field.value);
        } else if name == "transfer-encoding" {
            codings.extend(field.value.split(|b| *b == b',').map(trim));
        } else if name == "content-length" {
            lengths.extend(field.value.split(|b| *b == b',').map(trim));
        } else {
            message.request.fields.push((name, field.value.to_vec()));
        }
    }
    let framing = match (codings.last(), lengths.first()) {
        (Some(_), Some(_)) => return None,
        (Some(last), None) => {
            if !last.eq_ignore_ascii_case(b"chunked") {
                return None;
            }
            message
                .request
                .fields
                .push(("transfer-encoding".into(), b"chunked".to_vec()));
            Framing::Chunked
        }
        (None, Some(_)) => {
            let mut values = lengths.iter().map(|l| {
                let digits = !l.is_empty() && l.iter().all(u8::is_ascii_digit);
                digits
                    .then(|| std::str::from_utf8(l).ok()?.parse::<u64>().ok())
                    .flatten()
            });
            let first = values.next()??;
            if !values.all(|v| v == Some(first)) {
                return None;
            }
            message
                .request
                .fields
                .push(("content-length".into(), first.to_string().into_bytes()));
            Framing::Length(first)
        }
        (None, None) => Framing::Length(0),
    };
    Some((framing, message))
}

fn trim(s: &[u8]) -> &[u8] {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = s.iter().position(|b| !ows(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !ows(b)).map_or(start, |i| i + 1);
    &s[start..end]
}

/// A chunked body and its trailers, from `pos` on.
fn chunks<'a>(
    buf: &'a [u8],
    pos: &mut usize,
    message: &mut Message<'_>,
    side: Side,
) -> Result<(), End<'a>> {
    loop {
        let Some(eol) = buf[*pos..].windows(2).position(|w| w == b"\r\n") else {
            return Err(End::Open);
        };
        let line = &buf[*pos..*pos + eol];
        if line.iter().any(|b| matches!(b, b'\r' | b'\n')) {
            return Err(End::Invalid("a bare CR or LF in a chunk line"));
        }
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        let rest = trim(&line[digits..]);
        if digits == 0 || digits > 16 || !(rest.is_empty() || rest.starts_with(b";")) {
            return Err(End::Invalid("a chunk size"));
        }
        if side == Side::Forwarded && digits < line.len() {
            return Err(End::Invalid("a chunk line not in the form written"));
        }
        let size = u64::from_str_radix(std::str::from_utf8(&line[..digits]).unwrap(), 16).unwrap();
        *pos += eol + 2;
        if size == 0 {
            break;
        }
        let available = buf.len() - *pos;
        let take = usize::try_from(size).map_or(available, |s| s.min(available));
        message
            .request
            .body
            .extend_from_slice(&buf[*pos..*pos + take]);
        *pos += take;
        if (take as u64) < size || buf.len() - *pos < 2 {
            return Err(End::Open);
        }
        if &buf[*pos..*pos + 2] != b"\r\n" {
            return Err(End::Invalid("no CRLF after chunk data"));
        }
        *pos += 2;
    }
    let mut fields = [EMPTY_HEADER; 128];
    match httparse::parse_headers(&buf[*pos..], &mut fields) {
        Ok(Status::Complete((n, fields))) => {
            *pos += n;
            for field in fields {
                let name = field.name.to_ascii_lowercase();
                if is_xfcc(&name) {
                    message.trailer_xfcc += 1;
                } else {
                    message.request.trailers.push((name, field.value.to_vec()));
                }
            }
            Ok(())
        }
        Ok(Status::Partial) => Err(End::Open),
        Err(_) => Err(End::Invalid("trailers httparse refuses")),
    }
}
