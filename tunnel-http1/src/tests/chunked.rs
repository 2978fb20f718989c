//! The smuggling corpus, chunked coding: chunk sizes, extensions, the CRLF after data,
//! trailers.

use super::{OURS, forwarded, refused_after, s};
use crate::{Error, Unit, text::shown};

#[test]
fn chunk_extensions_are_checked_and_dropped() {
    let with = |line: &str| {
        format!("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{line}\r\nhello\r\n0\r\n\r\n")
    };
    let head = format!("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n{OURS}\r\n");
    let plain = format!("{head}5\r\nhello\r\n0\r\n\r\n");
    for line in [
        "5;name",
        "5;name=value",
        "5 ; a = b ;c=\"quoted \\\" ;x\"",
        "5\t;a",
        "05",
    ] {
        assert_eq!(forwarded(&with(line)), plain, "{line:?}");
    }
    for line in [
        "5;",
        "5;=x",
        "5;a=",
        "5;a=\"open",
        "5;a=\"x\"y",
        "5;a b",
        "5;a=\x01",
    ] {
        let e = refused_after(with(line).as_bytes());
        assert_eq!(
            e,
            (head.clone(), Error::ChunkExtension(shown(line.as_bytes())))
        );
    }
    let long = format!("5;{}", "a".repeat(crate::MAX_CHUNK_LINE));
    assert_eq!(
        refused_after(with(&long).as_bytes()),
        (head.clone(), Error::TooLong(Unit::ChunkLine))
    );
}

#[test]
fn chunk_sizes_are_hex_digits_only() {
    let with =
        |line: &str| format!("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{line}\r\n");
    let head = format!("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n{OURS}\r\n");
    for line in [
        "0x5",
        "+5",
        "-5",
        " 5",
        "5 ",
        "",
        "g",
        "10000000000000000",
        "5\x0b",
    ] {
        assert_eq!(
            refused_after(with(line).as_bytes()),
            (head.clone(), Error::ChunkSize(shown(line.as_bytes()))),
            "{line:?}"
        );
    }
    // 16 digits fill a u64: the largest size, accepted.
    assert_eq!(
        forwarded(&format!("{}abc", with("FFFFFFFFFFFFFFFF"))),
        format!("{head}ffffffffffffffff\r\nabc")
    );
    let no_crlf = format!("{}hellox", with("5"));
    assert_eq!(
        refused_after(no_crlf.as_bytes()),
        (format!("{head}5\r\nhello"), Error::ChunkDataEnd)
    );
    let bare_lf = format!("{}hello\n0\r\n\r\n", with("5"));
    assert_eq!(
        refused_after(bare_lf.as_bytes()),
        (format!("{head}5\r\nhello"), Error::ChunkDataEnd)
    );
}

#[test]
fn an_xfcc_in_the_trailers_is_dropped() {
    let input = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\
X-Forwarded-Client-Cert: URI=spiffe://td/admin\r\nChecksum: abc\r\nx_forwarded_client_cert: y\r\n\r\n\
GET /next HTTP/1.1\r\n\r\n";
    assert_eq!(
        forwarded(input),
        format!(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n{OURS}\r\n5\r\nhello\r\n0\r\n\
Checksum: abc\r\n\r\nGET /next HTTP/1.1\r\n{OURS}\r\n"
        )
    );
    // Trailers follow the rules of a head.
    let spaced = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Forwarded-Client-Cert : x\r\n\r\n";
    assert_eq!(
        refused_after(spaced.as_bytes()).1,
        Error::WhitespaceBeforeColon(s("X-Forwarded-Client-Cert "))
    );
    let bare = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: b\n\r\n";
    assert_eq!(
        refused_after(bare.as_bytes()).1,
        Error::BareLf(Unit::Trailers)
    );
}
