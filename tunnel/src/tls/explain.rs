//! Handshake failures in words an operator can act on. The side that verifies knows exactly
//! what was wrong; the other side only receives an alert, so its message says which alert
//! and what it usually means.
//!
//! Every error a handshake can produce has a sentence here, including webpki's errors that
//! rustls passes on boxed in `CertificateError::Other` (a CA certificate used as a leaf, an
//! empty EKU...) and the SPIFFE rules' own [`VerifyError`]. The enums are non-exhaustive, so
//! a variant added later falls back to its bare name, never to a Debug dump of its fields.

use std::error::Error as StdError;

use rustls::{
    AlertDescription, CertRevocationListError, CertificateError, EncryptedClientHelloError, Error,
    ExtendedKeyPurpose, InconsistentKeys, InvalidMessage, PeerIncompatible, pki_types::UnixTime,
};

use super::verify::VerifyError;
use crate::identity::timestamp;

/// The rustls error somewhere in an error's source chain (tokio-rustls and h2 wrap it in
/// `io::Error`s).
pub fn rustls_error<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a Error> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<Error>() {
            return Some(found);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(found) = rustls_error(inner)
        {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// One sentence for a TLS failure.
pub fn explain(error: &Error) -> String {
    match error {
        Error::NoCertificatesPresented => "the peer presented no certificate".into(),
        Error::InvalidCertificate(cert) => certificate(cert),
        Error::AlertReceived(alert) => alert_received(*alert),
        Error::InappropriateMessage {
            expect_types,
            got_type,
        } => format!(
            "the peer does not speak TLS 1.3 correctly (plaintext or another protocol?): it sent \
             a record of type {} where {} was due",
            enum_name(got_type.as_str(), u8::from(*got_type)),
            names(expect_types.iter().map(|t| t.as_str().unwrap_or("unknown")))
        ),
        Error::InappropriateHandshakeMessage {
            expect_types,
            got_type,
        } => format!(
            "the peer does not speak TLS 1.3 correctly: it sent a handshake message of type {} \
             where {} was due",
            enum_name(got_type.as_str(), u8::from(*got_type)),
            names(expect_types.iter().map(|t| t.as_str().unwrap_or("unknown")))
        ),
        Error::InvalidMessage(message) => invalid_message(message),
        Error::PeerSentOversizedRecord => "the peer does not speak TLS correctly (plaintext or \
             another protocol?): it sent a record larger than TLS allows"
            .into(),
        Error::NoApplicationProtocol => {
            "the peer does not speak HBONE (no common ALPN protocol h2)".into()
        }
        Error::PeerIncompatible(why) => incompatible(why),
        Error::PeerMisbehaved(why) => format!(
            "the peer broke the TLS protocol ({}): a bug in its TLS implementation or an attack, \
             not a configuration problem",
            variant_name(why)
        ),
        Error::DecryptError => "a TLS record did not decrypt: the data was corrupted or altered \
             on the way"
            .into(),
        Error::EncryptError => "a TLS record could not be encrypted (too large: a bug)".into(),
        Error::InvalidEncryptedClientHello(e) => encrypted_client_hello(e),
        Error::UnsupportedNameType => "the server name is of a type the verifier does not \
             support (tunnel names peers by IP address: a bug)"
            .into(),
        Error::InvalidCertRevocationList(e) => revocation_list(e),
        Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => {
            "our private key does not belong to our certificate".into()
        }
        Error::InconsistentKeys(_) => {
            "our private key cannot be checked against our certificate".into()
        }
        Error::FailedToGetCurrentTime => {
            "this host's clock cannot be read, so no certificate can be checked".into()
        }
        Error::FailedToGetRandomBytes => {
            "this host's random number source failed (getrandom)".into()
        }
        Error::HandshakeNotComplete => "the TLS handshake had not completed (a bug)".into(),
        Error::BadMaxFragmentSize => "the TLS record size limit is out of range (a bug)".into(),
        Error::General(text) => format!("TLS failed: {text}"),
        Error::Other(other) => other_error(other.0.as_ref()),
        other => format!("TLS failed ({})", variant_name(other)),
    }
}

fn certificate(error: &CertificateError) -> String {
    match error {
        CertificateError::ExpiredContext { time, not_after } => expired(*time, *not_after),
        CertificateError::Expired => {
            "the certificate has expired (or its validity period is invalid)".into()
        }
        CertificateError::NotValidYetContext { time, not_before } => {
            not_valid_yet(*time, *not_before)
        }
        CertificateError::NotValidYet => {
            "the certificate is not valid yet; check both clocks".into()
        }
        CertificateError::UnknownIssuer => unknown_issuer(),
        CertificateError::BadSignature => bad_signature(),
        CertificateError::InvalidPurposeContext {
            required,
            presented,
        } => invalid_purpose(
            &eku_name(required),
            presented.iter().map(eku_name).collect(),
        ),
        CertificateError::InvalidPurpose => format!(
            "the certificate is not valid for this use: {}",
            PURPOSE_HINT
        ),
        CertificateError::Revoked => "the certificate has been revoked".into(),
        CertificateError::BadEncoding => {
            "the certificate is not valid DER (corrupt, or not a certificate)".into()
        }
        CertificateError::UnhandledCriticalExtension => {
            "the certificate has a critical extension the verifier cannot process".into()
        }
        CertificateError::UnknownRevocationStatus => {
            "the certificate's revocation status is unknown (no revocation list covers it)".into()
        }
        CertificateError::ExpiredRevocationListContext { next_update, .. } => format!(
            "the certificate revocation list expired at {}",
            time(*next_update)
        ),
        CertificateError::ExpiredRevocationList => {
            "the certificate revocation list has expired".into()
        }
        #[allow(deprecated)]
        CertificateError::UnsupportedSignatureAlgorithm
        | CertificateError::UnsupportedSignatureAlgorithmContext { .. } => {
            unsupported_signature_algorithm()
        }
        CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            signature_key_mismatch()
        }
        CertificateError::NotValidForNameContext { presented, .. } => format!(
            "the certificate is not valid for the name it was checked against (it names {})",
            if presented.is_empty() {
                "nothing".into()
            } else {
                presented.join(", ")
            }
        ),
        CertificateError::NotValidForName => {
            "the certificate is not valid for the name it was checked against".into()
        }
        CertificateError::InvalidOcspResponse => {
            "the certificate's stapled OCSP response is invalid".into()
        }
        CertificateError::ApplicationVerificationFailure => {
            "the certificate was refused by an application rule".into()
        }
        CertificateError::Other(other) => other_error(other.0.as_ref()),
        other => format!("the certificate was refused ({})", variant_name(other)),
    }
}

/// What a verifier boxed into an `Other`: our SPIFFE rules, webpki, or something else that
/// has its own words.
fn other_error(error: &(dyn StdError + Send + Sync + 'static)) -> String {
    if let Some(reason) = error.downcast_ref::<VerifyError>() {
        return reason.to_string();
    }
    if let Some(error) = error.downcast_ref::<webpki::Error>() {
        return webpki_error(error);
    }
    error.to_string()
}

/// webpki's errors, most of which rustls maps to a `CertificateError` of its own; the rest
/// arrive boxed. Its Display is its Debug, so each gets a sentence here.
pub(super) fn webpki_error(error: &webpki::Error) -> String {
    use webpki::Error as E;
    match error {
        E::CaUsedAsEndEntity => "the certificate is a CA certificate (basicConstraints cA=true), \
             not a leaf: a CA's certificate was configured where a workload's or node's belongs"
            .into(),
        E::EndEntityUsedAsCa => "a leaf certificate stands where an issuer belongs in the chain: \
             the certificate file should hold the leaf first, then its intermediate CA"
            .into(),
        E::CertExpired { time, not_after } => expired(*time, *not_after),
        E::CertNotValidYet { time, not_before } => not_valid_yet(*time, *not_before),
        E::InvalidCertValidity => {
            "the certificate's validity period is invalid (not after is before not before)".into()
        }
        E::UnknownIssuer => unknown_issuer(),
        E::InvalidSignatureForPublicKey => bad_signature(),
        E::SignatureAlgorithmMismatch => "the certificate is malformed: its signature algorithm \
             differs from the one its signed part names"
            .into(),
        #[allow(deprecated)]
        E::UnsupportedSignatureAlgorithm | E::UnsupportedSignatureAlgorithmContext(_) => {
            unsupported_signature_algorithm()
        }
        #[allow(deprecated)]
        E::UnsupportedSignatureAlgorithmForPublicKey
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => signature_key_mismatch(),
        #[allow(deprecated)]
        E::RequiredEkuNotFound => format!(
            "the certificate is not valid for this use: {}",
            PURPOSE_HINT
        ),
        E::RequiredEkuNotFoundContext(context) => invalid_purpose(
            &oid_name(&context.required.oid_values().collect::<Vec<_>>()),
            context.present.iter().map(|oid| oid_name(oid)).collect(),
        ),
        E::EmptyEkuExtension => format!(
            "the certificate has an extended key usage extension that lists nothing: {}",
            PURPOSE_HINT
        ),
        E::CertRevoked => "the certificate has been revoked".into(),
        E::CertDistrusted => "the certificate's key is explicitly distrusted".into(),
        E::UnknownRevocationStatus => {
            "the certificate's revocation status is unknown (no revocation list covers it)".into()
        }
        E::CrlExpired { next_update, .. } => format!(
            "the certificate revocation list expired at {}",
            time(*next_update)
        ),
        E::PathLenConstraintViolated => "the chain is longer than an issuing CA allows (its \
             pathLenConstraint): a CA was placed under a CA that may only issue leaves"
            .into(),
        E::NameConstraintViolation => {
            "the certificate's names break a name constraint of an issuing CA".into()
        }
        E::CertNotValidForName(_) => {
            "the certificate is not valid for the name it was checked against".into()
        }
        E::UnsupportedCertVersion => "the certificate is not an X.509 v3 certificate".into(),
        E::UnsupportedCriticalExtension => {
            "the certificate has a critical extension the verifier cannot process".into()
        }
        E::BadDer | E::BadDerTime | E::TrailingData(_) => {
            "the certificate is not valid DER (corrupt, or not a certificate)".into()
        }
        E::MalformedExtensions | E::ExtensionValueInvalid => {
            "the certificate has a malformed extension".into()
        }
        E::InvalidSerialNumber => "the certificate's serial number is invalid (negative, or \
             longer than 20 bytes)"
            .into(),
        E::MalformedDnsIdentifier
        | E::MalformedNameConstraint
        | E::InvalidNetworkMaskConstraint => {
            "a name or name constraint in the chain is malformed".into()
        }
        E::UnsupportedNameType => {
            "the name the certificate was checked against is of an unsupported type".into()
        }
        E::MaximumPathDepthExceeded
        | E::MaximumPathBuildCallsExceeded
        | E::MaximumSignatureChecksExceeded
        | E::MaximumNameConstraintComparisonsExceeded => "the chain is too long or too complex \
             to verify (more intermediates than the verifier explores)"
            .into(),
        E::InvalidCrlNumber
        | E::IssuerNotCrlSigner
        | E::InvalidCrlSignatureForPublicKey
        | E::UnsupportedCrlVersion
        | E::UnsupportedDeltaCrl
        | E::UnsupportedIndirectCrl
        | E::UnsupportedRevocationReason
        | E::UnsupportedRevocationReasonsPartitioning
        | E::UnsupportedCrlIssuingDistributionPoint => format!(
            "a certificate revocation list is unusable ({})",
            variant_name(error)
        ),
        #[allow(deprecated)]
        E::UnsupportedCrlSignatureAlgorithm
        | E::UnsupportedCrlSignatureAlgorithmContext(_)
        | E::UnsupportedCrlSignatureAlgorithmForPublicKey
        | E::UnsupportedCrlSignatureAlgorithmForPublicKeyContext(_) => {
            "a certificate revocation list is signed with an unsupported algorithm".into()
        }
        other => format!(
            "the certificate chain was refused ({})",
            variant_name(other)
        ),
    }
}

const PURPOSE_HINT: &str = "a caller needs the clientAuth EKU, a server serverAuth";

fn expired(checked: UnixTime, not_after: UnixTime) -> String {
    format!(
        "the certificate has expired: not valid after {}, {} before the check at {}; renew it, \
         or check this host's clock",
        time(not_after),
        span(checked.as_secs().saturating_sub(not_after.as_secs())),
        time(checked)
    )
}

fn not_valid_yet(checked: UnixTime, not_before: UnixTime) -> String {
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

fn unknown_issuer() -> String {
    "the certificate was not issued by a CA in the trust bundle (unknown issuer)".into()
}

fn bad_signature() -> String {
    "a signature in the certificate chain does not verify: the certificate was issued by \
     another CA than the trust bundle's (one with the same name but a different key), or it \
     was altered"
        .into()
}

fn unsupported_signature_algorithm() -> String {
    "a certificate in the chain is signed with an algorithm the verifier does not accept \
     (ECDSA, Ed25519 and RSA are)"
        .into()
}

fn signature_key_mismatch() -> String {
    "a signature in the chain does not fit its issuer's key type (e.g. an RSA signature by an \
     ECDSA key)"
        .into()
}

fn invalid_purpose(required: &str, presented: Vec<String>) -> String {
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

fn eku_name(purpose: &ExtendedKeyPurpose) -> String {
    match purpose {
        ExtendedKeyPurpose::ClientAuth => "clientAuth".into(),
        ExtendedKeyPurpose::ServerAuth => "serverAuth".into(),
        ExtendedKeyPurpose::Other(oid) => oid_name(oid),
    }
}

fn oid_name(oid: &[usize]) -> String {
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

fn invalid_message(message: &InvalidMessage) -> String {
    match message {
        InvalidMessage::CertificatePayloadTooLarge => {
            "the peer's certificate chain is larger than 64 KiB".into()
        }
        other => format!(
            "the peer does not speak TLS correctly (plaintext or another protocol?): it sent a \
             malformed message ({})",
            variant_name(other)
        ),
    }
}

fn incompatible(why: &PeerIncompatible) -> String {
    let detail = match why {
        PeerIncompatible::NoCipherSuitesInCommon => {
            "no cipher suite in common (tunnel offers only TLS 1.3 AES-128-GCM and AES-256-GCM)"
        }
        PeerIncompatible::NoKxGroupsInCommon => {
            "no key exchange group in common (tunnel offers X25519MLKEM768, X25519 and P-256)"
        }
        PeerIncompatible::NoSignatureSchemesInCommon
        | PeerIncompatible::NoCertificateRequestSignatureSchemesInCommon => {
            "no signature scheme in common for the certificates"
        }
        PeerIncompatible::SupportedVersionsExtensionRequired
        | PeerIncompatible::ServerDoesNotSupportTls12Or13
        | PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig
        | PeerIncompatible::Tls12NotOffered
        | PeerIncompatible::Tls12NotOfferedOrEnabled => {
            "it does not speak TLS 1.3, which tunnel requires"
        }
        PeerIncompatible::KeyShareExtensionRequired
        | PeerIncompatible::NamedGroupsExtensionRequired
        | PeerIncompatible::SignatureAlgorithmsExtensionRequired => {
            "its hello lacks an extension TLS 1.3 requires"
        }
        _ => "tunnel requires TLS 1.3 with AES-GCM",
    };
    format!(
        "the peer's TLS is incompatible: {detail} ({})",
        variant_name(why)
    )
}

fn encrypted_client_hello(error: &EncryptedClientHelloError) -> String {
    format!(
        "encrypted client hello failed ({}); tunnel does not use it",
        variant_name(error)
    )
}

fn revocation_list(error: &CertRevocationListError) -> String {
    match error {
        CertRevocationListError::Other(other) => other_error(other.0.as_ref()),
        other => format!(
            "a certificate revocation list is unusable ({})",
            variant_name(other)
        ),
    }
}

fn alert_received(alert: AlertDescription) -> String {
    let meaning = match alert {
        AlertDescription::CertificateExpired => {
            "our certificate (or its chain) is expired or not yet valid for the peer (the \
             alert is the same for both: check our certificate's dates, and both clocks)"
        }
        AlertDescription::UnknownCA => "the peer does not trust the CA that issued our certificate",
        AlertDescription::UnsupportedCertificate => {
            "our certificate lacks the extended key usage the peer needs"
        }
        AlertDescription::CertificateRevoked => "the peer considers our certificate revoked",
        AlertDescription::BadCertificate
        | AlertDescription::CertificateUnknown
        | AlertDescription::AccessDenied => {
            "the peer refused our certificate's identity (see the peer's log for the exact rule)"
        }
        AlertDescription::CertificateRequired | AlertDescription::NoCertificate => {
            "the peer requires a client certificate"
        }
        AlertDescription::DecryptError => {
            "a signature did not verify on the peer (our certificate's chain or our handshake \
             signature)"
        }
        AlertDescription::HandshakeFailure | AlertDescription::InsufficientSecurity => {
            "no acceptable TLS parameters in common"
        }
        AlertDescription::ProtocolVersion => "the peer does not accept TLS 1.3",
        AlertDescription::NoApplicationProtocol => "the peer does not speak HBONE (ALPN h2)",
        AlertDescription::BadCertificateStatusResponse
        | AlertDescription::BadCertificateHashValue
        | AlertDescription::CertificateUnobtainable => {
            "the peer could not use our certificate's status or chain"
        }
        AlertDescription::UnexpectedMessage
        | AlertDescription::DecodeError
        | AlertDescription::IllegalParameter
        | AlertDescription::MissingExtension
        | AlertDescription::UnsupportedExtension
        | AlertDescription::RecordOverflow => {
            "the peer found our TLS messages malformed (a bug on one side)"
        }
        AlertDescription::BadRecordMac | AlertDescription::DecryptionFailed => {
            "a record did not decrypt on the peer: the data was corrupted or altered on the way"
        }
        AlertDescription::InternalError => "the peer failed internally (its log says why)",
        AlertDescription::CloseNotify | AlertDescription::UserCanceled => {
            "the peer ended the handshake"
        }
        AlertDescription::UnrecognisedName => "the peer does not serve the requested name",
        AlertDescription::EncryptedClientHelloRequired => {
            "the peer requires encrypted client hello, which tunnel does not use"
        }
        AlertDescription::DecompressionFailure
        | AlertDescription::ExportRestriction
        | AlertDescription::NoRenegotiation => {
            "an alert of TLS versions before 1.3: the peer does not speak TLS 1.3"
        }
        AlertDescription::InappropriateFallback => {
            "the peer saw what looks like a protocol version downgrade"
        }
        AlertDescription::UnknownPSKIdentity => {
            "the peer does not know the session offered for resumption (tunnel never resumes)"
        }
        _ => "an alert unknown to tunnel (see the peer's log)",
    };
    format!(
        "the peer refused the handshake with alert {}: {meaning}",
        alert_name(alert)
    )
}

/// The alert's name as the TLS RFCs (and OpenSSL's logs) write it.
fn alert_name(alert: AlertDescription) -> String {
    let name = match alert {
        AlertDescription::CloseNotify => "close_notify",
        AlertDescription::UnexpectedMessage => "unexpected_message",
        AlertDescription::BadRecordMac => "bad_record_mac",
        AlertDescription::DecryptionFailed => "decryption_failed",
        AlertDescription::RecordOverflow => "record_overflow",
        AlertDescription::DecompressionFailure => "decompression_failure",
        AlertDescription::HandshakeFailure => "handshake_failure",
        AlertDescription::NoCertificate => "no_certificate",
        AlertDescription::BadCertificate => "bad_certificate",
        AlertDescription::UnsupportedCertificate => "unsupported_certificate",
        AlertDescription::CertificateRevoked => "certificate_revoked",
        AlertDescription::CertificateExpired => "certificate_expired",
        AlertDescription::CertificateUnknown => "certificate_unknown",
        AlertDescription::IllegalParameter => "illegal_parameter",
        AlertDescription::UnknownCA => "unknown_ca",
        AlertDescription::AccessDenied => "access_denied",
        AlertDescription::DecodeError => "decode_error",
        AlertDescription::DecryptError => "decrypt_error",
        AlertDescription::ExportRestriction => "export_restriction",
        AlertDescription::ProtocolVersion => "protocol_version",
        AlertDescription::InsufficientSecurity => "insufficient_security",
        AlertDescription::InternalError => "internal_error",
        AlertDescription::InappropriateFallback => "inappropriate_fallback",
        AlertDescription::UserCanceled => "user_canceled",
        AlertDescription::NoRenegotiation => "no_renegotiation",
        AlertDescription::MissingExtension => "missing_extension",
        AlertDescription::UnsupportedExtension => "unsupported_extension",
        AlertDescription::CertificateUnobtainable => "certificate_unobtainable",
        AlertDescription::UnrecognisedName => "unrecognized_name",
        AlertDescription::BadCertificateStatusResponse => "bad_certificate_status_response",
        AlertDescription::BadCertificateHashValue => "bad_certificate_hash_value",
        AlertDescription::UnknownPSKIdentity => "unknown_psk_identity",
        AlertDescription::CertificateRequired => "certificate_required",
        AlertDescription::NoApplicationProtocol => "no_application_protocol",
        AlertDescription::EncryptedClientHelloRequired => "encrypted_client_hello_required",
        _ => "",
    };
    let code = u8::from(alert);
    if name.is_empty() {
        format!("number {code}")
    } else {
        format!("{name} ({code})")
    }
}

/// A TLS enum value's name, or its number when rustls does not know it.
fn enum_name(name: Option<&str>, number: u8) -> String {
    name.map_or_else(|| format!("unknown ({number})"), str::to_string)
}

/// "A or B or C".
fn names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(" or ")
}

/// A variant's name without its fields, for variants too rare to deserve a sentence of
/// their own (and those added to rustls's non-exhaustive enums later).
fn variant_name(value: &impl std::fmt::Debug) -> String {
    let debug = format!("{value:?}");
    let end = debug
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(debug.len());
    debug[..end].to_string()
}

fn time(at: UnixTime) -> String {
    timestamp(i64::try_from(at.as_secs()).unwrap_or(i64::MAX))
}

/// Roughly how long, in the two largest units: `2d 3h`, `5m 10s`.
pub(crate) fn span(seconds: u64) -> String {
    let units = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];
    let Some(first) = units.iter().position(|(_, size)| seconds >= *size) else {
        return "0s".into();
    };
    units[first..]
        .iter()
        .take(2)
        .scan(seconds, |left, (unit, size)| {
            let count = *left / size;
            *left %= size;
            Some((count, unit))
        })
        .filter(|(count, _)| *count > 0)
        .map(|(count, unit)| format!("{count}{unit}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests;
