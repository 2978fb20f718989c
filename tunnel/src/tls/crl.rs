//! The configured CRLs, each held once and compactly, and the revocation check both
//! verifiers run on the chain webpki has verified.
//!
//! webpki (and rustls's client verifier, which parses its CRLs again) keeps a CRL as an
//! owned B-tree of every entry beside the whole signed list, and checks the list's signature
//! again for every certificate it looks up: a 200,000-entry CRL cost ~120 MB, three copies,
//! and ~7 ms per handshake. Here a CRL is its serials sorted in one block (`entries`), its
//! signature checked once per issuer key (`signature`), and the few fields the check needs.
//! The check itself is webpki's (`RevocationOptions::check`, with the options both
//! verifiers used: every certificate of the chain, a CA without a CRL not a refusal, a CRL
//! past its nextUpdate still enforced), run by webpki through `verify_for_usage`'s path
//! callback, so a refused path lets webpki try another one, as its own check does.

mod der;
mod entries;
mod scope;
mod signature;
#[cfg(test)]
mod tests;

use std::fmt;

use entries::Entries;
pub use entries::Entry;
use rustls::pki_types::TrustAnchor;
use scope::Scope;
use signature::Signature;
use webpki::{BorrowedCertRevocationList, CertRevocationList, Error, VerifiedPath};
use x509_parser::{prelude::FromDer as _, time::ASN1Time, x509::X509Name};

/// Memory released at once from this much on (bytes) is handed back to the system.
const BIG: usize = 1 << 20;

/// The CRLs in force, in the order of the config (the first one that speaks for a
/// certificate is the one that judges it, as in webpki).
#[derive(Debug, Default)]
pub struct Crls {
    lists: Vec<Crl>,
}

impl Drop for Crls {
    /// A big list replaced (by a shorter one, or none) gives its memory back to the system
    /// when the last connection judged by it is gone.
    fn drop(&mut self) {
        let bytes = self.heap_bytes();
        drop(std::mem::take(&mut self.lists));
        released(bytes);
    }
}

/// After `bytes` of CRL data have been freed: big enough, and the heap's free pages go back
/// to the system, not only to the allocator (`sys::release_free_heap`).
fn released(bytes: usize) {
    if bytes >= BIG {
        crate::sys::release_free_heap();
    }
}

/// One CRL.
pub struct Crl {
    /// The issuer's name: DER without its SEQUENCE header, as webpki compares names.
    issuer: Box<[u8]>,
    /// Its issuing distribution point, if it has one.
    scope: Option<Scope>,
    entries: Entries,
    signature: Signature,
    summary: CrlSummary,
}

/// What a CRL says of itself, for the admin API and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlSummary {
    /// The issuer in words ("CN=..., O=...").
    pub issuer: String,
    /// thisUpdate, unix seconds.
    pub this_update: i64,
    /// nextUpdate, unix seconds.
    pub next_update: Option<i64>,
    /// Entries listed (a serial listed twice counts twice).
    pub entries: usize,
}

impl Crls {
    /// The lists read from the CRL files; `read` is how many bytes of DER that took, freed
    /// by now but for the signed bytes still to be verified.
    pub fn new(lists: Vec<Crl>, read: usize) -> Self {
        released(read);
        Self { lists }
    }

    pub fn len(&self) -> usize {
        self.lists.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lists.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Crl> {
        self.lists.iter()
    }

    /// The revocation check of a path webpki has verified (signatures, validity, EKU), for
    /// every certificate of it from the one below the trust anchor down to the leaf, as
    /// webpki's own check goes.
    pub fn check(&self, path: &VerifiedPath<'_>) -> Result<(), Error> {
        if self.lists.is_empty() {
            return Ok(());
        }
        let chain: Vec<&webpki::Cert<'_>> = std::iter::once(&**path.end_entity())
            .chain(path.intermediate_certificates())
            .collect();
        for (position, cert) in chain.iter().enumerate().rev() {
            let issuer = match chain.get(position + 1) {
                Some(ca) => Issuer::Intermediate(ca),
                None => Issuer::Anchor(path.anchor()),
            };
            self.check_one(cert, position == 0, issuer)?;
        }
        Ok(())
    }

    /// webpki's `RevocationOptions::check` for one certificate.
    fn check_one(
        &self,
        cert: &webpki::Cert<'_>,
        is_leaf: bool,
        issuer: Issuer<'_>,
    ) -> Result<(), Error> {
        let mut authoritative = None;
        for crl in &self.lists {
            if crl.speaks_for(cert, is_leaf)? {
                authoritative = Some(crl);
                break;
            }
        }
        // No CRL of this CA here: its status is unknown, which is allowed (only some CAs
        // may publish one).
        let Some(crl) = authoritative else {
            return Ok(());
        };
        crl.signature.verify(&issuer.spki()?)?;
        // nextUpdate is not enforced: a stale list still revokes (`tunnel check` warns).
        if let Issuer::Intermediate(ca) = issuer
            && !scope::may_sign_crls(ca.der().as_ref())?
        {
            return Err(Error::IssuerNotCrlSigner);
        }
        match crl.entries.find(cert.serial()) {
            Some(_) => Err(Error::CertRevoked),
            None => Ok(()),
        }
    }

    /// What a CRL whose issuer name is `issuer` (DER, with or without its SEQUENCE header)
    /// lists for `serial`, whoever signed it: for words, after a verifier's verdict.
    pub fn find(&self, issuer: &[u8], serial: &[u8]) -> Option<Entry> {
        let name = without_header(issuer);
        self.lists
            .iter()
            .filter(|crl| *crl.issuer == *name)
            .find_map(|crl| crl.entries.find(serial))
    }

    /// What the lists take on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.lists.iter().map(Crl::heap_bytes).sum()
    }
}

/// Who issued a certificate of a verified path.
#[derive(Clone, Copy)]
enum Issuer<'a> {
    Intermediate(&'a webpki::Cert<'a>),
    Anchor(&'a TrustAnchor<'a>),
}

impl Issuer<'_> {
    /// Its SubjectPublicKeyInfo contents (without the SEQUENCE header).
    fn spki(&self) -> Result<Box<[u8]>, Error> {
        match self {
            Self::Anchor(anchor) => Ok(anchor.subject_public_key_info.as_ref().into()),
            Self::Intermediate(ca) => {
                let spki = ca.subject_public_key_info();
                let sequence = der::Reader::new(spki.as_ref()).expect(der::SEQUENCE)?;
                Ok(sequence.value.into())
            }
        }
    }
}

impl Crl {
    /// A CRL as a file holds it: parsed and refused as webpki parses and refuses one
    /// (version, extensions, entries), then kept compactly. Its signature is checked when a
    /// key of its issuer is known ([`Crl::verify_with`]); until then its bytes are kept.
    pub fn from_der(der: Vec<u8>) -> Result<Self, Error> {
        let list = BorrowedCertRevocationList::from_der(&der)?;
        let entries = Entries::collect(&list)?;
        let list = CertRevocationList::from(list);
        let issuer: Box<[u8]> = list.issuer().into();
        let scope = list
            .issuing_distribution_point()
            .map(Scope::parse)
            .transpose()?;
        let summary = summary(&der, entries.listed())?;
        drop(list);
        Ok(Self {
            issuer,
            scope,
            entries,
            signature: Signature::new(der)?,
            summary,
        })
    }

    /// Checks the signature with every root of the bundle of the CRL's issuer name, so the
    /// list's bytes can go now rather than at the first handshake.
    pub fn verify_with(&self, roots: &[TrustAnchor<'_>]) {
        for root in roots.iter().filter(|r| *r.subject == *self.issuer) {
            if self
                .signature
                .verify(root.subject_public_key_info.as_ref())
                .is_ok()
            {
                return;
            }
        }
    }

    pub fn summary(&self) -> &CrlSummary {
        &self.summary
    }

    /// The issuer's name: DER without its SEQUENCE header, as webpki compares names.
    pub fn issuer(&self) -> &[u8] {
        &self.issuer
    }

    /// What this list says of `serial` (big-endian, as the certificate encodes it).
    pub fn find(&self, serial: &[u8]) -> Option<Entry> {
        self.entries.find(serial)
    }

    /// Whether a key has verified the list's signature yet.
    pub fn is_verified(&self) -> bool {
        self.signature.is_verified()
    }

    pub fn heap_bytes(&self) -> usize {
        self.issuer.len() + self.entries.heap_bytes() + self.signature.heap_bytes()
    }

    /// webpki's `CertRevocationList::authoritative`: the certificate's issuer, and a scope
    /// that covers it.
    fn speaks_for(&self, cert: &webpki::Cert<'_>, is_leaf: bool) -> Result<bool, Error> {
        if *self.issuer != *cert.issuer() {
            return Ok(false);
        }
        match &self.scope {
            None => Ok(true),
            Some(scope) => Ok(scope.covers(cert.der().as_ref(), is_leaf)?),
        }
    }
}

impl fmt::Debug for Crl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Crl")
            .field("issuer", &self.summary.issuer)
            .field("entries", &self.entries.len())
            .field("verified", &self.is_verified())
            .finish_non_exhaustive()
    }
}

/// The issuer in words and the dates, read from the list's first fields (its entries are
/// not read again).
fn summary(der: &[u8], entries: usize) -> Result<CrlSummary, Error> {
    let outer = der::Reader::new(der).expect(der::SEQUENCE)?;
    let tbs = der::Reader::new(outer.value).expect(der::SEQUENCE)?;
    let mut fields = der::Reader::new(tbs.value);
    fields.expect(der::INTEGER)?; // version
    fields.expect(der::SEQUENCE)?; // signature
    let issuer = fields.expect(der::SEQUENCE)?;
    let this_update = fields.read()?;
    let next_update = fields.read().ok().filter(|t| is_time(t.tag));
    let time = |raw: &[u8]| ASN1Time::from_der(raw).map(|(_, t)| t.timestamp()).ok();
    Ok(CrlSummary {
        issuer: X509Name::from_der(issuer.raw).map_or_else(
            |_| "(an issuer name that does not read)".to_string(),
            |(_, name)| name.to_string(),
        ),
        // webpki has read both times already: what it accepts, x509-parser reads.
        this_update: time(this_update.raw).unwrap_or_default(),
        next_update: next_update.and_then(|t| time(t.raw)),
        entries,
    })
}

/// UTCTime or GeneralizedTime.
fn is_time(tag: u8) -> bool {
    matches!(tag, 0x17 | 0x18)
}

/// The contents of a DER SEQUENCE (webpki keeps a name without its tag and length).
fn without_header(name: &[u8]) -> &[u8] {
    match der::Reader::new(name).expect(der::SEQUENCE) {
        Ok(sequence) if sequence.raw.len() == name.len() => sequence.value,
        _ => name,
    }
}
