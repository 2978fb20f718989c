//! `X-Forwarded-Client-Cert` for HTTP/1.1 workload ports: every request a tunnelled caller
//! sends gets `X-Forwarded-Client-Cert: By=<our identity>;URI=<caller's identity>` added,
//! and any such header the caller wrote itself removed, on every request of a keep-alive
//! connection (the header must not be spoofable). The rewriter follows HTTP/1.1 framing
//! (RFC 9112): it rewrites each request head and passes bodies untouched, sized by
//! `Content-Length` or by chunked coding. What it cannot frame safely (a head past
//! [`MAX_HEAD`], both `Content-Length` and `Transfer-Encoding`, conflicting lengths, a
//! malformed chunk) ends the connection: guessing could let a body pass for a request.
//! After a request that asks for a protocol upgrade, the rest passes through unread.

use thiserror::Error;

/// The largest request head accepted (request line and headers).
const MAX_HEAD: usize = 64 * 1024;
/// The largest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4096;
const HEADER: &str = "x-forwarded-client-cert";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum XfccError {
    #[error("a request head longer than {MAX_HEAD} bytes")]
    HeadTooLong,
    #[error("a request that is not HTTP/1.x")]
    NotHttp1,
    #[error("a request with both Content-Length and Transfer-Encoding, or conflicting lengths")]
    AmbiguousFraming,
    #[error("a malformed chunk in a chunked body")]
    BadChunk,
}

#[derive(Debug)]
enum State {
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers,
    /// After an upgrade: not HTTP any more.
    PassThrough,
}

/// Rewrites the request side of one connection.
pub struct RequestRewriter {
    added: Vec<u8>,
    state: State,
    /// Bytes of a head or a line not complete yet.
    pending: Vec<u8>,
}

impl RequestRewriter {
    /// For an unauthenticated caller: its headers are removed, none is added.
    pub fn stripping() -> Self {
        Self {
            added: Vec::new(),
            state: State::Head,
            pending: Vec::new(),
        }
    }

    pub fn new(our_identity: &str, caller: &str) -> Self {
        Self {
            added: format!("X-Forwarded-Client-Cert: By={our_identity};URI={caller}\r\n")
                .into_bytes(),
            state: State::Head,
            pending: Vec::new(),
        }
    }

    /// Takes what the caller sent next and appends what the workload should get to `out`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), XfccError> {
        while !input.is_empty() {
            match self.state {
                State::PassThrough => {
                    out.extend_from_slice(input);
                    return Ok(());
                }
                State::Body(left) | State::ChunkData(left) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    let left = left - n as u64;
                    self.state = match (&self.state, left) {
                        (State::Body(_), 0) => State::Head,
                        (State::Body(_), _) => State::Body(left),
                        (_, 0) => State::ChunkEnd,
                        _ => State::ChunkData(left),
                    };
                }
                State::Head => {
                    let Some(end) = self.take_until(&mut input, b"\r\n\r\n", MAX_HEAD)? else {
                        return Ok(());
                    };
                    let head = std::mem::take(&mut self.pending);
                    self.rewrite_head(&head[..end], out)?;
                }
                State::ChunkSize | State::ChunkEnd | State::Trailers => {
                    let Some(end) = self.take_until(&mut input, b"\r\n", MAX_LINE)? else {
                        return Ok(());
                    };
                    let line = std::mem::take(&mut self.pending);
                    out.extend_from_slice(&line);
                    let text = &line[..end];
                    self.state = match self.state {
                        State::ChunkSize => {
                            let size = text.split(|b| *b == b';').next().unwrap_or_default();
                            let size = std::str::from_utf8(size)
                                .ok()
                                .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
                                .ok_or(XfccError::BadChunk)?;
                            if size == 0 {
                                State::Trailers
                            } else {
                                State::ChunkData(size)
                            }
                        }
                        State::ChunkEnd if text.is_empty() => State::ChunkSize,
                        State::ChunkEnd => return Err(XfccError::BadChunk),
                        // Trailers end with an empty line; then the next request.
                        _ if text.is_empty() => State::Head,
                        _ => State::Trailers,
                    };
                }
            }
        }
        Ok(())
    }

    /// Moves input into `pending` up to and including `delimiter`; returns where the content
    /// before the delimiter ends, or `None` if more input is needed.
    fn take_until(
        &mut self,
        input: &mut &[u8],
        delimiter: &[u8],
        max: usize,
    ) -> Result<Option<usize>, XfccError> {
        let searched_from = self.pending.len().saturating_sub(delimiter.len() - 1);
        let room = (max + delimiter.len()).saturating_sub(self.pending.len());
        let take = input.len().min(room);
        self.pending.extend_from_slice(&input[..take]);
        let found = self.pending[searched_from..]
            .windows(delimiter.len())
            .position(|w| w == delimiter)
            .map(|i| searched_from + i);
        match found {
            Some(at) => {
                let end = at + delimiter.len();
                // Give back what came after the delimiter.
                let extra = self.pending.len() - end;
                self.pending.truncate(end);
                *input = &input[take - extra..];
                Ok(Some(at))
            }
            None if self.pending.len() >= max + delimiter.len() => Err(if delimiter.len() == 4 {
                XfccError::HeadTooLong
            } else {
                XfccError::BadChunk
            }),
            None => {
                *input = &input[take..];
                Ok(None)
            }
        }
    }

    fn rewrite_head(&mut self, head: &[u8], out: &mut Vec<u8>) -> Result<(), XfccError> {
        let mut lines = head
            .split(|b| *b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let request_line = lines.next().unwrap_or_default();
        if !request_line.ends_with(b" HTTP/1.1") && !request_line.ends_with(b" HTTP/1.0") {
            return Err(XfccError::NotHttp1);
        }
        out.extend_from_slice(request_line);
        out.extend_from_slice(b"\r\n");
        let (mut length, mut chunked, mut upgrade) = (None::<u64>, false, false);
        for line in lines {
            let Some(colon) = line.iter().position(|b| *b == b':') else {
                return Err(XfccError::NotHttp1);
            };
            // Obsolete line folding would hide a header inside another.
            if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                return Err(XfccError::NotHttp1);
            }
            let name = String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase();
            let value = String::from_utf8_lossy(&line[colon + 1..])
                .trim()
                .to_ascii_lowercase();
            match name.as_str() {
                HEADER => continue,
                "content-length" => {
                    let parsed: u64 = value.parse().map_err(|_| XfccError::AmbiguousFraming)?;
                    if length.is_some_and(|l| l != parsed) {
                        return Err(XfccError::AmbiguousFraming);
                    }
                    length = Some(parsed);
                }
                "transfer-encoding" => chunked = value.ends_with("chunked"),
                "upgrade" => upgrade = true,
                _ => {}
            }
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
        if chunked && length.is_some() {
            return Err(XfccError::AmbiguousFraming);
        }
        out.extend_from_slice(&self.added);
        out.extend_from_slice(b"\r\n");
        self.state = if upgrade {
            State::PassThrough
        } else if chunked {
            State::ChunkSize
        } else {
            match length {
                Some(0) | None => State::Head,
                Some(n) => State::Body(n),
            }
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str =
        "X-Forwarded-Client-Cert: By=spiffe://td/node/b;URI=spiffe://td/frontend\r\n";

    fn rewriter() -> RequestRewriter {
        RequestRewriter::new("spiffe://td/node/b", "spiffe://td/frontend")
    }

    /// Feeds `input` in pieces of `step` bytes and returns the output.
    fn run(input: &[u8], step: usize) -> Result<String, XfccError> {
        let mut rewriter = rewriter();
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            rewriter.feed(piece, &mut out)?;
        }
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn spoofed_headers_are_replaced_on_every_keep_alive_request_however_the_bytes_arrive() {
        let input =
            b"GET /a HTTP/1.1\r\nHost: b\r\nX-Forwarded-Client-Cert: URI=spiffe://td/admin\r\n\r\n\
POST /b HTTP/1.1\r\nHost: b\r\nx-forwarded-client-cert: spoof\r\nContent-Length: 44\r\n\r\n\
X-Forwarded-Client-Cert: in a body, untouched\
GET /c HTTP/1.1\r\nHost: b\r\n\r\n";
        for step in [1, 3, 7, 64, input.len()] {
            let out = run(input, step).unwrap();
            assert_eq!(out.matches("spoof").count(), 0, "step {step}: {out}");
            assert!(!out.contains("URI=spiffe://td/admin"), "step {step}");
            assert_eq!(
                out.matches(OURS).count(),
                3,
                "one per request, step {step}: {out}"
            );
            assert!(
                out.contains("X-Forwarded-Client-Cert: in a body, untouched"),
                "bodies pass"
            );
        }
    }

    #[test]
    fn chunked_bodies_are_passed_and_the_next_request_is_rewritten() {
        let input = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
5\r\nhello\r\n0\r\nX-Forwarded-Client-Cert: trailer\r\n\r\n\
GET / HTTP/1.1\r\nX-Forwarded-Client-Cert: spoof\r\n\r\n";
        for step in [1, 5, input.len()] {
            let out = run(input, step).unwrap();
            assert!(out.contains("5\r\nhello\r\n0\r\n"), "{out}");
            assert_eq!(out.matches(OURS).count(), 2, "{out}");
            assert!(!out.contains("spoof"), "{out}");
        }
    }

    #[test]
    fn what_cannot_be_framed_safely_ends_the_connection() {
        let both = b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(run(both, 4).unwrap_err(), XfccError::AmbiguousFraming);
        let two = b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
        assert_eq!(run(two, 4).unwrap_err(), XfccError::AmbiguousFraming);
        let folded = b"GET / HTTP/1.1\r\nA: b\r\n X-Forwarded-Client-Cert: x\r\n\r\n";
        assert_eq!(run(folded, 4).unwrap_err(), XfccError::NotHttp1);
        let huge = [b"GET / HTTP/1.1\r\nA: ".as_slice(), &[b'a'; MAX_HEAD + 10]].concat();
        assert_eq!(run(&huge, 1000).unwrap_err(), XfccError::HeadTooLong);
        let bad_chunk = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(run(bad_chunk, 2).unwrap_err(), XfccError::BadChunk);
        assert_eq!(
            run(b"\x16\x03\x01 not http\r\n\r\n", 4).unwrap_err(),
            XfccError::NotHttp1
        );
    }

    #[test]
    fn for_an_unauthenticated_caller_the_header_is_only_removed() {
        let mut rewriter = RequestRewriter::stripping();
        let mut out = Vec::new();
        rewriter
            .feed(b"GET / HTTP/1.1\r\nX-Forwarded-Client-Cert: URI=spiffe://td/admin\r\nHost: b\r\n\r\n", &mut out)
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET / HTTP/1.1\r\nHost: b\r\n\r\n"
        );
    }

    #[test]
    fn an_upgrade_passes_the_rest_through() {
        let input = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nX-Forwarded-Client-Cert: frame data";
        let out = run(input, 3).unwrap();
        assert!(
            out.ends_with("\r\n\r\nX-Forwarded-Client-Cert: frame data"),
            "{out}"
        );
    }
}
