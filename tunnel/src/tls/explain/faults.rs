//! The certificate faults that rustls's `CertificateError` and webpki's `Error` each name in
//! their own way (expired, not yet valid, unknown issuer, wrong purpose...): one sentence
//! for each, whichever crate reports it.

use rustls::pki_types::UnixTime;

use super::words::time;
use crate::duration::span;

pub(super) const PURPOSE_HINT: &str = "a caller needs the clientAuth EKU, a server serverAuth";

pub(super) fn expired(checked: UnixTime, not_after: UnixTime) -> String {
    format!(
        "the certificate has expired: not valid after {}, {} before the check at {}; renew it, \
         or check this host's clock",
        time(not_after),
        span(checked.as_secs().saturating_sub(not_after.as_secs())),
        time(checked)
    )
}

pub(super) fn not_valid_yet(checked: UnixTime, not_before: UnixTime) -> String {
    let ahead = not_before.as_secs().saturating_sub(checked.as_secs());
    // A certificate issued a moment ago and judged by a clock a little behind: the issuer's
    // clock or the checker's is off, not the certificate.
    let hint = if ahead < CLOCK_SKEW_SUSPECTED.as_secs() {
        "clock skew suspected: the issuer's clock and this host's disagree; check NTP on both"
    } else {
        "check both clocks, or wait for its validity to start"
    };
    format!(
        "the certificate is not valid yet: not valid before {}, {} after the check at {}; {hint}",
        time(not_before),
        span(ahead),
        time(checked)
    )
}

/// A certificate that becomes valid sooner than this after the check was most likely issued
/// just now by a host whose clock runs ahead.
pub const CLOCK_SKEW_SUSPECTED: std::time::Duration = std::time::Duration::from_secs(300);

pub(super) fn unknown_issuer() -> String {
    "the certificate was not issued by a CA in the trust bundle (unknown issuer)".into()
}

pub(super) fn bad_signature() -> String {
    "a signature in the certificate chain does not verify: the certificate was issued by \
     another CA than the trust bundle's (one with the same name but a different key), or it \
     was altered"
        .into()
}

pub(super) fn unsupported_signature_algorithm() -> String {
    "a certificate in the chain is signed with an algorithm the verifier does not accept \
     (ECDSA, Ed25519 and RSA are)"
        .into()
}

pub(super) fn signature_key_mismatch() -> String {
    "a signature in the chain does not fit its issuer's key type (e.g. an RSA signature by an \
     ECDSA key)"
        .into()
}

pub(super) fn invalid_purpose(required: &str, presented: Vec<String>) -> String {
    let presented = if presented.is_empty() {
        "none".into()
    } else {
        presented.join(", ")
    };
    format!(
        "the certificate is not valid for this use: {required} is required, it allows \
         {presented} ({PURPOSE_HINT})"
    )
}

pub(super) fn oid_name(oid: &[usize]) -> String {
    match oid {
        webpki::KeyUsage::CLIENT_AUTH_REPR => "clientAuth".into(),
        webpki::KeyUsage::SERVER_AUTH_REPR => "serverAuth".into(),
        other => other
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("."),
    }
}
