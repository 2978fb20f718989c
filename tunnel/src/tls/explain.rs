//! Handshake failures in words an operator can act on. The side that verifies knows exactly
//! what was wrong; the other side only receives an alert, so its message says which alert
//! and what it usually means.

use std::error::Error as StdError;

use rustls::{AlertDescription, CertificateError, Error};

use super::verify::VerifyError;

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
        Error::InvalidMessage(_)
        | Error::InappropriateMessage { .. }
        | Error::InappropriateHandshakeMessage { .. } => {
            format!(
                "the peer does not speak TLS 1.3 correctly (plaintext or another protocol?): {error}"
            )
        }
        Error::NoApplicationProtocol => {
            "the peer does not speak HBONE (no common ALPN protocol h2)".into()
        }
        Error::PeerIncompatible(e) => {
            format!("the peer's TLS is incompatible ({e:?}); tunnel requires TLS 1.3 with AES-GCM")
        }
        other => other.to_string(),
    }
}

fn certificate(error: &CertificateError) -> String {
    match error {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            format!("the certificate has expired ({error:?})")
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            format!("the certificate is not valid yet; check both clocks ({error:?})")
        }
        CertificateError::UnknownIssuer => {
            "the certificate was not issued by a CA in the trust bundle (unknown issuer)".into()
        }
        CertificateError::BadSignature => "a signature in the certificate chain does not verify: the certificate \
             was issued by another CA than the trust bundle's (one with the same name but a different key), or \
             it was altered"
            .into(),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            format!(
                "the certificate is not valid for this use: a caller needs the clientAuth EKU, a server serverAuth ({error:?})"
            )
        }
        CertificateError::Revoked => "the certificate has been revoked".into(),
        CertificateError::Other(other) => match other.0.downcast_ref::<VerifyError>() {
            Some(reason) => reason.to_string(),
            None => format!("{other:?}"),
        },
        other => format!("{other:?}"),
    }
}

fn alert_received(alert: AlertDescription) -> String {
    let meaning = match alert {
        AlertDescription::CertificateExpired => {
            "our certificate (or its chain) is expired or not yet valid for the peer"
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
        AlertDescription::CertificateRequired => "the peer requires a client certificate",
        AlertDescription::DecryptError => "a signature did not verify on the peer",
        AlertDescription::HandshakeFailure => "no acceptable TLS parameters in common",
        AlertDescription::NoApplicationProtocol => "the peer does not speak HBONE (ALPN h2)",
        _ => "see the peer's log",
    };
    format!("the peer refused the handshake with alert {alert:?}: {meaning}")
}
