//! The request-smuggling corpus: each case says exactly what the workload gets, or why the
//! connection is refused. Chunked coding's cases are in `chunked`.

use super::{OURS, forwarded, refused, refused_after, s};
use crate::{Error, MAX_HEAD, MAX_HEADERS, Unit};

#[test]
fn whitespace_before_the_colon_is_refused() {
    // The attacker's case: passed verbatim before, so a trimming parser saw two XFCCs.
    let input = "GET / HTTP/1.1\r\nHost: b\r\nX-Forwarded-Client-Cert : URI=spiffe://example.org/admin\r\n\r\n";
    assert_eq!(
        refused(input),
        Error::WhitespaceBeforeColon(s("X-Forwarded-Client-Cert "))
    );
    assert_eq!(
        refused(input).to_string(),
        "whitespace between the header name and the colon in 'X-Forwarded-Client-Cert '"
    );
    let tab = "GET / HTTP/1.1\r\nHost\t: b\r\n\r\n";
    assert_eq!(refused(tab), Error::WhitespaceBeforeColon(s("Host\\x09")));
}

#[test]
fn obsolete_line_folding_is_refused() {
    let folded = "GET / HTTP/1.1\r\nX-A: a\r\n X-Forwarded-Client-Cert: x\r\n\r\n";
    assert_eq!(
        refused(folded),
        Error::ObsFold(s(" X-Forwarded-Client-Cert: x"))
    );
    // Whitespace before the first field line (RFC 9112 §2.2): refused too.
    let first = "GET / HTTP/1.1\r\n\tHost: b\r\n\r\n";
    assert_eq!(refused(first), Error::ObsFold(s("\\x09Host: b")));
}

#[test]
fn a_bare_cr_is_refused() {
    let in_value = "GET / HTTP/1.1\r\nHost: b\rX-Forwarded-Client-Cert: x\r\n\r\n";
    assert_eq!(refused(in_value), Error::BareCr(Unit::Head));
    let in_line = "GET /\r HTTP/1.1\r\n\r\n";
    assert_eq!(refused(in_line), Error::BareCr(Unit::Head));
    let before = "\r\rGET / HTTP/1.1\r\n\r\n";
    assert_eq!(refused(before), Error::BareCr(Unit::Head));
}

#[test]
fn a_bare_lf_is_refused_as_soon_as_it_comes() {
    let input = "GET / HTTP/1.1\nHost: b\n\n";
    assert_eq!(refused(input), Error::BareLf(Unit::Head));
    assert_eq!(
        refused(input).to_string(),
        "a bare LF (a line ending without CR) in a request head"
    );
    // Not left waiting for the CRLF CRLF that never comes.
    assert_eq!(refused("GET / HTTP/1.1\n"), Error::BareLf(Unit::Head));
    assert_eq!(
        refused("GET / HTTP/1.1\r\nHost: b\n\r\n"),
        Error::BareLf(Unit::Head)
    );
    assert_eq!(
        refused("\nGET / HTTP/1.1\r\n\r\n"),
        Error::BareLf(Unit::Head)
    );
    let chunk_line = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n";
    let (out, e) = refused_after(chunk_line.as_bytes());
    assert_eq!(e, Error::BareLf(Unit::ChunkLine));
    assert_eq!(
        out,
        format!("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n{OURS}\r\n")
    );
}

#[test]
fn content_length_with_transfer_encoding_is_refused() {
    let cl_te =
        "POST / HTTP/1.1\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG";
    assert_eq!(refused(cl_te), Error::LengthAndTransferEncoding);
    let te_cl = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n";
    assert_eq!(refused(te_cl), Error::LengthAndTransferEncoding);
}

#[test]
fn transfer_encoding_is_a_single_chunked_or_refused() {
    let with = |te: &str| format!("POST / HTTP/1.1\r\nHost: b\r\n{te}\r\n\r\n0\r\n\r\n");
    let not_chunked = |v: &str| Error::NotChunked(s(v));
    assert_eq!(
        refused(&with("Transfer-Encoding: xchunked")),
        not_chunked("xchunked")
    );
    assert_eq!(
        refused(&with("Transfer-Encoding : chunked")),
        Error::WhitespaceBeforeColon(s("Transfer-Encoding "))
    );
    assert_eq!(
        refused(&with("Transfer-Encoding: chunked, identity")),
        not_chunked("chunked, identity")
    );
    assert_eq!(
        refused(&with("Transfer-Encoding: gzip, chunked")),
        not_chunked("gzip, chunked")
    );
    assert_eq!(
        refused(&with("Transfer-Encoding: identity")),
        not_chunked("identity")
    );
    assert_eq!(refused(&with("Transfer-Encoding:")), not_chunked(""));
    assert_eq!(
        refused(&with("Transfer-Encoding: chunked;x=1")),
        not_chunked("chunked;x=1")
    );
    assert_eq!(
        refused(&with("Transfer-Encoding: \x0bchunked")),
        Error::FieldValue(s("Transfer-Encoding"))
    );
    assert_eq!(
        refused(&with(
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked"
        )),
        Error::TransferEncodingRepeated
    );
    assert_eq!(
        refused(&with(
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity"
        )),
        Error::TransferEncodingRepeated
    );
    assert_eq!(
        refused(&with(
            "Transfer-Encoding: identity\r\nTransfer-Encoding: chunked"
        )),
        not_chunked("identity")
    );
    // Whitespace around a value is not part of it (OWS) and case does not matter: the
    // workload gets the one spelling.
    let canonical =
        format!("POST / HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked\r\n{OURS}\r\n0\r\n\r\n");
    for te in [
        "Transfer-Encoding:\tchunked",
        "Transfer-Encoding: chunked \t",
        "Transfer-Encoding:CHUNKED",
    ] {
        assert_eq!(forwarded(&with(te)), canonical, "{te:?}");
    }
    let http10 = "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    assert_eq!(refused(http10), Error::TransferEncodingInHttp10);
}

#[test]
fn content_length_is_digits_and_repeats_must_agree() {
    let with = |cl: &str| format!("POST / HTTP/1.1\r\n{cl}\r\n\r\nhello");
    let once = format!("POST / HTTP/1.1\r\nContent-Length: 5\r\n{OURS}\r\nhello");
    // The same value twice, as two fields or a list, is taken as one (RFC 9110 §8.6).
    assert_eq!(
        forwarded(&with("Content-Length: 5\r\nContent-Length: 5")),
        once
    );
    assert_eq!(forwarded(&with("Content-Length: 5, 5")), once);
    assert_eq!(forwarded(&with("Content-Length: 005")), once);
    assert_eq!(
        refused(&with("Content-Length: 5\r\nContent-Length: 6")),
        Error::ConflictingLengths(5, 6)
    );
    assert_eq!(
        refused(&with("Content-Length: 5, 6")),
        Error::ConflictingLengths(5, 6)
    );
    let invalid = |v: &str| Error::ContentLength(s(v));
    for value in [
        "+5",
        "-1",
        "0x5",
        "5 5",
        "5,",
        "",
        "five",
        "99999999999999999999",
    ] {
        assert_eq!(
            refused(&with(&format!("Content-Length: {value}"))),
            invalid(value),
            "{value:?}"
        );
    }
    assert_eq!(
        refused(&with("Content-Length: +5")).to_string(),
        "an invalid Content-Length '+5'"
    );
    // The largest that fits: accepted, the body passes for as long as it lasts.
    let huge =
        "POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\nGET / HTTP/1.1\r\n\r\n";
    assert_eq!(
        forwarded(huge),
        format!(
            "POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n{OURS}\r\nGET / HTTP/1.1\r\n\r\n"
        )
    );
}

#[test]
fn a_body_that_looks_like_a_request_passes_as_body() {
    let smuggled = "GET /admin HTTP/1.1\r\nX-Forwarded-Client-Cert: URI=spiffe://td/admin\r\n\r\n";
    let input = format!(
        "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let expected = format!(
        "POST / HTTP/1.1\r\nContent-Length: {}\r\n{OURS}\r\n{smuggled}",
        smuggled.len()
    );
    assert_eq!(forwarded(&input), expected);
    let chunked = format!(
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n",
        smuggled.len()
    );
    assert_eq!(
        forwarded(&chunked),
        format!(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n{OURS}\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n",
            smuggled.len()
        )
    );
}

#[test]
fn heads_past_the_limits_are_refused() {
    let filler = |n: usize| format!("GET / HTTP/1.1\r\nA: {}\r\n\r\n", "a".repeat(n));
    let at_limit = filler(MAX_HEAD - filler(0).len());
    assert_eq!(at_limit.len(), MAX_HEAD);
    let (out, outcome) = super::run(super::rewriter(), &[at_limit.as_bytes()]);
    assert_eq!((out.len(), outcome), (MAX_HEAD + OURS.len(), Ok(())));
    let over = filler(MAX_HEAD - filler(0).len() + 1);
    for step in [1, 1000, over.len()] {
        let pieces: Vec<&[u8]> = over.as_bytes().chunks(step).collect();
        assert_eq!(
            super::run(super::rewriter(), &pieces),
            (Vec::new(), Err(Error::TooLong(Unit::Head)))
        );
    }
    let fields = |n: usize| format!("GET / HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(n));
    assert!(forwarded(&fields(MAX_HEADERS)).ends_with(&format!("A: b\r\n{OURS}\r\n")));
    assert_eq!(
        refused(&fields(MAX_HEADERS + 1)),
        Error::TooManyFields(Unit::Head)
    );
}

#[test]
fn every_spelling_of_xfcc_is_removed() {
    let input = "GET / HTTP/1.1\r\nX-FORWARDED-CLIENT-CERT: a\r\nHost: b\r\nx-Forwarded-client-CERT: b\r\n\
X_Forwarded_Client_Cert: c\r\nx-forwarded-client-cert: d\r\nX-Forwarded-Client-Certs: kept\r\n\r\n";
    assert_eq!(
        forwarded(input),
        format!("GET / HTTP/1.1\r\nHost: b\r\nX-Forwarded-Client-Certs: kept\r\n{OURS}\r\n")
    );
}

#[test]
fn only_http_1_0_and_1_1_are_rewritten() {
    assert_eq!(
        forwarded("GET / HTTP/1.0\r\nX-Forwarded-Client-Cert: x\r\n\r\n"),
        format!("GET / HTTP/1.0\r\n{OURS}\r\n")
    );
    let preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    assert_eq!(refused(preface), Error::NotHttp1(s("PRI * HTTP/2.0")));
    assert_eq!(
        refused(preface).to_string(),
        "a request that is not HTTP/1.0 or HTTP/1.1: 'PRI * HTTP/2.0'"
    );
    assert_eq!(
        refused("GET / HTTP/1.2\r\n\r\n"),
        Error::NotHttp1(s("GET / HTTP/1.2"))
    );
    assert_eq!(
        refused("GET / HTTP/0.9\r\n\r\n"),
        Error::NotHttp1(s("GET / HTTP/0.9"))
    );
    assert_eq!(refused("GET /\r\n\r\n"), Error::RequestLine(s("GET /")));
    assert_eq!(
        refused("GET  / HTTP/1.1\r\n\r\n"),
        Error::RequestLine(s("GET  / HTTP/1.1"))
    );
    assert_eq!(
        refused("\x16\x03\x01 not http\r\n\r\n"),
        Error::RequestLine(s("\\x16\\x03\\x01 not http"))
    );
}

#[test]
fn a_request_without_host_is_not_ours_to_judge() {
    assert_eq!(
        forwarded("GET / HTTP/1.1\r\n\r\n"),
        format!("GET / HTTP/1.1\r\n{OURS}\r\n")
    );
}

#[test]
fn malformed_field_lines_are_named() {
    let with = |line: &str| format!("GET / HTTP/1.1\r\n{line}\r\n\r\n");
    assert_eq!(refused(&with("X@Y: z")), Error::FieldName(s("X@Y")));
    assert_eq!(refused(&with(": z")), Error::FieldName(s("")));
    assert_eq!(refused(&with("NoColon")), Error::NoColon(s("NoColon")));
    assert_eq!(refused(&with("A: b\x00c")), Error::FieldValue(s("A")));
    assert_eq!(refused(&with("A: b\x7fc")), Error::FieldValue(s("A")));
}
