//! Who may call which workload: L4 authorization in the shape of Istio's (ztunnel's).
//!
//! A rule matches a connection when every condition it sets holds: `to` (the workload),
//! `from` / `not_from` (the caller's SPIFFE ID: exact, or a `prefix*`), `from_ips` /
//! `not_from_ips` (the source address: for a tunnelled connection, the caller's daemon),
//! `ports` / `not_ports` (the destination port). A rule that sets nothing matches
//! everything. Then, for a workload:
//!
//! 1. any matching `deny` rule denies;
//! 2. a workload that no `allow` rule names follows its mode: nobody in strict mode, every
//!    authenticated caller in permissive mode, and in audit mode every authenticated caller,
//!    each one logged as strict would refuse it;
//! 3. any matching `allow` rule allows;
//! 4. otherwise the connection is denied.
//!
//! `audit` rules change nothing: a match is logged with the rule. `dry_run` rules are
//! evaluated and logged ("would deny", "would allow") but never enforced.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::{Arc, RwLock},
};

use tracing::info;

use crate::{
    config::{self, Action, Config, Mode},
    identity::SpiffeId,
};

/// The policy in force, replaced whole on reload: each decision reads the current one.
#[derive(Debug)]
pub struct LivePolicy {
    current: RwLock<Arc<Policy>>,
}

impl LivePolicy {
    pub fn new(policy: Policy) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(Arc::new(policy)),
        })
    }

    pub fn current(&self) -> Arc<Policy> {
        self.current.read().expect("policy lock poisoned").clone()
    }

    pub fn replace(&self, policy: Policy) {
        *self.current.write().expect("policy lock poisoned") = Arc::new(policy);
    }
}

/// The compiled rules.
#[derive(Clone, Debug)]
pub struct Policy {
    rules: Vec<Rule>,
    /// Each workload's mode (the global one unless it sets its own), and ports of it that
    /// differ.
    modes: HashMap<String, (Mode, BTreeMap<u16, Mode>)>,
}

#[derive(Clone, Debug)]
struct Rule {
    /// The rule as the config has it.
    conditions: config::Policy,
    /// Where the rule is written, for logs: `policy[2] (line 41)`.
    origin: String,
}

/// What a decision is about.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub caller: &'a SpiffeId,
    /// The connection's source address (for a tunnelled connection, the caller's daemon).
    pub source: IpAddr,
    pub workload: &'a str,
    pub port: u16,
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

impl Rule {
    fn from_config(policy: &config::Policy) -> Self {
        Self {
            conditions: policy.clone(),
            origin: {
                let at = match policy.site.line {
                    Some(line) => format!("{} (line {line})", policy.site.key),
                    None => policy.site.key.clone(),
                };
                match &policy.file {
                    Some(file) => format!("{}: {at}", file.display()),
                    None => at,
                }
            },
        }
    }

    /// Whether the rule is about this workload at all.
    fn applies_to(&self, workload: &str) -> bool {
        self.conditions
            .to
            .as_deref()
            .is_none_or(|to| to == workload)
    }

    /// Whether it is enforced with `action` (not an audit rule, not a dry run).
    fn enforces(&self, action: Action) -> bool {
        self.conditions.action == action && !self.conditions.dry_run
    }

    fn matches(&self, request: &Request<'_>) -> bool {
        let rule = &self.conditions;
        let source = request.source.to_canonical();
        self.applies_to(request.workload)
            && rule
                .from
                .as_ref()
                .is_none_or(|from| from.iter().any(|p| p.matches(request.caller)))
            && !rule.not_from.iter().any(|p| p.matches(request.caller))
            && rule
                .from_ips
                .as_ref()
                .is_none_or(|nets| nets.iter().any(|n| n.contains(&source)))
            && !rule.not_from_ips.iter().any(|n| n.contains(&source))
            && rule
                .ports
                .as_ref()
                .is_none_or(|ports| ports.contains(&request.port))
            && !rule.not_ports.contains(&request.port)
    }
}

impl Policy {
    pub fn from_config(config: &Config) -> Self {
        Self {
            rules: config.policies.iter().map(Rule::from_config).collect(),
            modes: config
                .workloads
                .iter()
                .map(|w| (w.name.clone(), (w.mode, w.port_modes.clone())))
                .collect(),
        }
    }

    /// A workload's mode (strict for a workload this policy does not know).
    pub fn mode(&self, workload: &str, port: u16) -> Mode {
        self.modes
            .get(workload)
            .map_or(Mode::Strict, |(mode, ports)| {
                ports.get(&port).copied().unwrap_or(*mode)
            })
    }

    /// How many rules, for logs.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    pub fn evaluate(&self, request: &Request<'_>) -> Decision {
        if !self.modes.contains_key(request.workload) {
            return Decision::Deny {
                because: format!("no workload {:?}", request.workload),
            };
        }
        let mode = self.mode(request.workload, request.port);
        let matching: Vec<&Rule> = self.rules.iter().filter(|r| r.matches(request)).collect();
        self.log_observers(request, &matching);
        let enforced = |action: Action| matching.iter().find(|r| r.enforces(action)).copied();
        if let Some(rule) = enforced(Action::Deny) {
            return Decision::Deny {
                because: format!("deny rule {}", rule.origin),
            };
        }
        let has_allow_rules = self
            .rules
            .iter()
            .any(|r| r.enforces(Action::Allow) && r.applies_to(request.workload));
        if !has_allow_rules {
            let strict_refusal = format!(
                "workload {:?} has no allow rule (strict mode admits nobody)",
                request.workload
            );
            return match mode {
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
        match enforced(Action::Allow) {
            Some(rule) => Decision::Allow {
                because: format!("allow rule {}", rule.origin),
            },
            None => Decision::Deny {
                because: format!(
                    "no allow rule of workload {:?} matches {} from {} to port {}",
                    request.workload, request.caller, request.source, request.port
                ),
            },
        }
    }

    /// `audit` rules and `dry_run` rules only report.
    fn log_observers(&self, request: &Request<'_>, matching: &[&Rule]) {
        for rule in matching {
            let what = match (rule.conditions.action, rule.conditions.dry_run) {
                (Action::Audit, _) => "audit rule matched",
                (Action::Deny, true) => "dry-run: this rule would deny",
                (Action::Allow, true) => "dry-run: this rule would allow",
                _ => continue,
            };
            info!(
                rule = %rule.origin, caller = %request.caller, source = %request.source,
                workload = request.workload, port = request.port, "policy: {what}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// A policy for workloads `orders` (port 8080) and `billing` (port 9090) under `mode`.
    fn policy(mode: &str, rules: &str) -> Policy {
        policy_with(mode, "", rules)
    }

    /// `policy`, with `orders_extra` added to the `orders` workload's table.
    fn policy_with(mode: &str, orders_extra: &str, rules: &str) -> Policy {
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
{orders_extra}
[[workload]]
name = "billing"
spiffe_id = "spiffe://example.org/billing"
cert = "c.pem"
key = "k.pem"
ports = [9090]
{rules}
"#
        );
        Policy::from_config(&Config::parse(&text, Path::new("t.toml")).unwrap())
    }

    /// The decision for `caller` (a path in example.org) from `source` to `workload`:`port`.
    fn decide(policy: &Policy, caller: &str, source: &str, workload: &str, port: u16) -> Decision {
        let caller: SpiffeId = format!("spiffe://example.org/{caller}").parse().unwrap();
        policy.evaluate(&Request {
            caller: &caller,
            source: source.parse().unwrap(),
            workload,
            port,
        })
    }

    /// `decide` for the usual request: from 10.0.0.1 to orders:8080.
    fn to_orders(policy: &Policy, caller: &str) -> Decision {
        decide(policy, caller, "10.0.0.1", "orders", 8080)
    }

    fn allowed(decision: &Decision) -> bool {
        matches!(decision, Decision::Allow { .. })
    }

    fn rule(body: &str) -> String {
        format!("[[policy]]\n{body}\n")
    }

    #[test]
    fn a_workload_without_allow_rules_follows_its_mode() {
        assert!(!allowed(&to_orders(&policy("strict", ""), "frontend")));
        assert!(allowed(&to_orders(&policy("permissive", ""), "frontend")));
        let decision = to_orders(&policy("audit", ""), "frontend");
        assert!(
            matches!(&decision, Decision::Audit { because } if because.contains("strict mode admits nobody")),
            "{decision:?}"
        );
    }

    #[test]
    fn an_allow_rule_for_another_workload_leaves_this_one_to_its_mode() {
        let rules =
            rule("action = \"allow\"\nto = \"billing\"\nfrom = [\"spiffe://example.org/x\"]");
        assert!(allowed(&to_orders(
            &policy("permissive", &rules),
            "frontend"
        )));
        assert!(!allowed(&decide(
            &policy("permissive", &rules),
            "frontend",
            "10.0.0.1",
            "billing",
            9090
        )));
    }

    #[test]
    fn in_audit_mode_an_unmatched_allow_rule_still_denies() {
        let rules =
            rule("action = \"allow\"\nto = \"orders\"\nfrom = [\"spiffe://example.org/frontend\"]");
        let decision = to_orders(&policy("audit", &rules), "batch");
        assert!(matches!(decision, Decision::Deny { .. }), "{decision:?}");
    }

    #[test]
    fn a_workload_mode_overrides_the_global_one() {
        let with_mode = |global: &str, own: &str| {
            to_orders(
                &policy_with(global, &format!("mode = \"{own}\""), ""),
                "frontend",
            )
        };
        assert!(allowed(&with_mode("strict", "permissive")));
        assert!(matches!(
            with_mode("permissive", "strict"),
            Decision::Deny { .. }
        ));
        assert_eq!(
            policy("permissive", "").mode("orders", 8080),
            Mode::Permissive,
            "a workload without its own mode takes the global one"
        );
    }

    #[test]
    fn a_port_mode_overrides_its_workloads() {
        let policy = policy_with("strict", "port_modes = { \"8080\" = \"audit\" }", "");
        assert_eq!(policy.mode("orders", 8080), Mode::Audit);
        assert_eq!(policy.mode("orders", 9999), Mode::Strict);
        assert!(matches!(
            to_orders(&policy, "frontend"),
            Decision::Audit { .. }
        ));
    }

    #[test]
    fn deny_wins_over_allow() {
        let rules = rule(
            "action = \"allow\"\nto = \"orders\"\nfrom = [\"spiffe://example.org/*\"]",
        ) + &rule(
            "action = \"deny\"\nto = \"orders\"\nfrom = [\"spiffe://example.org/intruder\"]",
        );
        let policy = policy("strict", &rules);
        assert!(allowed(&to_orders(&policy, "frontend")));
        let decision = to_orders(&policy, "intruder");
        assert!(
            matches!(&decision, Decision::Deny { because } if because.contains("deny rule policy[1]")),
            "{decision:?}"
        );
    }

    #[test]
    fn principals_match_exactly_or_by_prefix_and_not_from_excludes() {
        let rules = rule(
            "action = \"allow\"\nto = \"orders\"\nfrom = [\"spiffe://example.org/frontend\", \"spiffe://example.org/ns/prod/*\"]\nnot_from = [\"spiffe://example.org/ns/prod/legacy\"]",
        );
        let policy = policy("strict", &rules);
        assert!(allowed(&to_orders(&policy, "frontend")));
        assert!(allowed(&to_orders(&policy, "ns/prod/api")));
        assert!(
            !allowed(&to_orders(&policy, "frontend-2")),
            "exact means exact"
        );
        assert!(
            !allowed(&to_orders(&policy, "ns/prod/legacy")),
            "not_from excludes"
        );
        assert!(!allowed(&to_orders(&policy, "ns/dev/api")));
    }

    #[test]
    fn source_addresses_match_by_cidr_and_not_from_ips_excludes() {
        let rules = rule(
            "action = \"allow\"\nto = \"orders\"\nfrom_ips = [\"10.0.0.0/24\", \"fd00::/64\"]\nnot_from_ips = [\"10.0.0.9/32\"]",
        );
        let policy = policy("strict", &rules);
        assert!(allowed(&decide(
            &policy, "frontend", "10.0.0.1", "orders", 8080
        )));
        assert!(allowed(&decide(
            &policy, "frontend", "fd00::1", "orders", 8080
        )));
        assert!(
            allowed(&decide(
                &policy,
                "frontend",
                "::ffff:10.0.0.1",
                "orders",
                8080
            )),
            "v4-mapped is IPv4"
        );
        assert!(
            !allowed(&decide(&policy, "frontend", "10.0.0.9", "orders", 8080)),
            "not_from_ips excludes"
        );
        assert!(!allowed(&decide(
            &policy, "frontend", "10.9.0.1", "orders", 8080
        )));
    }

    #[test]
    fn ports_and_not_ports_narrow_a_rule() {
        let text = r#"
[[workload]]
name = "multi"
spiffe_id = "spiffe://example.org/multi"
cert = "c.pem"
key = "k.pem"
ports = [7000, 7001, 7002]
"#
        .to_string()
            + &rule("action = \"allow\"\nto = \"multi\"\nports = [7000, 7001]")
            + &rule(
                "action = \"deny\"\nto = \"multi\"\nnot_ports = [7000]\nfrom = [\"spiffe://example.org/batch\"]",
            );
        let policy = policy("strict", &text);
        assert!(allowed(&decide(
            &policy, "frontend", "10.0.0.1", "multi", 7000
        )));
        assert!(allowed(&decide(
            &policy, "frontend", "10.0.0.1", "multi", 7001
        )));
        assert!(
            !allowed(&decide(&policy, "frontend", "10.0.0.1", "multi", 7002)),
            "not in ports"
        );
        assert!(
            allowed(&decide(&policy, "batch", "10.0.0.1", "multi", 7000)),
            "not_ports spares 7000"
        );
        assert!(
            !allowed(&decide(&policy, "batch", "10.0.0.1", "multi", 7001)),
            "the deny applies elsewhere"
        );
    }

    #[test]
    fn a_rule_without_to_applies_to_every_workload_and_one_without_conditions_to_everything() {
        let policy = policy(
            "permissive",
            &rule("action = \"deny\"\nfrom = [\"spiffe://example.org/intruder\"]"),
        );
        assert!(!allowed(&to_orders(&policy, "intruder")));
        assert!(!allowed(&decide(
            &policy, "intruder", "10.0.0.1", "billing", 9090
        )));
        assert!(allowed(&to_orders(&policy, "frontend")));
        let deny_all = self::policy("permissive", &rule("action = \"deny\""));
        assert!(!allowed(&to_orders(&deny_all, "frontend")));
    }

    #[test]
    fn dry_run_rules_are_not_enforced() {
        let dry_deny = rule("action = \"deny\"\nto = \"orders\"\ndry_run = true");
        assert!(
            allowed(&to_orders(&policy("permissive", &dry_deny), "frontend")),
            "a dry-run deny denies nothing"
        );
        let dry_allow = rule(
            "action = \"allow\"\nto = \"orders\"\nfrom = [\"spiffe://example.org/frontend\"]\ndry_run = true",
        );
        let policy = policy("permissive", &dry_allow);
        assert!(
            allowed(&to_orders(&policy, "batch")),
            "a dry-run allow does not make the workload allow-listed"
        );
    }

    #[test]
    fn audit_rules_change_nothing() {
        let audit = rule("action = \"audit\"\nto = \"orders\"");
        assert!(!allowed(&to_orders(&policy("strict", &audit), "frontend")));
        assert!(allowed(&to_orders(
            &policy("permissive", &audit),
            "frontend"
        )));
    }
}
