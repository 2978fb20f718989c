//! The certificate a workload (or node) gets, as data, so the issue path and the tests that
//! need deliberately broken certificates build them the same way.

use std::time::Duration;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
    SanType, SerialNumber,
};
use time::OffsetDateTime;

use super::CaError;
use crate::identity::SpiffeId;

/// A leaf to sign. [`LeafSpec::workload`] is what `tunnel ca issue` makes; tests change
/// single fields to make refusals happen.
#[derive(Clone, Debug)]
pub struct LeafSpec {
    /// URI SANs; an X.509-SVID has exactly one.
    pub uris: Vec<String>,
    pub organization: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub extended_key_usages: Vec<ExtendedKeyUsagePurpose>,
    /// A leaf must not be a CA; only tests set this.
    pub is_ca: bool,
}

/// `start + ttl`, or the last second a certificate can name (9999-12-31T23:59:59Z, X.509's
/// GeneralizedTime) when that comes first: a TTL comes from a config file or a flag and may
/// be any length (`ttl = "99999999d"`), where `start + ttl` would overflow the date.
pub fn valid_until(start: OffsetDateTime, ttl: Duration) -> OffsetDateTime {
    let last = time::Date::from_calendar_date(9999, time::Month::December, 31)
        .and_then(|day| day.with_hms(23, 59, 59))
        .expect("a valid date")
        .assume_utc();
    time::Duration::try_from(ttl)
        .ok()
        .and_then(|ttl| start.checked_add(ttl))
        .map_or(last, |end| end.min(last))
}

impl LeafSpec {
    /// An X.509-SVID: one URI SAN, not a CA, digitalSignature, serverAuth + clientAuth, valid
    /// from five minutes ago (clock skew) for `ttl`.
    pub fn workload(id: &SpiffeId, ttl: Duration) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            uris: vec![id.to_string()],
            organization: id.trust_domain().to_string(),
            not_before: now - time::Duration::minutes(5),
            not_after: valid_until(now, ttl),
            extended_key_usages: vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            is_ca: false,
        }
    }

    pub(super) fn params(&self) -> Result<CertificateParams, CaError> {
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, self.organization.clone());
        params.distinguished_name = name;
        params.subject_alt_names = self
            .uris
            .iter()
            .map(|uri| Ok(SanType::URI(uri.clone().try_into()?)))
            .collect::<Result<_, rcgen::Error>>()?;
        params.is_ca = if self.is_ca {
            IsCa::Ca(rcgen::BasicConstraints::Unconstrained)
        } else {
            IsCa::ExplicitNoCa
        };
        params.key_usages = if self.is_ca {
            vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyCertSign,
            ]
        } else {
            vec![KeyUsagePurpose::DigitalSignature]
        };
        params.extended_key_usages = self.extended_key_usages.clone();
        params.not_before = self.not_before;
        params.not_after = self.not_after;
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        Ok(params)
    }
}

/// 16 random bytes, first bit clear so the DER integer stays positive. From aws-lc's
/// random source, as every key the CA makes (rcgen's).
pub(super) fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes)
        .expect("the system random source works");
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}
