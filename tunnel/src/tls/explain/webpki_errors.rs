//! webpki's errors in words: those rustls passes on boxed in `CertificateError::Other` or
//! `CertRevocationListError::Other`, and those met loading our own certificates.

use super::{
    faults::{
        PURPOSE_HINT, bad_signature, expired, invalid_purpose, not_valid_yet, oid_name,
        signature_key_mismatch, unknown_issuer, unsupported_signature_algorithm,
    },
    words::{time, variant_name},
};

/// webpki's errors, most of which rustls maps to a `CertificateError` of its own; the rest
/// arrive boxed. Its Display is its Debug, so each gets a sentence here.
pub(in crate::tls) fn webpki_error(error: &webpki::Error) -> String {
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
