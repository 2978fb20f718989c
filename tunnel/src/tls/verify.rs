//! Certificate verifiers for both ends of the tunnel. Each one first lets webpki verify the
//! chain to the bundle (signatures, validity, EKU, revocation later), and only then applies
//! the SPIFFE rules and the trust domain on top: never the other way round, and never by
//! reinterpreting a name-mismatch error from a verifier that checks both at once (which is
//! why `WebPkiServerVerifier` is not used: telling its name error apart from a chain error
//! is how SPIFFE verifiers have failed open, see shared/reference/security-anchors.md §1.4).

use std::sync::Arc;

use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore,
    SignatureScheme,
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        verify_server_cert_signed_by_trust_anchor,
    },
    crypto::{verify_tls12_signature, verify_tls13_signature},
    pki_types::{CertificateDer, ServerName, UnixTime},
    server::{
        ParsedCertificate, WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};

use super::provider;
use crate::identity::{self, Purpose, SpiffeId, SvidError, TrustDomain};

/// Why a certificate that chains correctly is still refused. Carried inside
/// `CertificateError::Other` so the handshake fails with it; `explain` digs it out for logs.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("not an X.509-SVID: {0}")]
    NotSvid(#[from] SvidError),
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

/// Inbound: webpki's client verifier (chain, validity, clientAuth EKU if present), then the
/// SPIFFE leaf rules (which also require the EKU to be present) and the trust domain.
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    chain: Arc<dyn ClientCertVerifier>,
    trust_domain: TrustDomain,
}

impl SpiffeClientVerifier {
    pub fn new(roots: Arc<RootCertStore>, trust_domain: TrustDomain) -> Result<Self, Error> {
        let chain = WebPkiClientVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| Error::General(format!("client verifier: {e}")))?;
        Ok(Self {
            chain,
            trust_domain,
        })
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.chain
            .verify_client_cert(end_entity, intermediates, now)?;
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
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// Outbound: the chain (with the serverAuth EKU) by webpki without any name check, then
/// the SPIFFE rules, the trust domain and the expected peer identity.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    trust_domain: TrustDomain,
    expected: Option<SpiffeId>,
}

impl SpiffeServerVerifier {
    pub fn new(
        roots: Arc<RootCertStore>,
        trust_domain: TrustDomain,
        expected: Option<SpiffeId>,
    ) -> Self {
        Self {
            roots,
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
        let parsed = ParsedCertificate::try_from(end_entity)?;
        let algorithms = provider().signature_verification_algorithms;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            algorithms.all,
        )?;
        let id = identity::svid_identity(end_entity.as_ref(), Purpose::ServerAuth)
            .map_err(|e| refuse(e.into()))?;
        if !id.is_in(&self.trust_domain) {
            return Err(refuse(VerifyError::ForeignTrustDomain {
                id,
                trust_domain: self.trust_domain.clone(),
            }));
        }
        if let Some(expected) = &self.expected
            && expected != &id
        {
            return Err(refuse(VerifyError::UnexpectedPeer {
                expected: expected.clone(),
                actual: id,
            }));
        }
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
