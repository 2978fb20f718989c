//! The identity a registered pod gets, from a template such as
//! `spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}`: Istio's shape, which a
//! ztunnel peer insists on for a destination pod.

use std::{fmt, str::FromStr};

use super::{IdError, SpiffeId, TrustDomain};

/// The placeholders a template may use.
const PLACEHOLDERS: [&str; 4] = ["trust_domain", "namespace", "name", "service_account"];

/// A template that cannot be used, or a pod it cannot name.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("{template:?}: a '{{' without its '}}'")]
    Unclosed { template: String },
    #[error(
        "{template:?}: unknown placeholder {{{name}}} (known: {})",
        known_placeholders()
    )]
    UnknownPlaceholder { template: String, name: String },
    #[error("{template:?} gives identities of {found}, not of this trust domain {expected}")]
    OtherTrustDomain {
        template: String,
        found: TrustDomain,
        expected: TrustDomain,
    },
    #[error(
        "{template:?}: only {{trust_domain}} may stand in the trust domain part (a pod's names \
         there would give each pod an identity of another trust domain)"
    )]
    PlaceholderInTrustDomain { template: String },
    #[error("the identity template needs the pod's service account")]
    NoServiceAccount,
    /// The rendering is not a SPIFFE ID (a name that breaks a path segment).
    #[error(transparent)]
    Id(#[from] IdError),
}

fn known_placeholders() -> String {
    PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
}

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
    pub fn parse(text: &str, trust_domain: &TrustDomain) -> Result<Self, TemplateError> {
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}') else {
                return Err(TemplateError::Unclosed {
                    template: text.into(),
                });
            };
            let name = &rest[open + 1..open + close];
            if !PLACEHOLDERS.contains(&name) {
                return Err(TemplateError::UnknownPlaceholder {
                    template: text.into(),
                    name: name.into(),
                });
            }
            rest = &rest[open + close + 1..];
        }
        // The sample below names one pod; the trust domain must not depend on the pod at all.
        let domain_filled = text.replace("{trust_domain}", &trust_domain.to_string());
        let authority = domain_filled
            .strip_prefix("spiffe://")
            .and_then(|rest| rest.split('/').next());
        if authority.is_some_and(|a| a.contains('{')) {
            return Err(TemplateError::PlaceholderInTrustDomain {
                template: text.into(),
            });
        }
        let template = Self(text.into());
        let sample = template.render(&PodNames {
            trust_domain,
            namespace: "default",
            name: "pod",
            service_account: Some("default"),
        })?;
        if sample.trust_domain() != trust_domain {
            return Err(TemplateError::OtherTrustDomain {
                template: text.into(),
                found: sample.trust_domain().clone(),
                expected: trust_domain.clone(),
            });
        }
        Ok(template)
    }

    pub fn needs_service_account(&self) -> bool {
        self.0.contains("{service_account}")
    }

    /// The identity for one pod; names that would not make a valid SPIFFE ID path
    /// segment are refused by the ID's own rules.
    pub fn render(&self, names: &PodNames<'_>) -> Result<SpiffeId, TemplateError> {
        let mut id = self
            .0
            .replace("{trust_domain}", &names.trust_domain.to_string())
            .replace("{namespace}", names.namespace)
            .replace("{name}", names.name);
        if self.needs_service_account() {
            let Some(sa) = names.service_account else {
                return Err(TemplateError::NoServiceAccount);
            };
            id = id.replace("{service_account}", sa);
        }
        let id = SpiffeId::from_str(&id)?;
        if id.trust_domain() != names.trust_domain {
            return Err(TemplateError::OtherTrustDomain {
                template: self.0.clone(),
                found: id.trust_domain().clone(),
                expected: names.trust_domain.clone(),
            });
        }
        Ok(id)
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
        assert_eq!(
            e.to_string(),
            "\"spiffe://{trust_domain}/ns/{namespce}\": unknown placeholder {namespce} \
             (known: {trust_domain}, {namespace}, {name}, {service_account})"
        );
        let e = IdTemplate::parse("spiffe://other.org/ns/{namespace}", &td()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"spiffe://other.org/ns/{namespace}\" gives identities of other.org, not of this \
             trust domain cluster.local"
        );
        let e = IdTemplate::parse("spiffe://{trust_domain}/ns/{namespace", &td()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"spiffe://{trust_domain}/ns/{namespace\": a '{' without its '}'"
        );
    }

    /// Found by the `spiffe_id` fuzz target: `spiffe://ex{namespace}/{name}` was accepted for
    /// the trust domain `exdefault`, because the check renders one sample pod (namespace
    /// `default`), and then gave pod `kube-system/a.b` the identity
    /// `spiffe://exkube-system/a.b`, of another trust domain.
    #[test]
    fn a_pods_names_never_reach_the_trust_domain() {
        for (template, td) in [
            ("spiffe://ex{namespace}/{name}", "exdefault"),
            (
                "spiffe://{namespace}.cluster.local/sa/{service_account}",
                "default.cluster.local",
            ),
            ("spiffe://{name}/x", "pod"),
            ("spiffe://{trust_domain}{name}/x", "cluster.local"),
        ] {
            let td: TrustDomain = td.parse().unwrap();
            let e = IdTemplate::parse(template, &td).unwrap_err();
            assert!(
                matches!(e, TemplateError::PlaceholderInTrustDomain { .. }),
                "{template}: {e}"
            );
            assert!(
                e.to_string().contains("only {trust_domain} may stand"),
                "{e}"
            );
            // Rendering checks it too, whatever made the template.
            let e = IdTemplate(template.into())
                .render(&PodNames {
                    trust_domain: &td,
                    namespace: "kube-system",
                    name: "a.b",
                    service_account: Some("x"),
                })
                .unwrap_err();
            assert!(matches!(e, TemplateError::OtherTrustDomain { .. }), "{e}");
        }
        for fine in [
            "spiffe://{trust_domain}/ns/{namespace}/pod/{name}",
            "spiffe://cluster.local/{namespace}.{name}",
        ] {
            assert!(IdTemplate::parse(fine, &td()).is_ok(), "{fine}");
        }
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
        assert!(matches!(e, TemplateError::Id(_)), "{e:?}");
        // Transparent: the ID's own error, said once.
        let chain = crate::errors::chain(&e);
        assert!(chain.starts_with("invalid SPIFFE ID "), "{chain}");
        assert_eq!(chain.matches("invalid SPIFFE ID").count(), 1, "{chain}");
        assert_eq!(chain, e.to_string());
    }

    #[test]
    fn a_template_needing_the_service_account_says_so_without_one() {
        let template = IdTemplate::parse(IdTemplate::ISTIO, &td()).unwrap();
        let e = template
            .render(&PodNames {
                trust_domain: &td(),
                namespace: "shop",
                name: "orders-7d9f",
                service_account: None,
            })
            .unwrap_err();
        assert_eq!(
            crate::errors::chain(&e),
            "the identity template needs the pod's service account"
        );
    }
}
