//! Handshake failures in words an operator can act on. The side that verifies knows exactly
//! what was wrong; the other side only receives an alert, so its message says which alert
//! and what it usually means.
//!
//! Every error a handshake can produce has a sentence here, including webpki's errors that
//! rustls passes on boxed in `CertificateError::Other` (a CA certificate used as a leaf, an
//! empty EKU...) and the SPIFFE rules' own `VerifyError`. The enums are non-exhaustive, so
//! a variant added later falls back to its bare name, never to a Debug dump of its fields.
//!
//! This file has the entry points and rustls's own errors; the rest is by kind:
//! `certificate` (rustls's certificate and revocation list errors, and what a verifier
//! boxed into an `Other`), `webpki_errors` (webpki's errors), `faults` (the sentences both
//! of those share), `alert` (alerts received from the peer), `words` (names, times, spans).

mod alert;
mod certificate;
mod faults;
mod webpki_errors;
mod words;

use std::error::Error as StdError;

use alert::alert_received;
use certificate::{certificate, other_error, revocation_list};
use rustls::{
    EncryptedClientHelloError, Error, InconsistentKeys, InvalidMessage, PeerIncompatible,
};
pub(super) use webpki_errors::webpki_error;
use words::{enum_name, names, variant_name};

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

#[cfg(test)]
mod tests;
