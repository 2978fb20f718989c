//! Workload identity: SPIFFE IDs (`spiffe://<trust-domain>/<path>`) and the X.509-SVID rules a
//! leaf certificate must meet, checked after webpki has verified its chain.

mod pattern;
mod svid;
mod template;

use std::{fmt, str::FromStr};

pub use pattern::IdPattern;
pub use svid::{
    CertSummary, Purpose, SvidError, SvidRules, hex_serial, svid_identity, svid_rules, timestamp,
};
pub use template::{IdTemplate, PodNames, TemplateError};

/// Longest SPIFFE ID implementations must accept (SPIFFE-ID.md §2.3).
const MAX_ID_BYTES: usize = 2048;
/// Longest trust domain name (SPIFFE-ID.md §2.1).
const MAX_TRUST_DOMAIN_BYTES: usize = 255;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid SPIFFE ID {input:?}: {reason}")]
pub struct IdError {
    pub input: String,
    pub reason: String,
}

/// A trust domain: lowercase letters, digits, `.`, `-` and `_`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

/// A workload's SPIFFE ID (always with a non-root path).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: TrustDomain,
    /// Starts with `/`.
    path: String,
}

impl TrustDomain {
    /// The trust domain of a signing certificate's `spiffe://<td>` URI (no path).
    pub fn from_spiffe_uri(uri: &str) -> Result<Self, IdError> {
        let error = |reason: &str| IdError {
            input: uri.into(),
            reason: reason.into(),
        };
        let rest = uri
            .strip_prefix("spiffe://")
            .ok_or_else(|| error("it must start with spiffe://"))?;
        rest.parse().map_err(|e: IdError| error(&e.reason))
    }
}

impl FromStr for TrustDomain {
    type Err = IdError;

    fn from_str(text: &str) -> Result<Self, IdError> {
        let error = |reason: String| IdError {
            input: text.into(),
            reason,
        };
        if text.is_empty() {
            return Err(error("the trust domain is empty".into()));
        }
        if text.len() > MAX_TRUST_DOMAIN_BYTES {
            return Err(error(format!(
                "the trust domain is longer than {MAX_TRUST_DOMAIN_BYTES} bytes"
            )));
        }
        if let Some(bad) = text
            .chars()
            .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_'))
        {
            return Err(error(format!(
                "the trust domain may only contain lowercase letters, digits, '.', '-' and '_' (found {bad:?})"
            )));
        }
        Ok(Self(text.into()))
    }
}

impl FromStr for SpiffeId {
    type Err = IdError;

    fn from_str(text: &str) -> Result<Self, IdError> {
        let error = |reason: String| IdError {
            input: text.into(),
            reason,
        };
        if text.len() > MAX_ID_BYTES {
            return Err(error(format!("longer than {MAX_ID_BYTES} bytes")));
        }
        let rest = text
            .strip_prefix("spiffe://")
            .ok_or_else(|| error("it must start with spiffe://".into()))?;
        let (domain, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, ""),
        };
        if domain.contains(':') || domain.contains('@') {
            return Err(error(
                "a port or user info is not allowed in the trust domain".into(),
            ));
        }
        let trust_domain: TrustDomain = domain.parse().map_err(|e: IdError| error(e.reason))?;
        if path.is_empty() || path == "/" {
            return Err(error(
                "a workload ID needs a path after the trust domain (spiffe://td/path)".into(),
            ));
        }
        for segment in path[1..].split('/') {
            match segment {
                "" => return Err(error("empty path segment (// or a trailing /)".into())),
                "." | ".." => {
                    return Err(error(format!("path segment {segment:?} is not allowed")));
                }
                _ => {}
            }
            if let Some(bad) = segment
                .chars()
                .find(|c| !matches!(c, 'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_'))
            {
                return Err(error(format!(
                    "path segments may only contain letters, digits, '.', '-' and '_' (found {bad:?})"
                )));
            }
        }
        Ok(Self {
            trust_domain,
            path: path.into(),
        })
    }
}

impl SpiffeId {
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    pub fn is_in(&self, trust_domain: &TrustDomain) -> bool {
        &self.trust_domain == trust_domain
    }

    /// The path, `/` first (`/ns/shop/sa/orders`).
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}{}", self.trust_domain, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(text: &str) -> String {
        text.parse::<SpiffeId>().unwrap_err().reason
    }

    #[test]
    fn accepts_well_formed_ids() {
        for text in [
            "spiffe://example.org/frontend",
            "spiffe://a-b_c.d/ns/prod/sa/web.v2",
            "spiffe://x/A_b-9",
        ] {
            let id: SpiffeId = text.parse().unwrap();
            assert_eq!(id.to_string(), text);
        }
        let id: SpiffeId = "spiffe://example.org/ns/prod".parse().unwrap();
        assert_eq!(id.trust_domain().to_string(), "example.org");
    }

    #[test]
    fn refuses_each_broken_rule() {
        assert!(reason("http://example.org/a").contains("must start with spiffe://"));
        assert!(reason("spiffe://Example.org/a").contains("found 'E'"));
        assert!(reason("spiffe:///a").contains("trust domain is empty"));
        assert!(reason("spiffe://example.org").contains("needs a path"));
        assert!(reason("spiffe://example.org/").contains("needs a path"));
        assert!(reason("spiffe://example.org/a/").contains("empty path segment"));
        assert!(reason("spiffe://example.org/a//b").contains("empty path segment"));
        assert!(reason("spiffe://example.org/a/../b").contains("\"..\""));
        assert!(reason("spiffe://example.org/./b").contains("\".\""));
        assert!(reason("spiffe://example.org/a%20b").contains("found '%'"));
        assert!(reason("spiffe://example.org/a?x=1").contains("found '?'"));
        assert!(reason("spiffe://example.org:8080/a").contains("port"));
        assert!(reason("spiffe://user@example.org/a").contains("user info"));
    }

    #[test]
    fn length_limits() {
        let prefix = "spiffe://example.org/";
        let fits = format!("{prefix}{}", "a".repeat(MAX_ID_BYTES - prefix.len()));
        assert!(fits.parse::<SpiffeId>().is_ok());
        let too_long = format!("{fits}a");
        assert!(reason(&too_long).contains("longer than 2048"));
        let long_domain = format!("spiffe://{}/a", "d".repeat(256));
        assert!(reason(&long_domain).contains("longer than 255"));
    }

    #[test]
    fn trust_domains_from_signing_uris() {
        assert_eq!(
            TrustDomain::from_spiffe_uri("spiffe://example.org")
                .unwrap()
                .to_string(),
            "example.org"
        );
        assert!(TrustDomain::from_spiffe_uri("example.org").is_err());
    }
}
