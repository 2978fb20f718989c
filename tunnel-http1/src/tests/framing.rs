//! Framing across requests: keep-alive and pipelining, chunked bodies, upgrades and CONNECT,
//! `Expect: 100-continue`, the unauthenticated caller's stripping rewriter.

use super::{OURS, every_cut, forwarded, refused, refused_after, rewriter, run};
use crate::{Error, RequestRewriter};

const THREE: &str = "GET /a HTTP/1.1\r\nHost: b\r\nX-Forwarded-Client-Cert: URI=spiffe://td/admin\r\n\r\n\
POST /b HTTP/1.1\r\nHost: b\r\nx-forwarded-client-cert: spoof\r\nContent-Length: 44\r\n\r\n\
X-Forwarded-Client-Cert: in a body, untouched\
PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";

fn three_rewritten() -> String {
    format!(
        "GET /a HTTP/1.1\r\nHost: b\r\n{OURS}\r\n\
POST /b HTTP/1.1\r\nHost: b\r\nContent-Length: 44\r\n{OURS}\r\n\
X-Forwarded-Client-Cert: in a body, untouched\
PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n{OURS}\r\n3\r\nabc\r\n0\r\n\r\n"
    )
}

#[test]
fn spoofed_headers_are_replaced_on_every_pipelined_request_however_the_bytes_arrive() {
    // Whole, byte by byte and in two at every boundary (`forwarded`)...
    assert_eq!(forwarded(THREE), three_rewritten());
    // ...and in three at every pair of boundaries.
    let input = THREE.as_bytes();
    for i in 1..input.len() {
        for j in i + 1..input.len() {
            let pieces = [&input[..i], &input[i..j], &input[j..]];
            let (out, outcome) = run(rewriter(), &pieces);
            assert_eq!(outcome, Ok(()), "cut at {i} and {j}");
            assert_eq!(out, three_rewritten().as_bytes(), "cut at {i} and {j}");
        }
    }
}

#[test]
fn empty_lines_before_a_request_are_dropped() {
    let input = "\r\n\r\nGET / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nx\r\nGET / HTTP/1.1\r\n\r\n";
    assert_eq!(
        forwarded(input),
        format!(
            "GET / HTTP/1.1\r\n{OURS}\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\n{OURS}\r\nxGET / HTTP/1.1\r\n{OURS}\r\n"
        )
    );
}

#[test]
fn chunked_bodies_pass_and_the_next_request_is_rewritten() {
    let input = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n\
GET / HTTP/1.1\r\nX-Forwarded-Client-Cert: spoof\r\n\r\n";
    assert_eq!(
        forwarded(input),
        format!(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n{OURS}\r\n5\r\nhello\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n\
GET / HTTP/1.1\r\n{OURS}\r\n"
        )
    );
}

#[test]
fn expect_100_continue_gets_its_head_before_the_body_is_sent() {
    let mut rewriter = rewriter();
    let mut out = Vec::new();
    let head = "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
    rewriter.feed(head.as_bytes(), &mut out).unwrap();
    assert_eq!(
        String::from_utf8(out.clone()).unwrap(),
        format!("POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n{OURS}\r\n")
    );
    // The body comes once the workload said 100 Continue.
    out.clear();
    rewriter.feed(b"hello", &mut out).unwrap();
    assert_eq!(out, b"hello");
}

#[test]
fn after_an_upgrade_what_is_no_http_passes_through() {
    // A WebSocket frame from a client: FIN + text, then the mask bit.
    let frame = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58X-Forwarded-Client-Cert: x\r\n\r\n";
    let head = "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    let input = [head.as_bytes(), frame].concat();
    let (out, outcome) = every_cut(rewriter, &input);
    assert_eq!(outcome, Ok(()));
    let rewritten =
        format!("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{OURS}\r\n");
    assert_eq!(out, [rewritten.as_bytes(), frame].concat());
    // A compressed fragment begins with 'A' (RSV1 + text); its second byte has the mask bit.
    let compressed = b"\x41\x83abc";
    let input = [head.as_bytes(), compressed].concat();
    let (out, _) = run(rewriter(), &[&input]);
    assert_eq!(out, [rewritten.as_bytes(), compressed].concat());
    // TLS through CONNECT; the CONNECT's body, if any, is framed first.
    let hello = b"\x16\x03\x01\x00\x05hello";
    let connect = "CONNECT db:5432 HTTP/1.1\r\nContent-Length: 2\r\n\r\nok";
    let input = [connect.as_bytes(), hello].concat();
    let (out, outcome) = every_cut(rewriter, &input);
    assert_eq!(outcome, Ok(()));
    let expected = format!("CONNECT db:5432 HTTP/1.1\r\nContent-Length: 2\r\n{OURS}\r\nok");
    assert_eq!(out, [expected.as_bytes(), hello].concat());
}

#[test]
fn an_upgrade_the_workload_ignores_does_not_let_requests_through_unrewritten() {
    // A workload without WebSocket ignores Upgrade and reads the next request.
    let input = "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\
GET /admin HTTP/1.1\r\nX-Forwarded-Client-Cert: URI=spiffe://td/admin\r\n\r\n";
    assert_eq!(
        forwarded(input),
        format!(
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{OURS}\r\nGET /admin HTTP/1.1\r\n{OURS}\r\n"
        )
    );
    // Empty lines a lenient parser skips do not make the rest pass either.
    let skipped =
        "CONNECT x:1 HTTP/1.1\r\n\r\n\r\nGET /admin HTTP/1.1\r\nX-Forwarded-Client-Cert: x\r\n\r\n";
    assert_eq!(
        forwarded(skipped),
        format!("CONNECT x:1 HTTP/1.1\r\n{OURS}\r\nGET /admin HTTP/1.1\r\n{OURS}\r\n")
    );
    // Text that is no request: refused, not passed.
    let text = "GET / HTTP/1.1\r\nUpgrade: foo\r\n\r\nhello there\r\n\r\n";
    let (out, e) = refused_after(text.as_bytes());
    assert_eq!(out, format!("GET / HTTP/1.1\r\nUpgrade: foo\r\n{OURS}\r\n"));
    assert_eq!(e, Error::RequestLine("hello there".into()));
    // HTTP/2 after an h2c upgrade: its requests could not be rewritten.
    let h2c = "GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    assert_eq!(
        refused_after(h2c.as_bytes()).1,
        Error::NotHttp1("PRI * HTTP/2.0".into())
    );
    // HTTP/1.0 has no upgrade (RFC 9110 §7.8): the next bytes are a request.
    let http10 = b"GET / HTTP/1.0\r\nUpgrade: websocket\r\n\r\n\x81\x80abcd\r\n\r\n";
    assert_eq!(
        refused_after(http10).1,
        Error::RequestLine("\\x81\\x80abcd".into())
    );
}

#[test]
fn for_an_unauthenticated_caller_the_header_is_only_removed() {
    let input =
        b"GET / HTTP/1.1\r\nX-Forwarded-Client-Cert: URI=spiffe://td/admin\r\nHost: b\r\n\r\n\
POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Forwarded-Client-Cert: t\r\n\r\n";
    let (out, outcome) = every_cut(RequestRewriter::stripping, input);
    assert_eq!(outcome, Ok(()));
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "GET / HTTP/1.1\r\nHost: b\r\n\r\nPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    );
    let (_, outcome) = every_cut(
        RequestRewriter::stripping,
        b"GET / HTTP/1.1\r\nX-Forwarded-Client-Cert : x\r\n\r\n",
    );
    assert_eq!(
        outcome,
        Err(Error::WhitespaceBeforeColon(
            "X-Forwarded-Client-Cert ".into()
        ))
    );
}

#[test]
fn refusals_name_what_was_wrong_in_lowercase_words() {
    let e = refused("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n");
    assert_eq!(e.to_string(), "conflicting Content-Length values 5 and 6");
    let e = refused("POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n");
    assert_eq!(
        e.to_string(),
        "a Transfer-Encoding other than a single 'chunked': 'xchunked'"
    );
    let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(crate::MAX_HEAD));
    let (_, outcome) = run(rewriter(), &[long.as_bytes()]);
    assert_eq!(
        outcome.unwrap_err().to_string(),
        "a request head longer than 65536 bytes"
    );
}
