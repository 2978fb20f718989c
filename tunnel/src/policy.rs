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
    sync::{Arc, LazyLock, RwLock},
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
    /// The mode of registered pods (the global one), named by their identity; `None` without
    /// `[pods]`.
    pod_mode: Option<Mode>,
}

#[derive(Clone, Debug)]
struct Rule {
    /// The rule as the config has it.
    conditions: config::Policy,
    /// Where the rule is written, for logs: `policy[2] (line 41)`.
    origin: Arc<str>,
    /// Why it allows, said once when the policy is built: an allowed connection, the usual
    /// case, then costs no formatting or allocation.
    allows_because: Arc<str>,
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

/// The outcome, with enough detail to say why in one log line. `rule` is what
/// [`Decision::rule`] returns, shared with the rule, so a decision costs no allocation for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow {
        because: Arc<str>,
        rule: Arc<str>,
    },
    /// Allowed in audit mode, where strict mode would refuse for `because`.
    Audit {
        because: Arc<str>,
        rule: Arc<str>,
    },
    Deny {
        because: Arc<str>,
        rule: Arc<str>,
    },
}

impl Decision {
    /// `allow`, `audit` or `deny`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Allow { .. } => "allow",
            Self::Audit { .. } => "audit",
            Self::Deny { .. } => "deny",
        }
    }

    /// The deciding rule's origin (`policy[2] (line 41)`), or `mode` when no rule decided
    /// (the workload's mode, or no allow rule matching).
    pub fn rule(&self) -> &Arc<str> {
        let (Self::Allow { rule, .. } | Self::Audit { rule, .. } | Self::Deny { rule, .. }) = self;
        rule
    }
}

/// The `rule` of a decision no rule made.
static MODE: LazyLock<Arc<str>> = LazyLock::new(|| "mode".into());

/// Why permissive mode allows a workload without allow rules.
static PERMISSIVE: LazyLock<Arc<str>> =
    LazyLock::new(|| "permissive mode (no allow rule for this workload)".into());

/// How a decision made by a rule begins, before the rule's origin.
const ALLOW_RULE: &str = "allow rule ";
const DENY_RULE: &str = "deny rule ";

impl Rule {
    fn from_config(policy: &config::Policy) -> Self {
        let origin = {
            let at = match policy.site.line {
                Some(line) => format!("{} (line {line})", policy.site.key),
                None => policy.site.key.clone(),
            };
            match &policy.file {
                Some(file) => format!("{}: {at}", file.display()),
                None => at,
            }
        };
        Self {
            conditions: policy.clone(),
            allows_because: format!("{ALLOW_RULE}{origin}").into(),
            origin: origin.into(),
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
            pod_mode: config.pods.as_ref().map(|_| config.mode),
        }
    }

    /// A configured workload's mode and port modes, or a registered pod's (by its identity).
    fn modes_of(&self, workload: &str) -> Option<(Mode, Option<&BTreeMap<u16, Mode>>)> {
        match self.modes.get(workload) {
            Some((mode, ports)) => Some((*mode, Some(ports))),
            None if workload.starts_with("spiffe://") => self.pod_mode.map(|mode| (mode, None)),
            None => None,
        }
    }

    /// A workload's mode (strict for a workload this policy does not know).
    pub fn mode(&self, workload: &str, port: u16) -> Mode {
        self.modes_of(workload)
            .map_or(Mode::Strict, |(mode, ports)| {
                ports.and_then(|p| p.get(&port)).copied().unwrap_or(mode)
            })
    }

    /// Every rule in force, in order, with where it is written (`policy[2] (line 41)`,
    /// prefixed by its file when it comes from `policy_files`): the admin API's
    /// `/config_dump`.
    pub fn rules(&self) -> impl Iterator<Item = (&config::Policy, &str)> {
        self.rules
            .iter()
            .map(|rule| (&rule.conditions, &*rule.origin))
    }

    /// A workload's mode and the ports of it that differ, as in force (reloads change them).
    pub fn modes(&self, workload: &str) -> Option<(Mode, &BTreeMap<u16, Mode>)> {
        self.modes.get(workload).map(|(mode, ports)| (*mode, ports))
    }

    /// How many rules, for logs.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    pub fn evaluate(&self, request: &Request<'_>) -> Decision {
        if self.modes_of(request.workload).is_none() {
            return Decision::Deny {
                because: format!("no workload {:?}", request.workload).into(),
                rule: MODE.clone(),
            };
        }
        let mode = self.mode(request.workload, request.port);
        // One pass over the rules that match, in order, without collecting them (this runs
        // for every stream): the observers report, the first enforcing deny and allow count.
        let (mut deny, mut allow) = (None, None);
        for rule in self.rules.iter().filter(|r| r.matches(request)) {
            Self::log_observer(request, rule);
            if deny.is_none() && rule.enforces(Action::Deny) {
                deny = Some(rule);
            }
            if allow.is_none() && rule.enforces(Action::Allow) {
                allow = Some(rule);
            }
        }
        if let Some(rule) = deny {
            return Decision::Deny {
                because: format!("{DENY_RULE}{}", rule.origin).into(),
                rule: rule.origin.clone(),
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
                    because: strict_refusal.into(),
                    rule: MODE.clone(),
                },
                Mode::Permissive => Decision::Allow {
                    because: PERMISSIVE.clone(),
                    rule: MODE.clone(),
                },
                Mode::Audit => Decision::Audit {
                    because: strict_refusal.into(),
                    rule: MODE.clone(),
                },
            };
        }
        match allow {
            Some(rule) => Decision::Allow {
                because: rule.allows_because.clone(),
                rule: rule.origin.clone(),
            },
            None => Decision::Deny {
                because: format!(
                    "no allow rule of workload {:?} matches {} from {} to port {}",
                    request.workload, request.caller, request.source, request.port
                )
                .into(),
                rule: MODE.clone(),
            },
        }
    }

    /// `audit` rules and `dry_run` rules only report.
    fn log_observer(request: &Request<'_>, rule: &Rule) {
        let what = match (rule.conditions.action, rule.conditions.dry_run) {
            (Action::Audit, _) => "audit rule matched",
            (Action::Deny, true) => "dry-run: this rule would deny",
            (Action::Allow, true) => "dry-run: this rule would allow",
            _ => return,
        };
        info!(
            rule = %rule.origin, caller = %request.caller, source = %request.source,
            workload = request.workload, port = request.port, "policy: {what}"
        );
    }
}

#[cfg(test)]
mod tests;
