//! Every rustls configuration of the daemon is built here, and only here: aws-lc-rs (AES-GCM
//! from ring where that is faster, see [`aead`]), TLS 1.3
//! only, AES-GCM, ALPN `h2`, session resumption off on both sides (a resumed session skips
//! certificate verification, so a removed or expired identity would survive it), no SNI (the
//! identity is the URI SAN, not a DNS name), and no early data.

pub mod aead;
mod chain;
mod connection_error;
mod crl;
mod explain;
mod material;
mod presented;
mod provider;
mod refusal_kind;
mod revocation;
#[cfg(test)]
mod test_pki;
mod verify;

use std::sync::Arc;

pub use connection_error::{Phase, describe_connection_error};
pub use crl::{Crl, CrlSummary, Crls};
pub use explain::{explain, rustls_error};
pub(crate) use material::read_certificates;
pub use material::{
    CertificateProblem, Credential, MaterialError, Trust, crls_from_bytes, parse_crl, read_crls,
};
pub use presented::{Presented, PresentedSlot, recording_server_config};
pub use provider::{choose_record_cipher, provider, warm_up};
pub use refusal_kind::RefusalKind;
pub use revocation::{RevokedEntry, revocation_entry};
use rustls::{
    ClientConfig, ServerConfig,
    client::Resumption,
    server::NoServerSessionStorage,
    sign::{CertifiedKey, SingleCertAndKey},
};
pub use verify::{
    PeerExpectation, SpiffeClientVerifier, SpiffeServerVerifier, VerifyError, peer_identity,
};

use crate::identity::TrustDomain;

/// The only application protocol spoken on the tunnel port.
pub const ALPN_H2: &[u8] = b"h2";

/// What every inbound config sets beyond its certificate and verifier (one per connection,
/// see [`recording_server_config`]): ALPN h2, no session resumption, no early data.
fn finish_server(mut config: ServerConfig) -> Arc<ServerConfig> {
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.max_early_data_size = 0;
    Arc::new(config)
}

/// The outbound side, for one workload calling one peer: presents the workload's
/// certificate; accepts a server that chains to the bundle, is an X.509-SVID of the trust
/// domain and is what `expected` asks for (a node identity, or exactly the pinned one).
pub fn client_config(
    workload: Arc<CertifiedKey>,
    trust: &Trust,
    trust_domain: TrustDomain,
    expected: PeerExpectation,
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let verifier = verify::SpiffeServerVerifier::new(trust, trust_domain, expected);
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        // A custom verifier is the documented way to check URI SANs: rustls only knows DNS
        // and IP names. It verifies the chain itself first (see verify.rs).
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(workload)));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.resumption = Resumption::disabled();
    config.enable_sni = false;
    config.enable_early_data = false;
    Ok(Arc::new(config))
}
