//! What kind of refusal a TLS error is, for counting (the `reason` label of the failed
//! connections metric): read from the error itself, not from its wording.

use rustls::{AlertDescription, CertificateError, Error};

use super::{VerifyError, rustls_error};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalKind {
    /// A CRL lists the certificate or a CA of its chain (judged here, or the peer's
    /// `certificate_revoked` alert).
    Revoked,
    /// A good certificate of someone else than expected: another trust domain, another
    /// peer than pinned, a workload where a node was expected.
    Identity,
    /// Anything else that failed the handshake.
    Other,
}

impl RefusalKind {
    pub fn of(error: &Error) -> Self {
        match error {
            Error::InvalidCertificate(CertificateError::Revoked)
            | Error::AlertReceived(AlertDescription::CertificateRevoked) => Self::Revoked,
            Error::InvalidCertificate(CertificateError::Other(other)) => {
                match other.0.downcast_ref::<VerifyError>() {
                    Some(
                        VerifyError::ForeignTrustDomain { .. }
                        | VerifyError::UnexpectedPeer { .. }
                        | VerifyError::NotANode { .. },
                    ) => Self::Identity,
                    _ => Self::Other,
                }
            }
            _ => Self::Other,
        }
    }

    /// The kind of the rustls error inside `error` (tokio-rustls and h2 wrap it), if any.
    pub fn in_chain(error: &(dyn std::error::Error + 'static)) -> Self {
        rustls_error(error).map_or(Self::Other, Self::of)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::identity::TrustDomain;

    #[test]
    fn the_kind_comes_from_the_error_not_its_words() {
        let revoked = Error::InvalidCertificate(CertificateError::Revoked);
        assert_eq!(RefusalKind::of(&revoked), RefusalKind::Revoked);
        let alert = Error::AlertReceived(AlertDescription::CertificateRevoked);
        assert_eq!(RefusalKind::of(&alert), RefusalKind::Revoked);
        let foreign = VerifyError::ForeignTrustDomain {
            id: "spiffe://other.org/x".parse().unwrap(),
            trust_domain: "example.org".parse::<TrustDomain>().unwrap(),
        };
        let foreign = Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
            Arc::new(foreign),
        )));
        assert_eq!(RefusalKind::of(&foreign), RefusalKind::Identity);
        let expired = Error::InvalidCertificate(CertificateError::Expired);
        assert_eq!(RefusalKind::of(&expired), RefusalKind::Other);
        // Wrapped as tokio-rustls hands it over.
        let wrapped = std::io::Error::new(std::io::ErrorKind::InvalidData, revoked);
        assert_eq!(RefusalKind::in_chain(&wrapped), RefusalKind::Revoked);
    }
}
