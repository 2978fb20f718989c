//! An identity pattern inside one trust domain: an exact SPIFFE ID, or every ID starting with
//! a prefix (written with a trailing `*`). Used for the identity peer daemons must present.

use std::fmt;

use super::{IdError, SpiffeId, TrustDomain};

/// `spiffe://example.org/node/*` (a prefix) or `spiffe://example.org/node/gateway` (exact).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdPattern {
    Exact(SpiffeId),
    /// The text before the `*`, starting with `spiffe://<trust domain>/`.
    Prefix(String),
}

impl IdPattern {
    /// Every node of `trust_domain`: `spiffe://<trust_domain>/node/*`.
    pub fn nodes_of(trust_domain: &TrustDomain) -> Self {
        Self::Prefix(format!("spiffe://{trust_domain}/node/"))
    }

    /// Parses `text` as a pattern that can only match IDs of `trust_domain`: an ID of that
    /// trust domain, or a prefix of one followed by a single trailing `*`.
    pub fn parse(text: &str, trust_domain: &TrustDomain) -> Result<Self, IdError> {
        let error = |reason: String| IdError {
            input: text.into(),
            reason,
        };
        let root = format!("spiffe://{trust_domain}/");
        let Some(prefix) = text.strip_suffix('*') else {
            let id: SpiffeId = text.parse()?;
            if !id.is_in(trust_domain) {
                return Err(error(format!(
                    "it is outside the trust domain {trust_domain}"
                )));
            }
            return Ok(Self::Exact(id));
        };
        if prefix.contains('*') {
            return Err(error(
                "'*' is only allowed at the end (a prefix match)".into(),
            ));
        }
        if !prefix.starts_with(&root) {
            return Err(error(format!(
                "a prefix must start with {root} (only trust domain {trust_domain} is trusted)"
            )));
        }
        // Whatever the prefix ends with, one more letter makes it an ID if and only if every
        // segment written so far is valid (no `//`, no `..`, no forbidden characters).
        format!("{prefix}x")
            .parse::<SpiffeId>()
            .map_err(|e| error(e.reason))?;
        Ok(Self::Prefix(prefix.into()))
    }

    pub fn matches(&self, id: &SpiffeId) -> bool {
        match self {
            Self::Exact(exact) => exact == id,
            Self::Prefix(prefix) => id.to_string().starts_with(prefix.as_str()),
        }
    }
}

impl fmt::Display for IdPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(id) => write!(f, "{id}"),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td() -> TrustDomain {
        "example.org".parse().unwrap()
    }

    fn id(text: &str) -> SpiffeId {
        text.parse().unwrap()
    }

    fn reason(text: &str) -> String {
        IdPattern::parse(text, &td()).unwrap_err().reason
    }

    #[test]
    fn prefixes_and_exact_ids_match_as_written() {
        let nodes = IdPattern::parse("spiffe://example.org/node/*", &td()).unwrap();
        assert_eq!(nodes, IdPattern::nodes_of(&td()));
        assert_eq!(nodes.to_string(), "spiffe://example.org/node/*");
        assert!(nodes.matches(&id("spiffe://example.org/node/host-b")));
        assert!(!nodes.matches(&id("spiffe://example.org/batch")));
        assert!(!nodes.matches(&id("spiffe://example.org/nodes/x")));
        assert!(!nodes.matches(&id("spiffe://other.org/node/host-b")));

        let exact = IdPattern::parse("spiffe://example.org/node/gateway", &td()).unwrap();
        assert!(exact.matches(&id("spiffe://example.org/node/gateway")));
        assert!(!exact.matches(&id("spiffe://example.org/node/gateway2")));
        assert_eq!(exact.to_string(), "spiffe://example.org/node/gateway");

        let partial = IdPattern::parse("spiffe://example.org/node-*", &td()).unwrap();
        assert!(partial.matches(&id("spiffe://example.org/node-b")));
    }

    #[test]
    fn patterns_outside_the_trust_domain_or_malformed_are_refused() {
        assert!(
            reason("spiffe://other.org/node/*").contains("must start with spiffe://example.org/")
        );
        assert!(
            reason("spiffe://other.org/node/a").contains("outside the trust domain example.org")
        );
        assert!(reason("*").contains("must start with spiffe://example.org/"));
        assert!(reason("spiffe://example.org*").contains("must start with spiffe://example.org/"));
        assert!(reason("spiffe://example.org/*/x*").contains("only allowed at the end"));
        assert!(reason("spiffe://example.org/*/x").contains("found '*'"));
        assert!(reason("spiffe://example.org/node//*").contains("empty path segment"));
        assert!(reason("spiffe://example.org/../*").contains("\"..\""));
        assert!(reason("spiffe://example.org/n?de/*").contains("found '?'"));
        assert!(reason("example.org/node/*").contains("must start with spiffe://example.org/"));
    }
}
