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
        matches!(&decision, Decision::Audit { because, .. } if because.contains("strict mode admits nobody")),
        "{decision:?}"
    );
}

#[test]
fn an_allow_rule_for_another_workload_leaves_this_one_to_its_mode() {
    let rules = rule("action = \"allow\"\nto = \"billing\"\nfrom = [\"spiffe://example.org/x\"]");
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
    let rules = rule("action = \"allow\"\nto = \"orders\"\nfrom = [\"spiffe://example.org/*\"]")
        + &rule("action = \"deny\"\nto = \"orders\"\nfrom = [\"spiffe://example.org/intruder\"]");
    let policy = policy("strict", &rules);
    assert!(allowed(&to_orders(&policy, "frontend")));
    let decision = to_orders(&policy, "intruder");
    assert!(
        matches!(&decision, Decision::Deny { because, .. } if because.contains("deny rule policy[1]")),
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
