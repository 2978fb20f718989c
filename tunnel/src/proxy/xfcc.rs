//! `X-Forwarded-Client-Cert` for HTTP/1.1 workload ports: every request a tunnelled caller
//! sends gets `X-Forwarded-Client-Cert: By=<our identity>;URI=<caller's identity>` added,
//! and any such header the caller wrote itself removed, on every request of a keep-alive
//! connection (the header must not be spoofable); on the plaintext path the caller's is only
//! removed. The rewriter is the `tunnel-http1` crate's: sans-IO, RFC 9112's framing rules for
//! an intermediary, small enough to be fuzzed alone (`fuzz/`). Its crate documentation says
//! what it refuses; a refusal ([`XfccError`]) resets the connection on both sides, logged
//! with the error's words (`copy::bidirectional_rewriting`, `plaintext`).

pub use tunnel_http1::{Error as XfccError, RequestRewriter};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xfcc_names_us_and_the_caller_and_replaces_the_callers_own() {
        let mut rewriter = RequestRewriter::new("spiffe://td/node/b", "spiffe://td/frontend");
        let mut out = Vec::new();
        rewriter
            .feed(
                b"GET / HTTP/1.1\r\nHost: b\r\nX-Forwarded-Client-Cert: URI=spiffe://td/admin\r\n\r\n",
                &mut out,
            )
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET / HTTP/1.1\r\nHost: b\r\n\
X-Forwarded-Client-Cert: By=spiffe://td/node/b;URI=spiffe://td/frontend\r\n\r\n"
        );
    }

    #[test]
    fn xfcc_refusals_are_said_in_words() {
        let mut out = Vec::new();
        let error = RequestRewriter::stripping()
            .feed(
                b"GET / HTTP/1.1\r\nX-Forwarded-Client-Cert : x\r\n\r\n",
                &mut out,
            )
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "whitespace between the header name and the colon in 'X-Forwarded-Client-Cert '"
        );
    }
}
