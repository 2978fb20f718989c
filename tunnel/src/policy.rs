//! Who may call which workload. Per workload: any matching `deny` rule refuses; then, if the
//! workload has `allow` rules, one of them must match; a workload without `allow` rules
//! follows its mode: nobody in strict mode, every authenticated caller in permissive mode,
//! and in audit mode every authenticated caller, each one logged as strict would refuse it.

use std::collections::HashMap;

use crate::{
    config::{Action, Config, Mode, PrincipalPattern},
    identity::SpiffeId,
};

/// The compiled rules.
#[derive(Clone, Debug)]
pub struct Policy {
    rules: HashMap<String, WorkloadRules>,
}

#[derive(Clone, Debug, Default)]
struct WorkloadRules {
    /// The workload's own mode (the global one unless it sets its own).
    mode: Mode,
    allow: Vec<Rule>,
    deny: Vec<Rule>,
}

#[derive(Clone, Debug)]
struct Rule {
    pattern: PrincipalPattern,
    /// Where the rule is written, for logs: `policy[2] (line 41)`.
    origin: String,
}

/// The outcome, with enough detail to say why in one log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow {
        because: String,
    },
    /// Allowed in audit mode, where strict mode would refuse for `because`.
    Audit {
        because: String,
    },
    Deny {
        because: String,
    },
}

impl Policy {
    pub fn from_config(config: &Config) -> Self {
        let mut rules: HashMap<String, WorkloadRules> = HashMap::new();
        for workload in &config.workloads {
            rules.entry(workload.name.clone()).or_default().mode = workload.mode;
        }
        for policy in &config.policies {
            let origin = match policy.site.line {
                Some(line) => format!("{} (line {line})", policy.site.key),
                None => policy.site.key.clone(),
            };
            let entry = rules.entry(policy.to.clone()).or_default();
            let list = match policy.action {
                Action::Allow => &mut entry.allow,
                Action::Deny => &mut entry.deny,
            };
            list.extend(policy.from.iter().map(|pattern| Rule {
                pattern: pattern.clone(),
                origin: origin.clone(),
            }));
        }
        Self { rules }
    }

    pub fn evaluate(&self, caller: &SpiffeId, workload: &str) -> Decision {
        let Some(rules) = self.rules.get(workload) else {
            return Decision::Deny {
                because: format!("no workload {workload:?}"),
            };
        };
        if let Some(rule) = rules.deny.iter().find(|r| r.pattern.matches(caller)) {
            return Decision::Deny {
                because: format!("deny rule {} matches {}", rule.origin, rule.pattern),
            };
        }
        if rules.allow.is_empty() {
            let strict_refusal =
                format!("workload {workload:?} has no allow rule (strict mode admits nobody)");
            return match rules.mode {
                Mode::Strict => Decision::Deny {
                    because: strict_refusal,
                },
                Mode::Permissive => Decision::Allow {
                    because: "permissive mode (no allow rule for this workload)".into(),
                },
                Mode::Audit => Decision::Audit {
                    because: strict_refusal,
                },
            };
        }
        match rules.allow.iter().find(|r| r.pattern.matches(caller)) {
            Some(rule) => Decision::Allow {
                because: format!("allow rule {} matches {}", rule.origin, rule.pattern),
            },
            None => Decision::Deny {
                because: format!("no allow rule of workload {workload:?} matches {caller}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn policy(mode: &str, rules: &str) -> Policy {
        let text = format!(
            r#"
trust_domain = "example.org"
trust_bundle = "b.pem"
mode = "{mode}"
[node]
spiffe_id = "spiffe://example.org/node/b"
cert = "c.pem"
key = "k.pem"
[capture]
cgroup = "/sys/fs/cgroup"
destinations = ["10.0.0.0/24"]
[[workload]]
name = "orders"
spiffe_id = "spiffe://example.org/orders"
cert = "c.pem"
key = "k.pem"
ports = [8080]
{rules}
"#
        );
        Policy::from_config(&Config::parse(&text, Path::new("t.toml")).unwrap())
    }

    fn allowed(decision: &Decision) -> bool {
        matches!(decision, Decision::Allow { .. })
    }

    fn id(text: &str) -> SpiffeId {
        text.parse().unwrap()
    }

    #[test]
    fn strict_mode_admits_nobody_without_an_allow_rule() {
        let decision =
            policy("strict", "").evaluate(&id("spiffe://example.org/frontend"), "orders");
        assert!(!allowed(&decision), "{decision:?}");
    }

    #[test]
    fn permissive_mode_admits_callers_without_rules() {
        assert!(allowed(
            &policy("permissive", "").evaluate(&id("spiffe://example.org/frontend"), "orders")
        ));
    }

    #[test]
    fn audit_mode_admits_callers_without_rules_and_says_strict_would_refuse() {
        let decision = policy("audit", "").evaluate(&id("spiffe://example.org/frontend"), "orders");
        assert!(
            matches!(&decision, Decision::Audit { because } if because.contains("strict mode admits nobody")),
            "{decision:?}"
        );
        // An allow rule that does not match still denies: audit changes only the no-rule case.
        let rules = r#"
[[policy]]
action = "allow"
to = "orders"
from = ["spiffe://example.org/frontend"]
"#;
        let decision = policy("audit", rules).evaluate(&id("spiffe://example.org/batch"), "orders");
        assert!(matches!(decision, Decision::Deny { .. }), "{decision:?}");
    }

    #[test]
    fn a_workload_mode_overrides_the_global_one() {
        let inherited = policy("permissive", "").rules.get("orders").map(|r| r.mode);
        assert_eq!(
            inherited,
            Some(Mode::Permissive),
            "a workload without its own mode takes the global one"
        );
        let text_mode = |global: &str, own: &str| {
            let text = format!(
                r#"
trust_domain = "example.org"
trust_bundle = "b.pem"
mode = "{global}"
[node]
spiffe_id = "spiffe://example.org/node/b"
cert = "c.pem"
key = "k.pem"
[capture]
cgroup = "/sys/fs/cgroup"
destinations = ["10.0.0.0/24"]
[[workload]]
name = "orders"
spiffe_id = "spiffe://example.org/orders"
cert = "c.pem"
key = "k.pem"
ports = [8080]
mode = "{own}"
"#
            );
            Policy::from_config(&Config::parse(&text, Path::new("t.toml")).unwrap())
                .evaluate(&id("spiffe://example.org/frontend"), "orders")
        };
        assert!(allowed(&text_mode("strict", "permissive")));
        assert!(matches!(
            text_mode("permissive", "strict"),
            Decision::Deny { .. }
        ));
    }

    #[test]
    fn deny_wins_over_allow() {
        let rules = r#"
[[policy]]
action = "allow"
to = "orders"
from = ["spiffe://example.org/*"]
[[policy]]
action = "deny"
to = "orders"
from = ["spiffe://example.org/intruder"]
"#;
        let policy = policy("strict", rules);
        assert!(allowed(
            &policy.evaluate(&id("spiffe://example.org/frontend"), "orders")
        ));
        let decision = policy.evaluate(&id("spiffe://example.org/intruder"), "orders");
        assert!(
            matches!(&decision, Decision::Deny { because } if because.contains("deny rule policy[1]")),
            "{decision:?}"
        );
    }

    #[test]
    fn allow_rules_are_exact_or_prefix() {
        let rules = r#"
[[policy]]
action = "allow"
to = "orders"
from = ["spiffe://example.org/frontend", "spiffe://example.org/batch/*"]
"#;
        let policy = policy("strict", rules);
        assert!(allowed(
            &policy.evaluate(&id("spiffe://example.org/frontend"), "orders")
        ));
        assert!(allowed(
            &policy.evaluate(&id("spiffe://example.org/batch/nightly"), "orders")
        ));
        assert!(!allowed(
            &policy.evaluate(&id("spiffe://example.org/frontend2"), "orders")
        ));
    }
}
