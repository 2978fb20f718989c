//! Whether a certificate may be put in force: judged by the verifiers a peer of ours uses,
//! then against the configured identity; and the certificate problems that stop startup.

use rustls::{
    client::danger::ServerCertVerifier as _,
    pki_types::{CertificateDer, UnixTime},
    server::danger::ClientCertVerifier as _,
};

use super::{CredentialsError, Spec};
use crate::{
    config::{CertSource, Problem},
    identity::{Purpose, SpiffeId, TrustDomain},
    tls::{self, CertificateProblem, Credential, PeerExpectation, Trust},
};

/// Whether `credential` may replace the one in force: what a peer checks, checked first. The
/// chain goes through the same verifier a peer of ours would use (chain to the bundle, CRLs,
/// validity, EKU, the SPIFFE rules), then the identity must be the configured one.
pub(super) fn judge(
    credential: &Credential,
    id: &SpiffeId,
    roles: &[Purpose],
    trust: &Trust,
    spec: &Spec,
) -> Result<(), CredentialsError> {
    roles
        .iter()
        .try_for_each(|role| judge_as(credential, id, *role, trust, spec))
}

/// [`judge`] for one role.
fn judge_as(
    credential: &Credential,
    id: &SpiffeId,
    purpose: Purpose,
    trust: &Trust,
    spec: &Spec,
) -> Result<(), CredentialsError> {
    let (leaf, intermediates) = credential.chain();
    let peers = PeerVerdict {
        trust,
        trust_domain: &spec.trust_domain,
        id,
        purpose,
    };
    peers
        .verify(leaf, intermediates, UnixTime::now())
        .map_err(CredentialsError::PeersRefuse)?;
    match credential.problems(id, purpose).into_iter().next() {
        Some(problem) => Err(CredentialsError::Problem(problem)),
        None => Ok(()),
    }
}

/// What a peer of ours decides about a certificate presented as `id` in the role `purpose`:
/// the daemon's own verifiers, built from the same trust (bundle and CRLs). A node is judged
/// as a caller pinning exactly its identity would judge it.
pub(crate) struct PeerVerdict<'a> {
    pub trust: &'a Trust,
    pub trust_domain: &'a TrustDomain,
    pub id: &'a SpiffeId,
    pub purpose: Purpose,
}

impl PeerVerdict<'_> {
    pub fn verify(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        match self.purpose {
            Purpose::ClientAuth => {
                tls::SpiffeClientVerifier::new(self.trust, self.trust_domain.clone())
                    .and_then(|v| v.verify_client_cert(leaf, intermediates, now).map(|_| ()))
            }
            Purpose::ServerAuth => {
                let verifier = tls::SpiffeServerVerifier::new(
                    self.trust,
                    self.trust_domain.clone(),
                    PeerExpectation::Pinned(self.id.clone()),
                );
                // Peers are dialled by address; the verifier ignores the name (the identity
                // is the URI SAN).
                let name = rustls::pki_types::ServerName::IpAddress(
                    std::net::Ipv4Addr::UNSPECIFIED.into(),
                );
                verifier
                    .verify_server_cert(leaf, intermediates, &name, &[], now)
                    .map(|_| ())
            }
        }
    }
}

/// A certificate problem that stops startup, said at the key of the certificate's source.
pub(super) fn refusal(source: &CertSource, problem: &CertificateProblem, who: &str) -> Problem {
    let origin = source.origin();
    let message = match problem {
        CertificateProblem::OtherIdentity { found, expected } => {
            format!("{origin}: the certificate is for {found}, but {who} is {expected}")
        }
        // Only the node's validity stops startup.
        CertificateProblem::Validity(text) => {
            format!("{origin}: {text}; peers refuse it, so no tunnel to this host can open")
        }
        CertificateProblem::NotSvid(e) => format!("{origin}: {e}"),
    };
    Problem::at(source.site(), message)
}
