//! What a caller presented in a handshake the inbound side refused. rustls keeps no peer
//! chain when verification fails, so the log could not say whose certificate it was, nor
//! which serial a CRL lists; a per-connection wrapper around the shared verifier writes
//! both down as it judges.

use std::sync::{Arc, OnceLock};

use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, ServerConfig,
    SignatureScheme,
    client::danger::HandshakeSignatureValid,
    pki_types::{CertificateDer, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
    sign::{CertifiedKey, SingleCertAndKey},
};

use super::{RevokedEntry, SpiffeClientVerifier, Trust, revocation_entry};
use crate::identity::CertSummary;

/// The caller's certificate as the verifier saw it.
#[derive(Clone, Debug, Default)]
pub struct Presented {
    /// Its first URI SAN (the SPIFFE ID it claims), whether or not it was accepted.
    pub identity: Option<String>,
    /// The CRL entry that refused it, when one did.
    pub revoked: Option<RevokedEntry>,
}

/// Filled by the verifier of one connection.
pub type PresentedSlot = Arc<OnceLock<Presented>>;

/// The inbound config of one connection: the shared verifier's verdicts, plus what the
/// caller presented. Costs a config builder per handshake (no verifier or CRL is rebuilt):
/// small beside the handshake itself, and handshakes are capped (`[inbound]
/// max_handshakes`).
pub fn recording_server_config(
    node: Arc<CertifiedKey>,
    verifier: Arc<SpiffeClientVerifier>,
    trust: Arc<Trust>,
) -> Result<(Arc<ServerConfig>, PresentedSlot), Error> {
    let slot = PresentedSlot::default();
    let recording = Recording {
        inner: verifier,
        trust,
        slot: slot.clone(),
    };
    let config = ServerConfig::builder_with_provider(super::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(recording))
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(node)));
    Ok((super::finish_server(config), slot))
}

#[derive(Debug)]
struct Recording {
    inner: Arc<SpiffeClientVerifier>,
    trust: Arc<Trust>,
    slot: PresentedSlot,
}

impl ClientCertVerifier for Recording {
    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verdict = self
            .inner
            .verify_client_cert(end_entity, intermediates, now);
        if verdict.is_err() {
            let revoked = matches!(
                verdict,
                Err(Error::InvalidCertificate(CertificateError::Revoked))
            )
            .then(|| {
                let chain: Vec<CertificateDer<'_>> = std::iter::once(end_entity.clone())
                    .chain(intermediates.iter().cloned())
                    .collect();
                revocation_entry(&self.trust, &chain)
            })
            .flatten();
            let identity = CertSummary::parse(end_entity.as_ref())
                .ok()
                .and_then(|summary| summary.uris.into_iter().next());
            let _ = self.slot.set(Presented { identity, revoked });
        }
        verdict
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
