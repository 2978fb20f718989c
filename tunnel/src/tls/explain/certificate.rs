//! `CertificateError`s in words, with what a verifier boxed into an `Other` (our SPIFFE
//! rules, webpki) and the revocation list errors.

use std::error::Error as StdError;

use rustls::{CertRevocationListError, CertificateError, ExtendedKeyPurpose};

use super::{
    faults::{
        PURPOSE_HINT, bad_signature, expired, invalid_purpose, not_valid_yet, oid_name,
        signature_key_mismatch, unknown_issuer, unsupported_signature_algorithm,
    },
    webpki_errors::webpki_error,
    words::{time, variant_name},
};
use crate::tls::verify::VerifyError;

pub(super) fn certificate(error: &CertificateError) -> String {
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
pub(super) fn other_error(error: &(dyn StdError + Send + Sync + 'static)) -> String {
    if let Some(reason) = error.downcast_ref::<VerifyError>() {
        return reason.to_string();
    }
    if let Some(error) = error.downcast_ref::<webpki::Error>() {
        return webpki_error(error);
    }
    error.to_string()
}

pub(super) fn revocation_list(error: &CertRevocationListError) -> String {
    match error {
        CertRevocationListError::Other(other) => other_error(other.0.as_ref()),
        other => format!(
            "a certificate revocation list is unusable ({})",
            variant_name(other)
        ),
    }
}

fn eku_name(purpose: &ExtendedKeyPurpose) -> String {
    match purpose {
        ExtendedKeyPurpose::ClientAuth => "clientAuth".into(),
        ExtendedKeyPurpose::ServerAuth => "serverAuth".into(),
        ExtendedKeyPurpose::Other(oid) => oid_name(oid),
    }
}
