//! The identity a registered pod gets, from a template such as
//! `spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}`: Istio's shape, which a
//! ztunnel peer insists on for a destination pod.

use std::{fmt, str::FromStr};

use super::{SpiffeId, TrustDomain};

/// The placeholders a template may use.
const PLACEHOLDERS: [&str; 4] = ["trust_domain", "namespace", "name", "service_account"];

/// What a pod's identity is made of.
pub struct PodNames<'a> {
    pub trust_domain: &'a TrustDomain,
    pub namespace: &'a str,
    pub name: &'a str,
    /// Read from the Kubernetes API, only when the template needs it.
    pub service_account: Option<&'a str>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdTemplate(String);

impl IdTemplate {
    pub const ISTIO: &'static str = "spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}";

    /// Checks the placeholders and that a rendering is a SPIFFE ID of `trust_domain`.
    pub fn parse(text: &str, trust_domain: &TrustDomain) -> Result<Self, String> {
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}') else {
                return Err(format!("{text:?}: a '{{' without its '}}'"));
            };
            let name = &rest[open + 1..open + close];
            if !PLACEHOLDERS.contains(&name) {
                return Err(format!(
                    "{text:?}: unknown placeholder {{{name}}} (known: {})",
                    PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
                ));
            }
            rest = &rest[open + close + 1..];
        }
        let template = Self(text.into());
        let sample = template.render(&PodNames {
            trust_domain,
            namespace: "default",
            name: "pod",
            service_account: Some("default"),
        })?;
        if sample.trust_domain() != trust_domain {
            return Err(format!(
                "{text:?} gives identities of {}, not of this trust domain {trust_domain}",
                sample.trust_domain()
            ));
        }
        Ok(template)
    }

    pub fn needs_service_account(&self) -> bool {
        self.0.contains("{service_account}")
    }

    /// The identity for one pod; names that would not make a valid SPIFFE ID path
    /// segment are refused by the ID's own rules.
    pub fn render(&self, names: &PodNames<'_>) -> Result<SpiffeId, String> {
        let mut id = self
            .0
            .replace("{trust_domain}", &names.trust_domain.to_string())
            .replace("{namespace}", names.namespace)
            .replace("{name}", names.name);
        if self.needs_service_account() {
            let Some(sa) = names.service_account else {
                return Err("the identity template needs the pod's service account".into());
            };
            id = id.replace("{service_account}", sa);
        }
        SpiffeId::from_str(&id).map_err(|e| e.to_string())
    }
}

impl fmt::Display for IdTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td() -> TrustDomain {
        "cluster.local".parse().unwrap()
    }

    #[test]
    fn istio_shape_renders_from_the_service_account() {
        let template = IdTemplate::parse(IdTemplate::ISTIO, &td()).unwrap();
        assert!(template.needs_service_account());
        let id = template
            .render(&PodNames {
                trust_domain: &td(),
                namespace: "shop",
                name: "orders-7d9f",
                service_account: Some("orders"),
            })
            .unwrap();
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/orders");
    }

    #[test]
    fn bad_templates_say_what_is_wrong() {
        let e = IdTemplate::parse("spiffe://{trust_domain}/ns/{namespce}", &td()).unwrap_err();
        assert!(e.contains("unknown placeholder {namespce}"), "{e}");
        let e = IdTemplate::parse("spiffe://other.org/ns/{namespace}", &td()).unwrap_err();
        assert!(e.contains("not of this trust domain"), "{e}");
        let e = IdTemplate::parse("spiffe://{trust_domain}/ns/{namespace", &td()).unwrap_err();
        assert!(e.contains("without its"), "{e}");
    }

    #[test]
    fn names_that_break_an_id_are_refused() {
        let template =
            IdTemplate::parse("spiffe://{trust_domain}/ns/{namespace}/pod/{name}", &td()).unwrap();
        let e = template
            .render(&PodNames {
                trust_domain: &td(),
                namespace: "a/../b",
                name: "x",
                service_account: None,
            })
            .unwrap_err();
        assert!(e.contains("invalid SPIFFE ID"), "{e}");
    }
}
