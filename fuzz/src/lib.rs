//! What the fuzz targets share: cutting an input into parts, and the certificates and CRLs
//! (`fixtures/pki/`, made by `fixtures/make.py` with tests/support/mkpki.py) that the
//! `certificate` and `crl` targets judge by.

use std::borrow::Cow;

/// `data` cut at NUL bytes into `n` parts, the last one taking the rest (NULs included);
/// parts the input does not reach are empty.
pub fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = data.splitn(n, |b| *b == 0).collect();
    out.resize(n, &[]);
    out
}

/// Bytes as text, as a lossy reader would take them.
pub fn text(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// The test PKI of tests/support/mkpki.py: a root, its intermediate's CRL and its own, and
/// three chains (leaf first).
pub mod pki {
    use rustls::pki_types::{CertificateDer, UnixTime};
    use x509_parser::prelude::{FromDer as _, X509Certificate};

    pub const ROOT: &[u8] = include_bytes!("../fixtures/pki/root.der");
    pub const CRL_INTERMEDIATE: &[u8] = include_bytes!("../fixtures/pki/crl-intermediate.der");
    pub const CRL_ROOT: &[u8] = include_bytes!("../fixtures/pki/crl-root.der");
    /// A good leaf (spiffe://example.org/frontend) and its intermediate.
    pub const FRONTEND: [&[u8]; 2] = [
        include_bytes!("../fixtures/pki/frontend.0.der"),
        include_bytes!("../fixtures/pki/frontend.1.der"),
    ];
    /// A leaf that CRL_INTERMEDIATE lists, and its intermediate.
    pub const REVOKED_LEAF: [&[u8]; 2] = [
        include_bytes!("../fixtures/pki/revoked-leaf.0.der"),
        include_bytes!("../fixtures/pki/revoked-leaf.1.der"),
    ];
    /// A leaf of an intermediate that CRL_ROOT lists, and that intermediate.
    pub const REVOKED_INTERMEDIATE: [&[u8]; 2] = [
        include_bytes!("../fixtures/pki/revoked-intermediate.0.der"),
        include_bytes!("../fixtures/pki/revoked-intermediate.1.der"),
    ];

    pub const TRUST_DOMAIN: &str = "example.org";

    pub fn chain(ders: &[&'static [u8]]) -> Vec<CertificateDer<'static>> {
        ders.iter().map(|d| CertificateDer::from(*d)).collect()
    }

    /// When the targets judge: an hour after the fixtures were made (mkpki.py's "now" is a
    /// day after the root's notBefore), so the good certificates are good for ever.
    pub fn now() -> UnixTime {
        let (_, root) = X509Certificate::from_der(ROOT).expect("the fixture root parses");
        let made = root.validity().not_before.timestamp() + 86_400;
        UnixTime::since_unix_epoch(std::time::Duration::from_secs((made + 3_600) as u64))
    }
}
