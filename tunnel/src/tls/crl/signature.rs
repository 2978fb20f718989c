//! A CRL's signature, checked once per issuer key instead of at every handshake (webpki
//! hashes the whole list again for each certificate it looks up). The signed bytes (the whole
//! list, some 45 bytes per entry) are kept only until a key verifies them: at load for a CRL
//! of a root of the bundle, when its issuer first shows up in a peer's chain for one of an
//! intermediate that only peers carry. After that the verifying key alone is remembered.

use std::{
    ops::Range,
    sync::{Mutex, PoisonError},
};

use webpki::{
    Error, UnsupportedSignatureAlgorithmContext, UnsupportedSignatureAlgorithmForPublicKeyContext,
};

use super::der::{self, Malformed, Reader};
use crate::tls::provider;

/// Keys that did not verify a list, remembered with their verdict at most: a chain from one
/// of them does not cost another pass over the list (they are CAs of the bundle's, so few).
const REFUSED_KEYS: usize = 8;

pub(super) struct Signature {
    state: Mutex<State>,
}

enum State {
    /// Verified with this key (SubjectPublicKeyInfo contents); the signed bytes are gone.
    Verified(Box<[u8]>),
    /// No key has verified it yet.
    Unverified {
        signed: Signed,
        refused: Vec<(Box<[u8]>, Error)>,
    },
}

/// The whole CRL, and where its three parts are.
struct Signed {
    der: Box<[u8]>,
    tbs: Range<usize>,
    algorithm: Range<usize>,
    signature: Range<usize>,
}

impl Signature {
    /// For the CRL `der` (the outer SEQUENCE: TBSCertList, signatureAlgorithm, signature).
    pub fn new(der: Vec<u8>) -> Result<Self, Malformed> {
        let outer = Reader::new(&der).expect(der::SEQUENCE)?;
        let mut parts = Reader::new(outer.value);
        let tbs = parts.expect(der::SEQUENCE)?.raw;
        let algorithm = parts.expect(der::SEQUENCE)?.value;
        let signature = der::whole_bytes(parts.read()?)?;
        let range = |part: &[u8]| {
            let start = part.as_ptr() as usize - der.as_ptr() as usize;
            start..start + part.len()
        };
        let (tbs, algorithm, signature) = (range(tbs), range(algorithm), range(signature));
        Ok(Self {
            state: Mutex::new(State::Unverified {
                signed: Signed {
                    der: der.into_boxed_slice(),
                    tbs,
                    algorithm,
                    signature,
                },
                refused: Vec::new(),
            }),
        })
    }

    /// Whether the list was signed by the key `spki` (SubjectPublicKeyInfo contents, without
    /// its SEQUENCE header, as webpki keeps a trust anchor's), with webpki's errors for a CRL
    /// whose signature does not verify. Once a key has verified it, any other key is refused
    /// as not the signer's (one key signs a list; a second CA of the same name with the same
    /// key has the same SubjectPublicKeyInfo, and that is compared, byte for byte).
    pub fn verify(&self, spki: &[u8]) -> Result<(), Error> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (signed, refused) = match &mut *state {
            State::Verified(key) if **key == *spki => return Ok(()),
            State::Verified(_) => return Err(Error::InvalidCrlSignatureForPublicKey),
            State::Unverified { signed, refused } => (signed, refused),
        };
        if let Some((_, error)) = refused.iter().find(|(key, _)| **key == *spki) {
            return Err(error.clone());
        }
        match signed.verify(spki) {
            Ok(()) => {
                let released = std::mem::replace(&mut *state, State::Verified(spki.into()));
                drop(state);
                let bytes = released.heap_bytes();
                drop(released);
                super::released(bytes);
                Ok(())
            }
            Err(error) => {
                if refused.len() < REFUSED_KEYS {
                    refused.push((spki.into(), error.clone()));
                }
                Err(error)
            }
        }
    }

    /// Whether a key has verified the list (and its signed bytes are gone).
    pub fn is_verified(&self) -> bool {
        matches!(
            *self.state.lock().unwrap_or_else(PoisonError::into_inner),
            State::Verified(_)
        )
    }

    /// What the list still holds on the heap for its signature.
    pub fn heap_bytes(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .heap_bytes()
    }
}

impl State {
    fn heap_bytes(&self) -> usize {
        match self {
            Self::Verified(key) => key.len(),
            Self::Unverified { signed, refused } => {
                signed.der.len() + refused.iter().map(|(key, _)| key.len()).sum::<usize>()
            }
        }
    }
}

impl Signed {
    /// webpki's `verify_signed_data` for a CRL, with the algorithms rustls verifies
    /// certificates with, and its errors as it maps them for a CRL (`crl_signature_err`).
    fn verify(&self, spki: &[u8]) -> Result<(), Error> {
        let mut key_info = Reader::new(spki);
        let key_algorithm = key_info.expect(der::SEQUENCE)?.value;
        let key = der::whole_bytes(key_info.read()?)?;
        let algorithm = &self.der[self.algorithm.clone()];
        let message = &self.der[self.tbs.clone()];
        let signature = &self.der[self.signature.clone()];
        let supported = provider().signature_verification_algorithms.all;
        let mut other_key_type = None;
        for candidate in supported
            .iter()
            .filter(|alg| alg.signature_alg_id().as_ref() == algorithm)
        {
            if candidate.public_key_alg_id().as_ref() != key_algorithm {
                other_key_type = Some(UnsupportedSignatureAlgorithmForPublicKeyContext {
                    signature_algorithm_id: candidate.signature_alg_id().as_ref().to_vec(),
                    public_key_algorithm_id: key_algorithm.to_vec(),
                });
                continue;
            }
            return candidate
                .verify_signature(key, message, signature)
                .map_err(|_| Error::InvalidCrlSignatureForPublicKey);
        }
        Err(match other_key_type {
            Some(context) => Error::UnsupportedCrlSignatureAlgorithmForPublicKeyContext(context),
            None => Error::UnsupportedCrlSignatureAlgorithmContext(
                UnsupportedSignatureAlgorithmContext {
                    signature_algorithm_id: algorithm.to_vec(),
                    supported_algorithms: supported
                        .iter()
                        .map(|alg| alg.signature_alg_id())
                        .collect(),
                },
            ),
        })
    }
}
