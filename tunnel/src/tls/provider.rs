//! The one crypto provider: aws-lc-rs, narrowed to what the tunnel allows.

use std::sync::{Arc, OnceLock};

use rustls::crypto::{
    CryptoProvider,
    aws_lc_rs::{self, cipher_suite, kx_group},
};

/// TLS 1.3 AES-GCM suites only (AES-128 first: same security margin for our purpose and
/// faster on every CPU with AES-NI); key exchange prefers the post-quantum hybrid, which
/// costs little because pooled connections handshake rarely, with X25519 for peers that
/// lack it (e.g. `openssl s_client` from OpenSSL 3.0).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            Arc::new(CryptoProvider {
                cipher_suites: vec![
                    cipher_suite::TLS13_AES_128_GCM_SHA256,
                    cipher_suite::TLS13_AES_256_GCM_SHA384,
                ],
                kx_groups: vec![
                    kx_group::X25519MLKEM768,
                    kx_group::X25519,
                    kx_group::SECP256R1,
                ],
                ..aws_lc_rs::default_provider()
            })
        })
        .clone()
}
