//! Certificate verifiers for both ends of the tunnel. Each one first lets webpki verify the
//! chain to the bundle (signatures, validity, EKU, and revocation of every certificate in the
//! chain by the configured CRLs; a CA without a CRL is not an error: `tls::chain`), and only
//! then applies the SPIFFE rules and the trust domain on top: never the other way round, and
//! never by reinterpreting a name-mismatch error from a verifier that checks both at once
//! (which is why `WebPkiServerVerifier` is not used: SPIFFE verifiers built on it have failed
//! open by mistaking a chain error for the expected name error and accepting the
//! certificate). Neither is rustls's `WebPkiClientVerifier`: it would parse the CRLs again,
//! into a copy of its own, and check a CRL's signature at every handshake.

use std::sync::Arc;

use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{verify_tls12_signature, verify_tls13_signature},
    pki_types::{CertificateDer, ServerName, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
};

use super::{Trust, chain, provider};
use crate::identity::{self, IdPattern, Purpose, SpiffeId, SvidError, TrustDomain};

/// Why a certificate that chains correctly is still refused. Carried inside
/// `CertificateError::Other` so the handshake fails with it; `explain` digs it out for logs.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A leaf (the `SvidError` is part of the message, not a source).
    #[error("not an X.509-SVID: {0}")]
    NotSvid(SvidError),
    #[error("{id} is outside the trust domain {trust_domain}")]
    ForeignTrustDomain {
        id: SpiffeId,
        trust_domain: TrustDomain,
    },
    #[error("expected the peer to be {expected}, but it is {actual}")]
    UnexpectedPeer {
        expected: SpiffeId,
        actual: SpiffeId,
    },
    #[error(
        "expected a node identity matching {pattern}, but the peer presented {actual} (a workload's \
         certificate? if it is a node, [outbound] peer_identity must cover it)"
    )]
    NotANode {
        pattern: IdPattern,
        actual: SpiffeId,
    },
}

/// Whom the outbound side accepts as the daemon serving a destination.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PeerExpectation {
    /// No `[[peer]]` entry: any node identity matching the pattern (`[outbound]
    /// peer_identity`). A workload's certificate chains to the same bundle, so without this
    /// a host holding any workload's key could stand in for a peer daemon.
    Node(IdPattern),
    /// A `[[peer]]` entry pins exactly this identity.
    Pinned(SpiffeId),
}

impl PeerExpectation {
    fn check(&self, actual: SpiffeId) -> Result<(), VerifyError> {
        match self {
            Self::Node(pattern) if !pattern.matches(&actual) => Err(VerifyError::NotANode {
                pattern: pattern.clone(),
                actual,
            }),
            Self::Pinned(expected) if expected != &actual => Err(VerifyError::UnexpectedPeer {
                expected: expected.clone(),
                actual,
            }),
            _ => Ok(()),
        }
    }
}

impl From<SvidError> for VerifyError {
    fn from(error: SvidError) -> Self {
        Self::NotSvid(error)
    }
}

fn refuse(error: VerifyError) -> Error {
    Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(error))))
}

/// The identity a verified peer presented (its leaf has been checked by the verifiers
/// above by the time this is called).
pub fn peer_identity(conn: &rustls::CommonState, purpose: Purpose) -> Option<SpiffeId> {
    let leaf = conn.peer_certificates()?.first()?;
    identity::svid_identity(leaf.as_ref(), purpose).ok()
}

/// Inbound: webpki's chain check for a client (clientAuth EKU if present), then the SPIFFE
/// leaf rules (which also require the EKU to be present) and the trust domain. Its refusals
/// are worded as rustls's own client verifier words them.
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    trust: Trust,
    /// The roots' names, sent in the CertificateRequest.
    root_hints: Vec<DistinguishedName>,
    trust_domain: TrustDomain,
}

impl SpiffeClientVerifier {
    pub fn new(trust: &Trust, trust_domain: TrustDomain) -> Result<Self, Error> {
        if trust.roots.is_empty() {
            // As rustls's builder refuses it.
            return Err(Error::General(
                "client verifier: no root trust anchors were provided".into(),
            ));
        }
        Ok(Self {
            root_hints: trust.roots.subjects(),
            trust: trust.clone(),
            trust_domain,
        })
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.root_hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        chain::verify(
            &self.trust,
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
        )
        .map_err(chain::client_error)?;
        let id = identity::svid_identity(end_entity.as_ref(), Purpose::ClientAuth)
            .map_err(|e| refuse(e.into()))?;
        if !id.is_in(&self.trust_domain) {
            return Err(refuse(VerifyError::ForeignTrustDomain {
                id,
                trust_domain: self.trust_domain.clone(),
            }));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Outbound: the chain (with the serverAuth EKU) by webpki without any name check, then
/// the SPIFFE rules, the trust domain and the expected peer identity.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    trust: Trust,
    trust_domain: TrustDomain,
    expected: PeerExpectation,
}

impl SpiffeServerVerifier {
    pub fn new(trust: &Trust, trust_domain: TrustDomain, expected: PeerExpectation) -> Self {
        Self {
            trust: trust.clone(),
            trust_domain,
            expected,
        }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        // rustls's helper for this takes no CRLs, and its verifier with CRLs also checks a
        // DNS or IP name, which an X.509-SVID does not carry.
        chain::verify(
            &self.trust,
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
        )
        .map_err(chain::server_error)?;
        let id = identity::svid_identity(end_entity.as_ref(), Purpose::ServerAuth)
            .map_err(|e| refuse(e.into()))?;
        if !id.is_in(&self.trust_domain) {
            return Err(refuse(VerifyError::ForeignTrustDomain {
                id,
                trust_domain: self.trust_domain.clone(),
            }));
        }
        self.expected.check(id).map_err(refuse)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::tls::test_pki::{Pki, td};

    /// What the outbound verifier says of a server presenting `chain`.
    fn verify_chain(
        pki: &Pki,
        expected: PeerExpectation,
        chain: &[CertificateDer<'static>],
    ) -> Result<(), Error> {
        let verifier = SpiffeServerVerifier::new(&pki.trust, td(), expected);
        let server_name = ServerName::IpAddress(Ipv4Addr::new(10, 0, 0, 2).into());
        verifier
            .verify_server_cert(&chain[0], &chain[1..], &server_name, &[], UnixTime::now())
            .map(|_| ())
    }

    /// What the outbound verifier says of a server presenting an SVID for `uri`.
    fn verify(pki: &Pki, expected: PeerExpectation, uri: &str) -> Result<(), Error> {
        verify_chain(pki, expected, &pki.chain(uri))
    }

    fn nodes() -> PeerExpectation {
        PeerExpectation::Node(IdPattern::nodes_of(&td()))
    }

    fn pinned(id: &str) -> PeerExpectation {
        PeerExpectation::Pinned(id.parse().unwrap())
    }

    /// The SPIFFE rule a refusal came from (none: webpki refused the chain itself).
    fn verify_error(error: &Error) -> Option<&VerifyError> {
        match error {
            Error::InvalidCertificate(CertificateError::Other(other)) => other.0.downcast_ref(),
            _ => None,
        }
    }

    #[test]
    fn a_node_identity_is_accepted_by_default() {
        let pki = Pki::new();
        verify(&pki, nodes(), "spiffe://example.org/node/host-b")
            .expect("a node certificate of the trust domain");
    }

    #[test]
    fn a_workload_certificate_is_refused_where_a_node_is_expected() {
        let pki = Pki::new();
        let error = verify(&pki, nodes(), "spiffe://example.org/batch").unwrap_err();
        let reason = verify_error(&error).expect("refused by the identity rule");
        assert!(matches!(reason, VerifyError::NotANode { .. }), "{reason:?}");
        assert!(
            reason.to_string().starts_with(
                "expected a node identity matching spiffe://example.org/node/*, but the peer \
                 presented spiffe://example.org/batch (a workload's certificate?"
            ),
            "{reason}"
        );
        // A prefix is not a name: node-ish paths outside node/ are refused too.
        let error = verify(&pki, nodes(), "spiffe://example.org/nodes/host-b").unwrap_err();
        assert!(matches!(
            verify_error(&error),
            Some(VerifyError::NotANode { .. })
        ));
    }

    #[test]
    fn a_configured_exact_pattern_admits_only_that_identity() {
        let pki = Pki::new();
        let gateway = IdPattern::parse("spiffe://example.org/node/gateway", &td()).unwrap();
        let expected = PeerExpectation::Node(gateway);
        verify(&pki, expected.clone(), "spiffe://example.org/node/gateway").unwrap();
        let error = verify(&pki, expected, "spiffe://example.org/node/host-b").unwrap_err();
        assert!(matches!(
            verify_error(&error),
            Some(VerifyError::NotANode { .. })
        ));
    }

    #[test]
    fn a_pinned_identity_must_be_presented_exactly() {
        let pki = Pki::new();
        let host_b = "spiffe://example.org/node/host-b";
        verify(&pki, pinned(host_b), host_b).unwrap();
        for other in [
            "spiffe://example.org/node/host-c",
            "spiffe://example.org/batch",
        ] {
            let error = verify(&pki, pinned(host_b), other).unwrap_err();
            let reason = verify_error(&error).expect("refused by the identity rule");
            assert_eq!(
                reason.to_string(),
                format!("expected the peer to be {host_b}, but it is {other}")
            );
        }
    }

    #[test]
    fn another_trust_domain_is_refused_whatever_its_path() {
        let pki = Pki::new();
        for expected in [nodes(), pinned("spiffe://example.org/node/host-b")] {
            let error = verify(&pki, expected, "spiffe://other.org/node/host-b").unwrap_err();
            let reason = verify_error(&error).expect("refused by the identity rule");
            assert!(
                matches!(reason, VerifyError::ForeignTrustDomain { .. }),
                "{reason:?}"
            );
            assert_eq!(
                reason.to_string(),
                "spiffe://other.org/node/host-b is outside the trust domain example.org"
            );
        }
    }

    #[test]
    fn the_chain_is_checked_before_any_identity_rule() {
        let pki = Pki::new();
        let foreign = Pki::new();
        let chain = foreign.chain("spiffe://example.org/node/host-b");
        let error = verify_chain(&pki, nodes(), &chain).unwrap_err();
        assert!(
            matches!(error, Error::InvalidCertificate(_)) && verify_error(&error).is_none(),
            "webpki refuses a certificate of another CA: {error:?}"
        );
    }
}
