//! X.509-SVID leaf rules (SPIFFE X509-SVID.md §4–5), applied after webpki has verified the
//! chain: exactly one URI SAN holding a workload SPIFFE ID, not a CA, no certificate- or
//! CRL-signing key usage, and an extended key usage that allows the role.

use std::{
    fmt,
    time::{SystemTime, UNIX_EPOCH},
};

use x509_parser::{
    certificate::X509Certificate,
    extensions::{GeneralName, ParsedExtension},
    prelude::FromDer,
};

use super::{IdError, SpiffeId};

/// The role a certificate is presented in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// A caller (TLS client): needs the clientAuth EKU.
    ClientAuth,
    /// A daemon's inbound side (TLS server): needs the serverAuth EKU.
    ServerAuth,
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ClientAuth => "clientAuth",
            Self::ServerAuth => "serverAuth",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SvidError {
    #[error("the certificate cannot be parsed: {0}")]
    Unparseable(String),
    #[error("the certificate has no URI SAN (an X.509-SVID carries its SPIFFE ID in exactly one)")]
    NoUriSan,
    #[error("the certificate has {0} URI SANs (an X.509-SVID has exactly one)")]
    MultipleUriSans(usize),
    /// The `IdError` is part of the message (a leaf, see `errors`): this error is logged
    /// and explained as one sentence.
    #[error("its URI SAN is not a workload SPIFFE ID: {0}")]
    InvalidSpiffeId(IdError),
    #[error(
        "the certificate is a CA certificate (basicConstraints cA=true); a workload leaf must not be"
    )]
    LeafIsCa,
    #[error(
        "the certificate's key usage allows signing certificates or CRLs; a workload leaf must not"
    )]
    ForbiddenKeyUsage,
    #[error("the certificate has no {0} extended key usage")]
    MissingExtendedKeyUsage(Purpose),
}

/// The SPIFFE ID of a leaf that meets the X.509-SVID rules for `purpose`.
///
/// Stricter than webpki on one point: webpki accepts a leaf with no EKU extension at all
/// (RFC 5280), while a leaf here must carry the EKU for its role.
pub fn svid_identity(leaf_der: &[u8], purpose: Purpose) -> Result<SpiffeId, SvidError> {
    let rules = svid_rules(leaf_der, purpose)?;
    // The ID first, then the CA rules, then the EKU: a CA certificate is named as such
    // whatever the order of its extensions.
    let id = rules.id?;
    rules.leaf?;
    rules.extended_key_usage?;
    Ok(id)
}

/// Each X.509-SVID rule judged on its own. [`svid_identity`] stops at the first broken one,
/// as a peer does; `tunnel check` shows every one at once.
#[derive(Debug)]
pub struct SvidRules {
    /// Exactly one URI SAN, holding a workload SPIFFE ID.
    pub id: Result<SpiffeId, SvidError>,
    /// Not a CA, and no certificate- or CRL-signing key usage.
    pub leaf: Result<(), SvidError>,
    /// The extended key usage of the role.
    pub extended_key_usage: Result<(), SvidError>,
}

/// Every rule of [`svid_identity`] for a leaf; an error only when it does not parse.
pub fn svid_rules(leaf_der: &[u8], purpose: Purpose) -> Result<SvidRules, SvidError> {
    let (_, cert) =
        X509Certificate::from_der(leaf_der).map_err(|e| SvidError::Unparseable(e.to_string()))?;
    let uris = uri_sans(&cert);
    let id = match uris.as_slice() {
        [] => Err(SvidError::NoUriSan),
        [uri] => uri.parse().map_err(SvidError::InvalidSpiffeId),
        many => Err(SvidError::MultipleUriSans(many.len())),
    };
    let mut leaf = match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => Err(SvidError::LeafIsCa),
        _ => Ok(()),
    };
    let mut eku_ok = false;
    for extension in cert.extensions() {
        match extension.parsed_extension() {
            ParsedExtension::KeyUsage(ku) if ku.key_cert_sign() || ku.crl_sign() => {
                leaf = leaf.and(Err(SvidError::ForbiddenKeyUsage));
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                eku_ok = match purpose {
                    Purpose::ClientAuth => eku.client_auth,
                    Purpose::ServerAuth => eku.server_auth,
                };
            }
            _ => {}
        }
    }
    let extended_key_usage = if eku_ok {
        Ok(())
    } else {
        Err(SvidError::MissingExtendedKeyUsage(purpose))
    };
    Ok(SvidRules {
        id,
        leaf,
        extended_key_usage,
    })
}

fn uri_sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some((*uri).to_string()),
            _ => None,
        })
        .collect()
}

/// What a certificate says that the daemon and the CA look at: its validity and its URIs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSummary {
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    pub uris: Vec<String>,
    /// The serial number in hex, as `openssl x509 -serial` and CRLs show it.
    pub serial: String,
}

impl CertSummary {
    pub fn parse(der: &[u8]) -> Result<Self, SvidError> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| SvidError::Unparseable(e.to_string()))?;
        Ok(Self {
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            uris: uri_sans(&cert),
            serial: hex_serial(cert.raw_serial()),
        })
    }

    /// Whether the certificate is outside its validity now, in words.
    pub fn validity_problem(&self) -> Option<String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if now > self.not_after {
            Some(format!(
                "the certificate expired {} ago (not after {})",
                ago(now - self.not_after),
                timestamp(self.not_after)
            ))
        } else if now < self.not_before {
            Some(format!(
                "the certificate is not valid for another {} (not before {})",
                ago(self.not_before - now),
                timestamp(self.not_before)
            ))
        } else {
            None
        }
    }
}

/// Upper-case hex without leading zero bytes, the way openssl prints a serial.
pub fn hex_serial(bytes: &[u8]) -> String {
    let trimmed = match bytes.iter().position(|b| *b != 0) {
        Some(first) => &bytes[first..],
        None => &bytes[bytes.len().saturating_sub(1)..],
    };
    trimmed.iter().map(|b| format!("{b:02X}")).collect()
}

/// Rounded as every other message says a span ("23h 59m", not "86399s").
fn ago(seconds: i64) -> String {
    crate::duration::span(seconds.unsigned_abs())
}

/// RFC 3339 in UTC.
pub fn timestamp(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}
