//! Which certificates a CRL speaks for, when its issuing distribution point narrows that
//! (RFC 5280 §5.2.5), decided as webpki decides it (`CertRevocationList::authoritative`):
//! the same issuer name, a scope that covers the certificate's role, and, when the
//! certificate names CRL distribution points, one of their URIs among the CRL's.

use super::der::{self, Malformed, Reader};

/// id-ce-cRLDistributionPoints (2.5.29.31).
const CRL_DISTRIBUTION_POINTS: &[u8] = &[0x55, 0x1d, 0x1f];
/// id-ce-keyUsage (2.5.29.15).
const KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];
/// A GeneralName's uniformResourceIdentifier.
const URI: u8 = der::implicit(6);

/// A CRL's issuing distribution point, as far as revocation uses it. webpki has refused at
/// load what it does not support (indirect CRLs, lists split by reason, a point named
/// relative to the issuer), so only the full name and the two scope flags remain.
#[derive(Debug)]
pub(super) struct Scope {
    only_user_certs: bool,
    only_ca_certs: bool,
    /// The URIs of its full name, as encoded.
    uris: Vec<Box<[u8]>>,
}

impl Scope {
    /// From the extension's value (the IssuingDistributionPoint SEQUENCE).
    pub fn parse(idp: &[u8]) -> Result<Self, Malformed> {
        let sequence = Reader::new(idp).expect(der::SEQUENCE)?;
        let mut fields = Reader::new(sequence.value);
        let mut scope = Self {
            only_user_certs: false,
            only_ca_certs: false,
            uris: Vec::new(),
        };
        while !fields.is_empty() {
            let field = fields.read()?;
            match field.tag {
                t if t == der::explicit(0) => scope.uris = full_name_uris(field.value)?,
                t if t == der::implicit(1) => scope.only_user_certs = boolean(field.value)?,
                t if t == der::implicit(2) => scope.only_ca_certs = boolean(field.value)?,
                _ => {}
            }
        }
        Ok(scope)
    }

    /// Whether the CRL speaks for `cert` (DER) at its place in the chain. An unreadable
    /// distribution point of the certificate matches nothing, as in webpki.
    pub fn covers(&self, cert: &[u8], is_leaf: bool) -> Result<bool, Malformed> {
        if self.only_ca_certs && is_leaf || self.only_user_certs && !is_leaf {
            return Ok(false);
        }
        let Some(points) = extension(cert, CRL_DISTRIBUTION_POINTS)? else {
            return Ok(true);
        };
        let Ok(points) = Reader::new(points).expect(der::SEQUENCE) else {
            return Ok(false);
        };
        let mut points = Reader::new(points.value);
        while !points.is_empty() {
            let Ok(point) = points.expect(der::SEQUENCE) else {
                // The rest cannot be found without this one's length.
                return Ok(false);
            };
            if self.point_matches(point.value) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// One DistributionPoint of a certificate: usable only with neither a CRL issuer nor
    /// reasons, and a full name with one of our URIs.
    fn point_matches(&self, point: &[u8]) -> bool {
        let mut fields = Reader::new(point);
        let mut uris = None;
        while !fields.is_empty() {
            let Ok(field) = fields.read() else {
                return false;
            };
            match field.tag {
                t if t == der::explicit(0) && uris.is_none() => {
                    uris = Some(full_name_uris(field.value).unwrap_or_default())
                }
                // reasons [1] or cRLIssuer [2] (a list split by reason, or another issuer's:
                // never this one), a second name, or something unknown.
                _ => return false,
            }
        }
        uris.unwrap_or_default()
            .iter()
            .any(|uri| self.uris.contains(uri))
    }
}

/// The URIs of a DistributionPointName that is a fullName (`[0] GeneralNames`); an
/// unreadable name, or another kind of name, is skipped.
fn full_name_uris(name: &[u8]) -> Result<Vec<Box<[u8]>>, Malformed> {
    let full_name = Reader::new(name).expect(der::explicit(0))?;
    let mut names = Reader::new(full_name.value);
    let mut uris = Vec::new();
    while !names.is_empty() {
        let Ok(name) = names.read() else { break };
        if name.tag == URI {
            uris.push(name.value.into());
        }
    }
    Ok(uris)
}

fn boolean(value: &[u8]) -> Result<bool, Malformed> {
    match value {
        [0xff] => Ok(true),
        [0x00] => Ok(false),
        _ => Err(Malformed),
    }
}

/// Whether a CA certificate (DER) may sign CRLs: no key usage extension (historically "any
/// use", as webpki takes it), or one with cRLSign.
pub(super) fn may_sign_crls(cert: &[u8]) -> Result<bool, Malformed> {
    let Some(key_usage) = extension(cert, KEY_USAGE)? else {
        return Ok(true);
    };
    let bits = Reader::new(key_usage).expect(der::BIT_STRING)?;
    let (&unused, flags) = bits.value.split_first().ok_or(Malformed)?;
    match (unused, flags.last()) {
        (8.., _) | (1.., None) => return Err(Malformed),
        (1..=7, Some(last)) if last & ((1 << unused) - 1) != 0 => return Err(Malformed),
        _ => {}
    }
    // cRLSign is bit 6: the second lowest of the first byte.
    Ok(flags.first().is_some_and(|first| first & 0x02 != 0))
}

/// The value (inside its OCTET STRING) of a certificate's extension.
fn extension<'a>(cert: &'a [u8], oid: &[u8]) -> Result<Option<&'a [u8]>, Malformed> {
    let cert = Reader::new(cert).expect(der::SEQUENCE)?;
    let tbs = Reader::new(cert.value).expect(der::SEQUENCE)?;
    let mut fields = Reader::new(tbs.value);
    fields.optional(der::explicit(0))?; // version
    for _ in 0..6 {
        // serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo
        fields.read()?;
    }
    fields.optional(der::implicit(1))?; // issuerUniqueID
    fields.optional(der::implicit(2))?; // subjectUniqueID
    let Some(extensions) = fields.optional(der::explicit(3))? else {
        return Ok(None);
    };
    let list = Reader::new(extensions.value).expect(der::SEQUENCE)?;
    let mut list = Reader::new(list.value);
    while !list.is_empty() {
        let extension = list.expect(der::SEQUENCE)?;
        let mut parts = Reader::new(extension.value);
        let id = parts.expect(der::OID)?;
        parts.optional(der::BOOLEAN)?;
        let value = parts.expect(der::OCTET_STRING)?;
        if id.value == oid {
            return Ok(Some(value.value));
        }
    }
    Ok(None)
}
