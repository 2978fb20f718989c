//! The rewriter's tests. Every case goes through [`rewrite`], which feeds the input whole,
//! byte by byte and cut in two at every boundary, and requires the same output and outcome
//! each way.

mod chunked;
mod framing;
mod smuggling;

use crate::{Error, RequestRewriter};

const OURS: &str = "X-Forwarded-Client-Cert: By=spiffe://td/node/b;URI=spiffe://td/frontend\r\n";

fn rewriter() -> RequestRewriter {
    RequestRewriter::new("spiffe://td/node/b", "spiffe://td/frontend")
}

/// What a rewriter forwards when fed `pieces` in turn, and how it ended.
fn run(mut rewriter: RequestRewriter, pieces: &[&[u8]]) -> (Vec<u8>, Result<(), Error>) {
    let mut out = Vec::new();
    for piece in pieces {
        if let Err(e) = rewriter.feed(piece, &mut out) {
            return (out, Err(e));
        }
    }
    (out, Ok(()))
}

/// The same with every cut: whole, byte by byte, and in two at each boundary.
fn every_cut(make: fn() -> RequestRewriter, input: &[u8]) -> (Vec<u8>, Result<(), Error>) {
    let (whole, outcome) = run(make(), &[input]);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(
        run(make(), &bytes),
        (whole.clone(), outcome.clone()),
        "byte by byte"
    );
    for cut in 1..input.len() {
        let (a, b) = input.split_at(cut);
        assert_eq!(
            run(make(), &[a, b]),
            (whole.clone(), outcome.clone()),
            "cut at {cut}"
        );
    }
    (whole, outcome)
}

/// What the workload gets for `input`, which must be accepted.
fn forwarded(input: &str) -> String {
    let (out, outcome) = every_cut(rewriter, input.as_bytes());
    if let Err(e) = outcome {
        panic!("refused ({e}): {input:?}");
    }
    String::from_utf8(out).expect("ASCII tests")
}

/// Why `input` is refused, which it must be; and what was forwarded before.
fn refused_after(input: &[u8]) -> (String, Error) {
    match every_cut(rewriter, input) {
        (out, Err(e)) => (String::from_utf8(out).expect("ASCII tests"), e),
        (out, Ok(())) => panic!("accepted {input:?} as {:?}", String::from_utf8_lossy(&out)),
    }
}

/// Why `input`, a single request, is refused; nothing of it may be forwarded.
fn refused(input: &str) -> Error {
    let (out, e) = refused_after(input.as_bytes());
    assert_eq!(out, "", "forwarded before the refusal ({e})");
    e
}

/// Expected text in an error.
fn s(text: &str) -> String {
    text.to_string()
}
