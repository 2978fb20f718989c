//! webpki's verification of a peer's chain, for both verifiers: the chain to the bundle
//! (signatures, validity, the EKU of the role), with the CRLs checked on each path webpki
//! finds (`tls::crl`, through its path callback: a revoked path lets webpki try another, as
//! its own revocation check does); and webpki's verdicts in rustls's words.

use std::sync::Arc;

use rustls::{
    CertRevocationListError as CrlError, CertificateError, Error, ExtendedKeyPurpose, OtherError,
    pki_types::{CertificateDer, UnixTime},
};

use super::{Trust, provider};

/// The chain of `end_entity` to a root of `trust`, for `usage`, with its CRLs.
pub(super) fn verify(
    trust: &Trust,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    usage: webpki::KeyUsage,
) -> Result<(), webpki::Error> {
    let cert = webpki::EndEntityCert::try_from(end_entity)?;
    let crls = &trust.crls;
    let revocation = |path: &webpki::VerifiedPath<'_>| crls.check(path);
    cert.verify_for_usage(
        provider().signature_verification_algorithms.all,
        &trust.roots.roots,
        intermediates,
        now,
        usage,
        None,
        (!crls.is_empty()).then_some(&revocation as _),
    )
    .map(|_| ())
}

/// A verdict of the outbound side: the errors `explain` knows by name as rustls words them,
/// the rest as webpki's own error, which `explain` reads too.
pub(super) fn server_error(error: webpki::Error) -> Error {
    use webpki::Error as E;
    let certificate = match error {
        E::CertExpired { time, not_after } => CertificateError::ExpiredContext { time, not_after },
        E::CertNotValidYet { time, not_before } => {
            CertificateError::NotValidYetContext { time, not_before }
        }
        E::UnknownIssuer => CertificateError::UnknownIssuer,
        E::CertRevoked => CertificateError::Revoked,
        E::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        E::BadDer | E::BadDerTime => CertificateError::BadEncoding,
        other => CertificateError::Other(OtherError(Arc::new(other))),
    };
    Error::InvalidCertificate(certificate)
}

/// A verdict of the inbound side, worded exactly as rustls's client verifier words webpki's
/// errors (its `pki_error`, which is not public), so the refusals keep the words, and the
/// kinds `explain`, the metrics and `tunnel check` sort them by, that they had when that
/// verifier gave them.
pub(super) fn client_error(error: webpki::Error) -> Error {
    use webpki::Error as E;
    match error {
        E::BadDer | E::BadDerTime | E::TrailingData(_) => CertificateError::BadEncoding.into(),
        E::CertNotValidYet { time, not_before } => {
            CertificateError::NotValidYetContext { time, not_before }.into()
        }
        E::CertExpired { time, not_after } => {
            CertificateError::ExpiredContext { time, not_after }.into()
        }
        E::InvalidCertValidity => CertificateError::Expired.into(),
        E::UnknownIssuer => CertificateError::UnknownIssuer.into(),
        E::CertNotValidForName(webpki::InvalidNameContext {
            expected,
            presented,
        }) => CertificateError::NotValidForNameContext {
            expected,
            presented,
        }
        .into(),
        E::CertRevoked => CertificateError::Revoked.into(),
        E::UnknownRevocationStatus => CertificateError::UnknownRevocationStatus.into(),
        E::CrlExpired { time, next_update } => {
            CertificateError::ExpiredRevocationListContext { time, next_update }.into()
        }
        E::IssuerNotCrlSigner => CrlError::IssuerInvalidForCrl.into(),
        E::InvalidSignatureForPublicKey => CertificateError::BadSignature.into(),
        #[allow(deprecated)]
        E::UnsupportedSignatureAlgorithm | E::UnsupportedSignatureAlgorithmForPublicKey => {
            CertificateError::UnsupportedSignatureAlgorithm.into()
        }
        E::UnsupportedSignatureAlgorithmContext(cx) => {
            CertificateError::UnsupportedSignatureAlgorithmContext {
                signature_algorithm_id: cx.signature_algorithm_id,
                supported_algorithms: cx.supported_algorithms,
            }
            .into()
        }
        E::UnsupportedSignatureAlgorithmForPublicKeyContext(cx) => {
            CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext {
                signature_algorithm_id: cx.signature_algorithm_id,
                public_key_algorithm_id: cx.public_key_algorithm_id,
            }
            .into()
        }
        E::InvalidCrlSignatureForPublicKey => CrlError::BadSignature.into(),
        #[allow(deprecated)]
        E::UnsupportedCrlSignatureAlgorithm | E::UnsupportedCrlSignatureAlgorithmForPublicKey => {
            CrlError::UnsupportedSignatureAlgorithm.into()
        }
        E::UnsupportedCrlSignatureAlgorithmContext(cx) => {
            CrlError::UnsupportedSignatureAlgorithmContext {
                signature_algorithm_id: cx.signature_algorithm_id,
                supported_algorithms: cx.supported_algorithms,
            }
            .into()
        }
        E::UnsupportedCrlSignatureAlgorithmForPublicKeyContext(cx) => {
            CrlError::UnsupportedSignatureAlgorithmForPublicKeyContext {
                signature_algorithm_id: cx.signature_algorithm_id,
                public_key_algorithm_id: cx.public_key_algorithm_id,
            }
            .into()
        }
        #[allow(deprecated)]
        E::RequiredEkuNotFound => CertificateError::InvalidPurpose.into(),
        E::RequiredEkuNotFoundContext(webpki::RequiredEkuNotFoundContext { required, present }) => {
            CertificateError::InvalidPurposeContext {
                required: purpose(required.oid_values()),
                presented: present
                    .into_iter()
                    .map(|eku| purpose(eku.into_iter()))
                    .collect(),
            }
            .into()
        }
        other => CertificateError::Other(OtherError(Arc::new(other))).into(),
    }
}

/// rustls's `ExtendedKeyPurpose::for_values` (not public either).
fn purpose(values: impl Iterator<Item = usize>) -> ExtendedKeyPurpose {
    use webpki::KeyUsage;
    let values: Vec<usize> = values.collect();
    match values.as_slice() {
        KeyUsage::CLIENT_AUTH_REPR => ExtendedKeyPurpose::ClientAuth,
        KeyUsage::SERVER_AUTH_REPR => ExtendedKeyPurpose::ServerAuth,
        _ => ExtendedKeyPurpose::Other(values),
    }
}
