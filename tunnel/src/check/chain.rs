//! The chain line: what a peer decides about a certificate, by the daemon's own verifiers,
//! worded by `tls::explain`, with the fix pointed at (the line that covers the reason, or
//! what to do when none does).

use rustls::{CertificateError, Error, pki_types::UnixTime};
use rustls_pki_types::CertificateDer;
use x509_parser::{certificate::X509Certificate, prelude::FromDer as _};

use super::{Trusted, owner::Leaf, report::Lines};
use crate::{
    config::Config,
    credentials::PeerVerdict,
    identity::SvidError,
    tls::{self, VerifyError},
};

/// The verdict of the verifier a peer uses, worded by `tls::explain`; a leaf whose issuer
/// is nowhere to be found is said to lack its intermediate, which is what to fix.
pub(super) fn check(
    lines: &mut Lines<'_>,
    config: &Config,
    trusted: Option<&Trusted>,
    leaf: &Leaf<'_>,
    chain: &[CertificateDer<'static>],
    now: i64,
) {
    let check = leaf.check("chain");
    let bundle = config.trust_bundle.value.display();
    let Some(trusted) = trusted else {
        lines.warn(
            check,
            format!(
                "{}: not judged: the trust bundle {bundle} does not load",
                leaf.origin
            ),
            "fix the bundle (see the trust section), then run tunnel check again".into(),
        );
        return;
    };
    let verdict = PeerVerdict {
        trust: &trusted.trust,
        trust_domain: &config.trust_domain,
        id: leaf.id,
        purpose: leaf.purpose,
    };
    let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(now.max(0) as u64));
    let Err(error) = verdict.verify(&chain[0], &chain[1..], at) else {
        lines.ok(
            check,
            format!(
                "{} chains to {bundle}, and peers' verifier accepts it {}",
                leaf.origin,
                leaf.role()
            ),
        );
        return;
    };
    if let Some(issuer) = missing_issuer(chain, &trusted.roots) {
        lines.fail(
            check,
            format!(
                "{}: missing intermediate: the leaf was issued by {issuer}, which is neither a \
                 root of {bundle} nor in {}",
                leaf.origin, leaf.origin
            ),
            format!(
                "append the intermediate CA certificate ({issuer}) to {}, after the leaf",
                leaf.origin
            ),
        );
        return;
    }
    let hint = match covered_by(&error) {
        Some(Covered::Line(rule)) => format!("see the {} line below", leaf.check(rule)),
        Some(Covered::Crl) => "a configured CRL is refused: see the crl lines of the trust \
                               section, and fix or remove that CRL"
            .into(),
        None => format!(
            "issue it from the CA whose root is in {bundle} ({}), or add its CA's root to the \
             bundle on every host",
            leaf.reissue
        ),
    };
    lines.fail(
        check,
        format!("{}: peers refuse it: {}", leaf.origin, tls::explain(&error)),
        hint,
    );
}

/// The leaf's issuer, in words, when it is neither a root nor in the chain.
fn missing_issuer(chain: &[CertificateDer<'_>], roots: &[CertificateDer<'_>]) -> Option<String> {
    let (_, leaf) = X509Certificate::from_der(chain[0].as_ref()).ok()?;
    let issuer = leaf.issuer().as_raw();
    let present = chain[1..].iter().chain(roots).any(|der| {
        X509Certificate::from_der(der.as_ref())
            .is_ok_and(|(_, cert)| cert.subject().as_raw() == issuer)
    });
    (!present).then(|| leaf.issuer().to_string())
}

/// Where a refusal's reason has a line of its own.
enum Covered {
    /// This certificate's line of that name.
    Line(&'static str),
    /// A CRL's lines in the trust section: peers holding it cannot use it.
    Crl,
}

fn covered_by(error: &Error) -> Option<Covered> {
    let error = match error {
        Error::InvalidCertificate(error) => error,
        Error::InvalidCertRevocationList(_) => return Some(Covered::Crl),
        _ => return None,
    };
    let line = match error {
        CertificateError::Expired
        | CertificateError::ExpiredContext { .. }
        | CertificateError::NotValidYet
        | CertificateError::NotValidYetContext { .. } => Some("validity"),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            Some("EKU")
        }
        CertificateError::Revoked => Some("revocation"),
        CertificateError::Other(other) => {
            if let Some(reason) = other.0.downcast_ref::<VerifyError>() {
                return Some(Covered::Line(match reason {
                    VerifyError::NotSvid(SvidError::MissingExtendedKeyUsage(_)) => "EKU",
                    VerifyError::NotSvid(SvidError::LeafIsCa | SvidError::ForbiddenKeyUsage) => {
                        "leaf"
                    }
                    _ => "SPIFFE ID",
                }));
            }
            use webpki::Error as E;
            match other.0.downcast_ref::<E>()? {
                E::CaUsedAsEndEntity => Some("leaf"),
                E::RequiredEkuNotFoundContext(_) => Some("EKU"),
                // The server verifier's revocation errors (the client verifier's arrive as
                // `InvalidCertRevocationList`).
                E::InvalidCrlSignatureForPublicKey
                | E::IssuerNotCrlSigner
                | E::InvalidCrlNumber
                | E::UnsupportedCrlVersion
                | E::UnsupportedDeltaCrl
                | E::UnsupportedIndirectCrl
                | E::UnsupportedCrlIssuingDistributionPoint
                | E::UnsupportedCrlSignatureAlgorithmContext(_)
                | E::UnsupportedCrlSignatureAlgorithmForPublicKeyContext(_) => {
                    return Some(Covered::Crl);
                }
                _ => None,
            }
        }
        _ => None,
    };
    line.map(Covered::Line)
}
