//! The one crypto provider: aws-lc-rs (with the record cipher of [`super::aead`]'s
//! choice), narrowed to what the tunnel allows.

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use rustls::{
    SupportedCipherSuite,
    crypto::{
        CryptoProvider,
        aws_lc_rs::{self, cipher_suite, kx_group},
    },
};

use super::aead::{self, AeadImplementation};

/// TLS 1.3 AES-GCM suites only (AES-128 first: same security margin for our purpose and
/// faster on every CPU with AES-NI), from the library [`super::aead`] chose for this host;
/// key exchange prefers the post-quantum hybrid, which costs little because pooled
/// connections handshake rarely, with X25519 for peers that lack it (e.g. `openssl
/// s_client` from OpenSSL 3.0). A FIPS build offers only approved groups.
pub fn provider() -> Arc<CryptoProvider> {
    PROVIDER
        .get_or_init(|| {
            Arc::new(CryptoProvider {
                cipher_suites: cipher_suites(aead::chosen()),
                kx_groups: if cfg!(feature = "fips") {
                    vec![kx_group::X25519MLKEM768, kx_group::SECP256R1]
                } else {
                    vec![
                        kx_group::X25519MLKEM768,
                        kx_group::X25519,
                        kx_group::SECP256R1,
                    ]
                },
                ..aws_lc_rs::default_provider()
            })
        })
        .clone()
}

static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();

/// Chooses the record cipher ([`aead::choose`]): `forced`, or the faster by measurement.
/// Must run before the first TLS configuration is built, since [`provider`] reads the
/// choice once.
pub fn choose_record_cipher(forced: Option<AeadImplementation>) -> &'static aead::AeadChoice {
    if PROVIDER.get().is_some() {
        tracing::warn!(
            "the record cipher was chosen after the TLS provider was built: the provider keeps aws-lc"
        );
    }
    aead::choose(forced)
}

fn cipher_suites(from: AeadImplementation) -> Vec<SupportedCipherSuite> {
    match from {
        AeadImplementation::AwsLc => vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
        ],
        #[cfg(feature = "ring-aead")]
        AeadImplementation::Ring => vec![
            rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
            rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
        ],
    }
}

/// Does once, at start, what the first handshake would otherwise do lazily while a caller
/// waits, and on the thread that carries every stream: aws-lc seeds its random generator
/// from CPU jitter on first use (30–50 ms of CPU here, measured with `strace -ttt` around a
/// cold daemon's first handshake: 52 ms on the client side, 30 ms on the server's), each key
/// exchange group builds its tables on its first key, and the record cipher's library (ring
/// when configured, which the start's self-test then does not touch) and its key schedule
/// run for the first time (a first call took 11 ms with `aead = "ring"` before they were
/// warmed too, 2.9 ms in the one run where it did not). Returns how long it took.
pub fn warm_up() -> Duration {
    let started = Instant::now();
    let provider = provider();
    let mut seed = [0u8; 32];
    if provider.secure_random.fill(&mut seed).is_err() {
        tracing::warn!("the crypto provider's random generator failed its first use");
    }
    for group in &provider.kx_groups {
        // Both sides of one exchange: a client share, and a server completing against it
        // (for the post-quantum hybrid that is an encapsulation, not a second key).
        let warmed = group
            .start()
            .and_then(|client| group.start_and_complete(client.pub_key()));
        if let Err(e) = warmed {
            tracing::warn!(group = ?group.name(), error = %e, "key exchange warm-up failed");
        }
    }
    for suite in &provider.cipher_suites {
        if let Some(tls13) = suite.tls13() {
            let expander = tls13.hkdf_provider.extract_from_secret(None, &seed);
            std::hint::black_box(expander.expand_block(&[b"warm-up"]));
        }
    }
    aead::seal_one_record(aead::chosen());
    started.elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(feature = "fips")]
    fn a_fips_build_uses_only_approved_algorithms() {
        assert!(provider().fips(), "{:?}", provider());
    }

    #[test]
    fn the_post_quantum_hybrid_is_offered_first() {
        assert_eq!(
            provider().kx_groups[0].name(),
            rustls::NamedGroup::X25519MLKEM768
        );
    }
}
