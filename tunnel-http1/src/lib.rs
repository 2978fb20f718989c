//! HTTP/1.1 request framing for `X-Forwarded-Client-Cert` (XFCC): the daemon's `proxy/xfcc`
//! feeds every byte a caller sends on an `xfcc` workload port through a [`RequestRewriter`],
//! which adds `X-Forwarded-Client-Cert: By=<our identity>;URI=<caller>` to each request and
//! removes any XFCC the caller wrote. Sans-IO (bytes in, bytes out) and depending only on
//! httparse and thiserror, so that `fuzz/` can build it alone with libFuzzer's
//! instrumentation, without the daemon's TLS library and eBPF build.
//!
//! It owns: finding request heads and parsing them with httparse (`head`), chunked framing
//! and trailers (`chunked`), the stream state machine across pipelined keep-alive requests
//! (`rewriter`), and the one error type ([`Error`]).
//!
//! The rules are RFC 9112's for an intermediary that must frame every request exactly as the
//! workload will: the workload trusts the header, so a request the rewriter did not see (a
//! body it took for a request, or a request it took for a body) would carry the caller's own.
//! What it forwards is only what it parsed, serialised again (`name: value` + CRLF), never
//! the bytes of a head as received. What is ambiguous is refused, and a refusal ends the
//! connection (the call sites reset both sides and log the error's message):
//!
//! - whitespace before a header's colon (§5.1), obsolete line folding (§5.2), a bare CR, a
//!   bare LF (§2.2 lets a recipient accept one; refused here, at once, so that no line is read
//!   two ways), a request line that is not HTTP/1.0 or HTTP/1.1 (the HTTP/2 preface too);
//! - `Content-Length` that is not decimal digits, or repeated with different values (repeated
//!   with the same value is accepted and forwarded once, RFC 9110 §8.6), or given with
//!   `Transfer-Encoding` (§6.1);
//! - any `Transfer-Encoding` but a single `chunked` (§6.3 requires chunked to be the final
//!   coding; codings before it are refused as well: clients do not send them, and a list is
//!   where parsers differ), and any in an HTTP/1.0 request (§6.1);
//! - heads over [`MAX_HEAD`] bytes or with more than [`MAX_HEADERS`] fields, chunk sizes that
//!   are not 1 to 16 hex digits, malformed chunk extensions, chunk data not followed by CRLF.
//!
//! Forwarded in a canonical form: `Content-Length` as its number, `Transfer-Encoding:
//! chunked`, chunk sizes in lowercase hex; chunk extensions (none is standard, §7.1.1 says to
//! ignore them) are checked and dropped. An XFCC in the trailers is dropped, like one in the
//! head. A header named XFCC with `_` for `-` is removed too: CGI-style servers map both
//! spellings to the same variable.
//!
//! After a request that may switch protocols (`Upgrade` in HTTP/1.1, or `CONNECT`), the rest
//! passes through unread, but only if its first bytes cannot begin an HTTP/1 request for any
//! parser: otherwise a caller could send `Upgrade: x` to a workload that ignores it and have
//! the requests that follow reach it unrewritten. See `rewriter::could_be_http`.

mod chunked;
mod error;
mod head;
mod rewriter;
mod text;

#[cfg(test)]
mod tests;

pub use error::{Error, Unit};
pub use rewriter::RequestRewriter;

/// The largest request head (request line and header section, without empty lines before
/// it) and the largest trailer section accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header fields in a head, or in a trailer section.
pub const MAX_HEADERS: usize = 100;
/// The largest chunk-size line (size and extensions, with its CRLF).
pub const MAX_CHUNK_LINE: usize = 4096;
/// The header this crate is about.
pub const XFCC: &str = "x-forwarded-client-cert";
