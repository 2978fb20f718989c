use std::path::Path;

use super::*;

/// The `ports` line of workload "orders" (the `[capture]` section has a commented one).
const ORDERS_PORTS: &str = "ports = [8080]                                 #";

/// The example config of the user-facing contract, verbatim: the keys and layout every
/// release must keep accepting.
const CONTRACT: &str = r#"
trust_domain = "example.org"
trust_bundle = "/etc/tunnel/ca/bundle.pem"     # one or more roots
mode = "strict"                                # strict | permissive

[node]                                         # the daemon's own identity (inbound side)
spiffe_id = "spiffe://example.org/node/host-b"
cert = "/etc/tunnel/node/cert.pem"             # leaf + chain
key = "/etc/tunnel/node/key.pem"

[listen]
outbound = "127.0.0.1:15001"
inbound = "0.0.0.0:15008"
admin = "127.0.0.1:15000"

[capture]
cgroup = "/sys/fs/cgroup"                      # cgroup v2 dir whose processes are captured
destinations = ["10.0.0.0/24"]                 # tunnelled destinations; each runs a daemon on 15008
# ports = [8080]                               # only these destination ports (default: all)
# exclude = ["10.0.0.9/32"]

[[workload]]
name = "frontend"
spiffe_id = "spiffe://example.org/frontend"
cert = "/etc/tunnel/frontend/cert.pem"
key = "/etc/tunnel/frontend/key.pem"
cgroup = "/sys/fs/cgroup/frontend"             # outbound: callers in this cgroup are this workload

[[workload]]
name = "orders"
spiffe_id = "spiffe://example.org/orders"
cert = "/etc/tunnel/orders/cert.pem"
key = "/etc/tunnel/orders/key.pem"
ports = [8080]                                 # inbound: connections to these local ports are for it

[[policy]]
action = "allow"                               # allow | deny; deny is evaluated first
to = "orders"
from = ["spiffe://example.org/frontend"]       # exact, or a trailing * prefix match
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/tunnel/tunnel.toml"))
}

/// The error text for `text` with `from` replaced by `to` in the contract example.
fn error_after(from: &str, to: &str) -> String {
    assert!(
        CONTRACT.contains(from),
        "test bug: {from:?} not in the example"
    );
    parse(&CONTRACT.replacen(from, to, 1))
        .expect_err("config should be refused")
        .to_string()
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .expect("needle present")
        + 1
}

#[test]
fn the_contract_example_parses() {
    let config = parse(CONTRACT).unwrap();
    assert_eq!(config.trust_domain.to_string(), "example.org");
    assert_eq!(config.mode, Mode::Strict);
    assert_eq!(config.listen.outbound.to_string(), "127.0.0.1:15001");
    assert_eq!(config.listen.outbound_v6, None);
    assert_eq!(
        config.capture.destinations,
        vec!["10.0.0.0/24".parse::<IpNet>().unwrap()]
    );
    assert_eq!(config.capture.ports, None);
    assert_eq!(config.capture.bpf_dir.value, Path::new(DEFAULT_BPF_DIR));
    assert_eq!(config.workloads.len(), 2);
    assert_eq!(
        config.workload("orders").unwrap().ports,
        BTreeSet::from([8080])
    );
    assert_eq!(config.policies[0].to.as_deref(), Some("orders"));
    assert_eq!(config.outbound.peer_port, DEFAULT_PEER_PORT);
    // Where a value came from survives, for errors found at startup.
    assert_eq!(config.capture.cgroup.site.key, "capture.cgroup");
    assert_eq!(
        config.capture.cgroup.site.line,
        Some(line_of(CONTRACT, "cgroup = \"/sys/fs/cgroup\""))
    );
}

#[test]
fn relative_paths_are_relative_to_the_file() {
    let text = CONTRACT.replace("\"/etc/tunnel/ca/bundle.pem\"", "\"ca/bundle.pem\"");
    let config = Config::parse(&text, Path::new("/srv/conf/tunnel.toml")).unwrap();
    assert_eq!(
        config.trust_bundle.value,
        Path::new("/srv/conf/ca/bundle.pem")
    );
}

#[test]
fn ipv6_destinations_get_an_ipv6_listener() {
    let config =
        parse(&CONTRACT.replace(r#"["10.0.0.0/24"]"#, r#"["10.0.0.0/24", "fd00::/64"]"#)).unwrap();
    assert_eq!(
        config.listen.outbound_v6.unwrap().to_string(),
        "[::1]:15001"
    );
}

#[test]
fn unknown_keys_are_refused_with_their_line() {
    let message = error_after("mode = \"strict\"", "mode = \"strict\"\nmodee = 1");
    assert!(
        message.starts_with("/etc/tunnel/tunnel.toml:5:"),
        "{message}"
    );
    assert!(message.contains("unknown field `modee`"), "{message}");
}

#[test]
fn a_typo_in_a_section_names_the_key() {
    let message = error_after("inbound = \"0.0.0.0:15008\"", "inbund = \"0.0.0.0:15008\"");
    assert!(message.contains(":13:"), "{message}");
    assert!(message.contains("unknown field `inbund`"), "{message}");
}

#[test]
fn wrong_types_are_refused() {
    let message = error_after(ORDERS_PORTS, "ports = \"8080\" #");
    assert!(
        message.contains(&format!(":{}:", line_of(CONTRACT, ORDERS_PORTS))),
        "{message}"
    );
    assert!(message.contains("workload[1].ports"), "{message}");
}

#[test]
fn missing_sections_are_named() {
    let without_node = CONTRACT.replace("[node]", "[nodes]");
    let message = parse(&without_node).unwrap_err().to_string();
    assert!(
        message.contains("unknown field `nodes`") || message.contains("missing field `node`"),
        "{message}"
    );
}

#[test]
fn bad_values_name_file_line_and_key() {
    let cases = [
        (
            "\"10.0.0.0/24\"]",
            "\"10.0.0.1/24\"]",
            "capture.destinations[0]",
            "host bits set; did you mean \"10.0.0.0/24\"?",
        ),
        (
            "\"10.0.0.0/24\"]",
            "\"10.0.0.0/33\"]",
            "capture.destinations[0]",
            "is not a CIDR",
        ),
        (
            "outbound = \"127.0.0.1:15001\"",
            "outbound = \"0.0.0.0:15001\"",
            "listen.outbound",
            "must be a concrete IPv4 address",
        ),
        (
            "inbound = \"0.0.0.0:15008\"",
            "inbound = \"0.0.0.0\"",
            "listen.inbound",
            "is not an address with a port",
        ),
        (
            "mode = \"strict\"",
            "mode = \"strickt\"",
            "mode",
            "unknown variant `strickt`",
        ),
        (
            "action = \"allow\"",
            "action = \"permit\"",
            "policy[0].action",
            "unknown variant `permit`",
        ),
        (
            "to = \"orders\"",
            "to = \"order\"",
            "policy[0].to",
            "no workload named \"order\" (workloads: frontend, orders)",
        ),
        (
            "from = [\"spiffe://example.org/frontend\"]",
            "from = [\"spiffe://example.org/*/x\"]",
            "policy[0].from[0]",
            "'*' is only allowed at the end",
        ),
        (
            "from = [\"spiffe://example.org/frontend\"]",
            "from = [\"spiffe://other.org/*\"]",
            "policy[0].from[0]",
            "a prefix must start with spiffe://example.org/",
        ),
        (
            "spiffe_id = \"spiffe://example.org/orders\"",
            "spiffe_id = \"spiffe://other.org/orders\"",
            "workload[1].spiffe_id",
            "outside the trust domain example.org",
        ),
        (
            "spiffe_id = \"spiffe://example.org/orders\"",
            "spiffe_id = \"http://example.org/orders\"",
            "workload[1].spiffe_id",
            "http://example.org/orders",
        ),
        (
            "cgroup = \"/sys/fs/cgroup/frontend\"",
            "cgroup = \"/elsewhere/frontend\"",
            "workload[0].cgroup",
            "outside capture.cgroup /sys/fs/cgroup",
        ),
        (
            "cgroup = \"/sys/fs/cgroup/frontend\"",
            "cgroup = \"frontend\"",
            "workload[0].cgroup",
            "must be an absolute path",
        ),
        (
            ORDERS_PORTS,
            "ports = [15008] #",
            "workload[1].ports",
            "daemon's own listen ports",
        ),
        (
            ORDERS_PORTS,
            "ports = [0] #",
            "workload[1].ports[0]",
            "port 0 is not a port",
        ),
        (
            "name = \"orders\"",
            "name = \"frontend\"",
            "workload[1].name",
            "defined twice",
        ),
        (
            "trust_domain = \"example.org\"",
            "trust_domain = \"Example.org\"",
            "trust_domain",
            "Example.org",
        ),
    ];
    for (from, to, key, expected) in cases {
        let message = error_after(from, to);
        let line = line_of(CONTRACT, from);
        let prefix = format!("/etc/tunnel/tunnel.toml:{line}: {key}: ");
        assert!(
            message
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(expected)),
            "replacing {from:?} by {to:?}: expected a line starting {prefix:?} containing {expected:?}, got:\n{message}"
        );
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = CONTRACT
        .replacen("\"10.0.0.0/24\"]", "\"10.0.0.1/24\"]", 1)
        .replacen("to = \"orders\"", "to = \"order\"", 1);
    let error = parse(&text).unwrap_err();
    assert_eq!(error.problems.len(), 2, "{error}");
}

#[test]
fn empty_lists_are_refused_with_a_hint() {
    let message = error_after("# ports = [8080]", "ports = []");
    assert!(
        message.contains(
            "capture.ports: an empty list captures nothing; remove the key to capture every port"
        ),
        "{message}"
    );
}

#[test]
fn outbound_settings_parse_durations() {
    let config = parse(&format!(
        "{CONTRACT}\n[outbound]\nidle_timeout = \"90s\"\nmax_streams_per_connection = 50\n"
    ))
    .unwrap();
    assert_eq!(config.outbound.idle_timeout, Duration::from_secs(90));
    assert_eq!(config.outbound.max_streams_per_connection, 50);
    let message = parse(&format!(
        "{CONTRACT}\n[outbound]\nconnect_timeout = \"5 seconds\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        message.contains("outbound.connect_timeout: invalid duration \"5 seconds\""),
        "{message}"
    );
}

#[test]
fn the_record_cipher_is_chosen_at_start_unless_the_config_names_one() {
    assert_eq!(parse(CONTRACT).unwrap().crypto.aead, Aead::Auto);
    let config = parse(&format!("{CONTRACT}\n[crypto]\naead = \"aws-lc\"\n")).unwrap();
    assert_eq!(config.crypto.aead, Aead::AwsLc);
    let ring = parse(&format!("{CONTRACT}\n[crypto]\naead = \"ring\"\n"));
    if cfg!(feature = "ring-aead") {
        assert_eq!(ring.unwrap().crypto.aead, Aead::Ring);
    } else {
        let message = ring.unwrap_err().to_string();
        assert!(
            message.contains("crypto.aead: \"ring\": this build has no ring"),
            "{message}"
        );
    }
    let message = parse(&format!("{CONTRACT}\n[crypto]\naead = \"chacha\"\n"))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("unknown variant `chacha`, expected one of `auto`, `aws-lc`, `ring`"),
        "{message}"
    );
}

#[test]
fn runtime_threads_default_to_one_and_are_bounded() {
    assert_eq!(parse(CONTRACT).unwrap().runtime.worker_threads, 1);
    let config = parse(&format!("{CONTRACT}\n[runtime]\nworker_threads = 4\n")).unwrap();
    assert_eq!(config.runtime.worker_threads, 4);
    let message = parse(&format!("{CONTRACT}\n[runtime]\nworker_threads = 0\n"))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("runtime.worker_threads: must be from 1 to 256"),
        "{message}"
    );
}

#[test]
fn data_plane_runtimes_default_to_one_are_bounded_and_exclude_a_worker_pool() {
    assert_eq!(parse(CONTRACT).unwrap().runtime.threads, 1);
    let config = parse(&format!("{CONTRACT}\n[runtime]\nthreads = 2\n")).unwrap();
    assert_eq!(config.runtime.threads, 2);
    for threads in [0, 65] {
        let message = parse(&format!("{CONTRACT}\n[runtime]\nthreads = {threads}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("runtime.threads: must be from 1 to 64"),
            "{message}"
        );
    }
    let message = parse(&format!(
        "{CONTRACT}\n[runtime]\nthreads = 2\nworker_threads = 4\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        message.contains("runtime.threads: 2 runtimes of one thread each, and worker_threads = 4"),
        "{message}"
    );
}

#[test]
fn prefix_patterns_match_by_prefix() {
    let text = CONTRACT.replace(
        "from = [\"spiffe://example.org/frontend\"]",
        "from = [\"spiffe://example.org/ns/prod/*\"]",
    );
    let config = parse(&text).unwrap();
    let pattern = &config.policies[0].from.as_ref().expect("from is set")[0];
    assert!(pattern.matches(&"spiffe://example.org/ns/prod/web".parse().unwrap()));
    assert!(!pattern.matches(&"spiffe://example.org/ns/dev/web".parse().unwrap()));
    assert_eq!(pattern.to_string(), "spiffe://example.org/ns/prod/*");
}

#[test]
fn peer_daemons_must_be_nodes_unless_configured_otherwise() {
    let config = parse(CONTRACT).unwrap();
    assert_eq!(
        config.outbound.peer_identity.to_string(),
        "spiffe://example.org/node/*"
    );
    let config = parse(&format!(
        "{CONTRACT}\n[outbound]\npeer_identity = \"spiffe://example.org/node/gateway\"\n"
    ))
    .unwrap();
    assert_eq!(
        config.outbound.peer_identity.to_string(),
        "spiffe://example.org/node/gateway"
    );

    for (value, expected) in [
        (
            "spiffe://other.org/node/*",
            "a prefix must start with spiffe://example.org/",
        ),
        (
            "spiffe://other.org/node/a",
            "outside the trust domain example.org",
        ),
        ("spiffe://example.org/*/node", "found '*'"),
        ("spiffe://example.org/node//*", "empty path segment"),
        ("node/*", "a prefix must start with spiffe://example.org/"),
        (
            "spiffe://example.org/*",
            "matches spiffe://example.org/frontend, the identity of workload \"frontend\": \
             peer daemons must present node identities, never a workload's",
        ),
    ] {
        let text = format!("{CONTRACT}\n[outbound]\npeer_identity = \"{value}\"\n");
        let message = parse(&text).unwrap_err().to_string();
        let line = line_of(&text, "peer_identity =");
        let prefix = format!("/etc/tunnel/tunnel.toml:{line}: outbound.peer_identity: ");
        assert!(
            message
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(expected)),
            "{value}: expected a line starting {prefix:?} containing {expected:?}, got:\n{message}"
        );
    }
}

#[test]
fn an_unreadable_file_is_named() {
    let message = Config::load(Path::new("/nonexistent/tunnel.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with("/nonexistent/tunnel.toml: cannot read the config file:"),
        "{message}"
    );
}

#[test]
fn two_workloads_with_one_identity_are_refused_naming_both() {
    let message = error_after(
        "spiffe_id = \"spiffe://example.org/orders\"",
        "spiffe_id = \"spiffe://example.org/frontend\"",
    );
    let line = line_of(CONTRACT, "spiffe_id = \"spiffe://example.org/orders\"");
    assert!(
        message.contains(&format!(
            "tunnel.toml:{line}: workload[1].spiffe_id: workload \"orders\" has the same spiffe_id \
             as workload \"frontend\" (spiffe://example.org/frontend)"
        )),
        "{message}"
    );
}

#[test]
fn listeners_sharing_a_port_are_refused() {
    let line = line_of(CONTRACT, "inbound = \"0.0.0.0:15008\"");
    let message = error_after("inbound = \"0.0.0.0:15008\"", "inbound = \"0.0.0.0:15001\"");
    assert!(
        message.contains(&format!(
            "tunnel.toml:{line}: listen.inbound: port 15001 is also the port of listen.outbound"
        )),
        "{message}"
    );
    // Once per clash, although the IPv6 inbound listener (by default on the same port) clashes
    // too.
    assert_eq!(message.lines().count(), 1, "{message}");

    // The clash is reported at the key the file sets, whichever comes first.
    let text = CONTRACT
        .replace("admin = \"127.0.0.1:15000\"\n", "")
        .replace(
            "outbound = \"127.0.0.1:15001\"",
            "outbound = \"127.0.0.1:15000\"",
        );
    let message = parse(&text).unwrap_err().to_string();
    assert!(
        message.contains("listen.outbound: port 15000 is also the port of listen.admin"),
        "{message}"
    );

    // An explicit IPv6 listener is checked like the others.
    let message = parse(&CONTRACT.replace(
        "admin = \"127.0.0.1:15000\"",
        "admin = \"127.0.0.1:15000\"\ninbound_v6 = \"[::]:15001\"",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        message.contains("listen.inbound_v6: port 15001 is also the port of listen.outbound"),
        "{message}"
    );

    // The IPv4 and IPv6 listeners of one role share their port by design.
    let config = parse(&CONTRACT.replace(
        "admin = \"127.0.0.1:15000\"",
        "admin = \"127.0.0.1:15000\"\ninbound_v6 = \"[::]:15008\"\noutbound_v6 = \"[::1]:15001\"",
    ))
    .unwrap();
    assert_eq!(config.listen.inbound_v6.unwrap().port(), 15008);
}

#[test]
fn a_key_written_twice_is_named() {
    // toml itself says only "duplicate key"; the line is the second one's.
    let cases = [
        (
            "mode = \"strict\"",
            "mode = \"strict\"\nmode = \"permissive\"",
            1,
            "mode: `mode` is set twice",
        ),
        (
            "inbound = \"0.0.0.0:15008\"",
            "inbound = \"0.0.0.0:15008\"\ninbound = \"0.0.0.0:15009\"",
            1,
            "listen.inbound: `inbound` is set twice",
        ),
        (
            "name = \"orders\"",
            "name = \"orders\"\nname = \"orders2\"",
            1,
            "workload[1].name: `name` is set twice",
        ),
        (
            "[capture]",
            "[listen]\n[capture]",
            0,
            "listen: `listen` is set twice",
        ),
    ];
    for (from, to, below, expected) in cases {
        let message = error_after(from, to);
        let line = line_of(CONTRACT, from) + below;
        assert_eq!(
            message,
            format!("/etc/tunnel/tunnel.toml:{line}: {expected}"),
            "replacing {from:?} by {to:?}"
        );
    }
}

#[test]
fn the_daemons_own_ports_include_the_ipv6_and_plaintext_listeners() {
    let with_v6 = CONTRACT.replace(
        "admin = \"127.0.0.1:15000\"",
        "admin = \"127.0.0.1:15000\"\noutbound_v6 = \"[::1]:15002\"\ninbound_v6 = \"[::]:15009\"",
    );
    let config = parse(&with_v6).unwrap();
    assert_eq!(
        config.listen.own_ports(),
        BTreeSet::from([15000, 15001, 15002, 15006, 15008, 15009, 15021])
    );
    // So no workload may take one of them.
    let message = parse(&with_v6.replace(ORDERS_PORTS, "ports = [15009] #"))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("workload[1].ports: port 15009 is one of the daemon's own listen ports"),
        "{message}"
    );
}

#[test]
fn policy_conditions_are_parsed_and_bad_ones_named_at_their_key() {
    let extended = CONTRACT.to_string()
        + r#"
[[policy]]
action = "deny"
from_ips = ["10.0.0.0/24"]
not_from_ips = ["10.0.0.9/32"]
ports = [8080]
not_ports = [9090]
not_from = ["spiffe://example.org/ops/*"]
dry_run = true
"#;
    let config = parse(&extended).unwrap();
    let rule = &config.policies[1];
    assert_eq!(rule.to, None, "no `to`: every workload");
    assert!(rule.dry_run);
    assert_eq!(rule.from_ips.as_ref().map(Vec::len), Some(1));
    assert_eq!(rule.not_ports, BTreeSet::from([9090]));
    for (bad, key) in [
        (
            r#"from_ips = ["10.0.0.0/24"]"#.replace("10.0.0.0/24", "10.0.0.0/99"),
            "policy[1].from_ips[0]",
        ),
        ("ports = [8080]".replace("8080", "0"), "policy[1].ports[0]"),
        (
            r#"not_from = ["spiffe://example.org/ops/*"]"#.replace("ops/*", "o*ps"),
            "policy[1].not_from[0]",
        ),
        ("ports = [8080]".replace("[8080]", "[]"), "policy[1].ports"),
    ] {
        let original = bad
            .replace("10.0.0.0/99", "10.0.0.0/24")
            .replace("[0]", "[8080]")
            .replace("o*ps", "ops/*")
            .replace("[]", "[8080]");
        let message = parse(&extended.replace(&original, &bad))
            .unwrap_err()
            .to_string();
        assert!(message.contains(&format!(": {key}: ")), "{bad}: {message}");
    }
}

#[test]
fn policy_files_add_rules_and_their_problems_name_the_policy_file() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("tunnel.toml");
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[policy]]\naction = \"deny\"\nto = \"orders\"\nfrom = [\"spiffe://example.org/batch\"]\n",
    )
    .unwrap();
    let text = format!("policy_files = [\"rules.toml\"]\n{CONTRACT}");
    let config = Config::parse(&text, &main).unwrap();
    assert_eq!(
        config.policies.len(),
        2,
        "the contract's rule and the file's"
    );
    assert_eq!(config.policies[1].file.as_deref(), Some(rules.as_path()));
    assert_eq!(config.policy_files, vec![rules.clone()]);

    std::fs::write(&rules, "[[policy]]\naction = \"deny\"\nto = \"nobody\"\n").unwrap();
    let message = Config::parse(&text, &main).unwrap_err().to_string();
    assert!(
        message.starts_with(&format!(
            "{}:3: policy[0].to: no workload named \"nobody\"",
            rules.display()
        )),
        "{message}"
    );
    std::fs::remove_file(&rules).unwrap();
    let message = Config::parse(&text, &main).unwrap_err().to_string();
    assert!(
        message.contains(": policy_files[0]: cannot read"),
        "{message}"
    );
}

#[test]
fn proxy_protocol_ports_must_be_the_workloads_own() {
    let with = |ports: &str| {
        CONTRACT.replace(
            ORDERS_PORTS,
            &format!("ports = [8080]\nproxy_protocol = {ports} #"),
        )
    };
    let config = parse(&with("[8080]")).unwrap();
    assert_eq!(
        config.workload("orders").unwrap().proxy_protocol,
        BTreeSet::from([8080])
    );
    let message = parse(&with("[9090]")).unwrap_err().to_string();
    assert!(
        message
            .contains("workload[1].proxy_protocol: port 9090 is not one of this workload's ports"),
        "{message}"
    );
    for (modes, key) in [
        (
            r#"{ "9090" = "audit" }"#,
            "workload[1].port_modes.9090: port 9090 is not one of this workload's ports",
        ),
        (
            r#"{ "http" = "audit" }"#,
            "workload[1].port_modes.http: \"http\" is not a port number",
        ),
    ] {
        let text = CONTRACT.replace(
            ORDERS_PORTS,
            &format!("ports = [8080]\nport_modes = {modes} #"),
        );
        let message = parse(&text).unwrap_err().to_string();
        assert!(message.contains(key), "{message}");
    }
    let xfcc = CONTRACT.replace(ORDERS_PORTS, "ports = [8080]\nxfcc = [8081] #");
    let message = parse(&xfcc).unwrap_err().to_string();
    assert!(
        message.contains("workload[1].xfcc: port 8081 is not one of this workload's ports"),
        "{message}"
    );
}

#[test]
fn a_certificate_comes_from_files_or_from_an_issuer_never_half_of_either() {
    let frontend_files =
        "cert = \"/etc/tunnel/frontend/cert.pem\"\nkey = \"/etc/tunnel/frontend/key.pem\"";
    let issuer = parse(&CONTRACT.replacen(
        frontend_files,
        "issuer = \"/etc/tunnel/ca\"\nttl = \"30m\"",
        1,
    ))
    .expect("issuer + ttl instead of cert + key");
    match &issuer.workloads[0].credential {
        CertSource::Issuer { dir, ttl } => {
            assert_eq!(dir.value, Path::new("/etc/tunnel/ca"));
            assert_eq!(*ttl, Duration::from_secs(1800));
        }
        other => panic!("{other:?}"),
    }
    let default_ttl = parse(&CONTRACT.replacen(frontend_files, "issuer = \"/etc/tunnel/ca\"", 1))
        .expect("issuer alone");
    assert!(matches!(
        default_ttl.workloads[0].credential,
        CertSource::Issuer { ttl, .. } if ttl == DEFAULT_ISSUED_TTL
    ));
    for (replacement, key, expected) in [
        (
            "cert = \"/etc/tunnel/frontend/cert.pem\"",
            "workload[0]",
            "`cert` is set but `key` is missing",
        ),
        (
            "key = \"/etc/tunnel/frontend/key.pem\"",
            "workload[0]",
            "`key` is set but `cert` is missing",
        ),
        (
            "issuer = \"/etc/tunnel/ca\"\ncert = \"/etc/tunnel/frontend/cert.pem\"\nkey = \"/k.pem\"",
            "workload[0].issuer",
            "not both",
        ),
        (
            "cert = \"/c.pem\"\nkey = \"/k.pem\"\nttl = \"1h\"",
            "workload[0].ttl",
            "ttl applies to certificates the daemon issues itself",
        ),
        (
            "issuer = \"/etc/tunnel/ca\"\nttl = \"5s\"",
            "workload[0].ttl",
            "at least 10s",
        ),
        (
            "",
            "workload[0]",
            "no certificate: set `cert` and `key`, or `issuer`",
        ),
    ] {
        let message = parse(&CONTRACT.replacen(frontend_files, replacement, 1))
            .expect_err("refused")
            .to_string();
        assert!(
            message
                .lines()
                .any(|l| l.contains(&format!(": {key}: ")) && l.contains(expected)),
            "{replacement:?}: expected {key}: {expected:?}, got:\n{message}"
        );
    }
}

#[test]
fn crl_files_are_relative_to_the_config() {
    let config = parse(&CONTRACT.replacen(
        "mode = \"strict\"",
        "crl = [\"ca/crl.pem\", \"/srv/root-crl.der\"]\nmode = \"strict\"",
        1,
    ))
    .unwrap();
    let files: Vec<&Path> = config.crl.iter().map(|c| c.value.as_path()).collect();
    assert_eq!(
        files,
        [
            Path::new("/etc/tunnel/ca/crl.pem"),
            Path::new("/srv/root-crl.der")
        ]
    );
    assert_eq!(config.crl[1].site.key, "crl[1]");
}

#[test]
fn the_admin_api_listens_on_loopback_unless_remote_access_is_allowed_in_so_many_words() {
    let line = line_of(CONTRACT, "admin = ");
    let message = error_after("admin = \"127.0.0.1:15000\"", "admin = \"0.0.0.0:15000\"");
    assert!(
        message.starts_with(&format!(
            "/etc/tunnel/tunnel.toml:{line}: listen.admin: 0.0.0.0:15000 is not a loopback address"
        )),
        "{message}"
    );
    assert!(
        message.contains("listen.admin_allow_remote = true"),
        "{message}"
    );
    let message = error_after("admin = \"127.0.0.1:15000\"", "admin = \"10.0.0.1:15000\"");
    assert!(
        message.contains("10.0.0.1:15000 is not a loopback"),
        "{message}"
    );

    let allowed = parse(&CONTRACT.replacen(
        "admin = \"127.0.0.1:15000\"",
        "admin = \"0.0.0.0:15000\"\nadmin_allow_remote = true",
        1,
    ))
    .unwrap();
    assert_eq!(allowed.listen.admin.to_string(), "0.0.0.0:15000");
    assert!(allowed.listen.admin_allow_remote);
    let ipv6_loopback =
        parse(&CONTRACT.replacen("admin = \"127.0.0.1:15000\"", "admin = \"[::1]:15000\"", 1))
            .unwrap();
    assert!(!ipv6_loopback.listen.admin_allow_remote);
}

#[test]
fn the_health_port_and_the_control_socket_have_defaults_and_places_of_their_own() {
    let config = parse(CONTRACT).unwrap();
    assert_eq!(config.listen.health.to_string(), "127.0.0.1:15021");
    assert_eq!(config.listen.control, Path::new("/run/tunnel/control.sock"));
    assert!(!config.logging.allow_lowering_access_and_auth);

    let set = parse(&CONTRACT.replacen(
        "admin = \"127.0.0.1:15000\"",
        "admin = \"127.0.0.1:15000\"\nhealth = \"0.0.0.0:15121\"\ncontrol = \"/var/run/t/ctl.sock\"",
        1,
    ))
    .unwrap();
    assert_eq!(set.listen.health.to_string(), "0.0.0.0:15121");
    assert_eq!(set.listen.control, Path::new("/var/run/t/ctl.sock"));

    let message = error_after(
        "admin = \"127.0.0.1:15000\"",
        "admin = \"127.0.0.1:15000\"\nhealth = \"127.0.0.1:15000\"",
    );
    assert!(
        message.contains("listen.health: port 15000 is also the port of listen.admin"),
        "{message}"
    );
    let message = error_after(
        "admin = \"127.0.0.1:15000\"",
        "admin = \"127.0.0.1:15000\"\ncontrol = \"run/control.sock\"",
    );
    assert!(
        message.contains("listen.control: \"run/control.sock\" must be an absolute path"),
        "{message}"
    );
    let message = with_pods("socket = \"/run/tunnel/control.sock\"\nissuer = \"/etc/tunnel/ca\"")
        .unwrap_err()
        .to_string();
    assert!(
        message.contains(
            "pods.socket: /run/tunnel/control.sock is both listen.control and [pods] socket"
        ),
        "{message}"
    );
}

#[test]
fn lowering_the_audit_trail_at_run_time_is_allowed_in_so_many_words() {
    let config = parse(&format!(
        "{CONTRACT}\n[logging]\nallow_lowering_access_and_auth = true\n"
    ))
    .unwrap();
    assert!(config.logging.allow_lowering_access_and_auth);
    let message = parse(&format!("{CONTRACT}\n[logging]\nallow_quieting = true\n"))
        .unwrap_err()
        .to_string();
    assert!(message.contains("allow_quieting"), "{message}");
}

/// The contract example with `[pods]` (and what follows it) appended.
fn with_pods(pods: &str) -> Result<Config, ConfigError> {
    parse(&format!("{CONTRACT}\n[pods]\n{pods}\n"))
}

#[test]
fn pods_take_an_issuer_or_files_per_identity() {
    let issued = with_pods("issuer = \"/etc/tunnel/ca\"\nttl = \"30m\"").unwrap();
    let pods = issued.pods.unwrap();
    assert_eq!(pods.socket, Path::new(tunnel_pod_api::DEFAULT_SOCKET));
    assert_eq!(pods.spiffe_id.to_string(), IdTemplate::ISTIO);
    let id: SpiffeId = "spiffe://example.org/ns/shop/sa/orders".parse().unwrap();
    assert!(matches!(
        pods.certificates.source(&id),
        CertSource::Issuer { ttl, .. } if ttl == Duration::from_secs(1800)
    ));
    let files = with_pods("cert_dir = \"/var/run/pod-certs\"")
        .unwrap()
        .pods
        .unwrap();
    match files.certificates.source(&id) {
        CertSource::Files { cert, key } => {
            assert_eq!(
                cert.value,
                Path::new("/var/run/pod-certs/ns/shop/sa/orders/cert.pem")
            );
            assert_eq!(
                key.value,
                Path::new("/var/run/pod-certs/ns/shop/sa/orders/key.pem")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn pods_config_mistakes_are_named() {
    let cases = [
        ("", "no pod certificates: set `issuer`"),
        (
            "issuer = \"/ca\"\ncert_dir = \"/certs\"",
            "pods.cert_dir: either `issuer`",
        ),
        (
            "cert_dir = \"/certs\"\nttl = \"1h\"",
            "pods.ttl: ttl applies to certificates",
        ),
        (
            "issuer = \"/ca\"\nspiffe_id = \"spiffe://{trust_domain}/ns/{namespce}\"",
            "unknown placeholder {namespce}",
        ),
        (
            "issuer = \"/ca\"\nspiffe_id = \"spiffe://other.org/{name}\"",
            "not of this trust domain",
        ),
        (
            "issuer = \"/ca\"\nsocket = \"pods.sock\"",
            "must be an absolute path",
        ),
        (
            "issuer = \"/ca\"\n[kubernetes]\napi_server = \"http://10.96.0.1\"",
            "https:// only",
        ),
        (
            "issuer = \"/ca\"\n[kubernetes]\napi_server = \"https://10.96.0.1:644e\"",
            "kubernetes.api_server: \"https://10.96.0.1:644e\": \"644e\" is not a port",
        ),
    ];
    for (pods, says) in cases {
        let message = with_pods(pods).unwrap_err().to_string();
        assert!(message.contains(says), "{pods:?}: {message}");
    }
}

#[test]
fn a_policy_may_name_a_pod_identity_only_with_pods() {
    let rule =
        "\n[[policy]]\naction = \"allow\"\nto = \"spiffe://example.org/ns/shop/sa/orders\"\n";
    let without = parse(&format!("{CONTRACT}{rule}")).unwrap_err().to_string();
    assert!(without.contains("no workload named"), "{without}");
    parse(&format!("{CONTRACT}{rule}\n[pods]\nissuer = \"/ca\"\n")).unwrap();
}

#[test]
fn environment_references_are_expanded_before_reading() {
    // Cargo sets CARGO_PKG_NAME for the tests it runs.
    let text = CONTRACT.replace("node/host-b", "node/${CARGO_PKG_NAME}");
    let config = parse(&text).unwrap();
    assert_eq!(
        config.node.spiffe_id.to_string(),
        "spiffe://example.org/node/tunnel"
    );
    let unset = parse(&CONTRACT.replace("node/host-b", "node/${TUNNEL_TEST_UNSET_VAR}"))
        .unwrap_err()
        .to_string();
    assert!(
        unset.contains("the environment variable TUNNEL_TEST_UNSET_VAR is not set"),
        "{unset}"
    );
}

#[test]
fn the_buffer_budget_takes_a_size_and_refuses_a_useless_one() {
    let with = |limits: &str| format!("{CONTRACT}\n[limits]\n{limits}\n");
    assert_eq!(
        parse(CONTRACT).unwrap().limits.max_buffered_bytes,
        256 << 20,
        "the default"
    );
    let config = parse(&with("max_buffered_bytes = \"1GiB\"")).unwrap();
    assert_eq!(config.limits.max_buffered_bytes, 1 << 30);
    let config = parse(&with("max_buffered_bytes = 67108864")).unwrap();
    assert_eq!(config.limits.max_buffered_bytes, 64 << 20);
    for (value, said) in [
        ("\"16MiB\"", "below the least the daemon works with, 32MiB"),
        ("\"256MB\"", "unknown unit \"MB\""),
        ("\"lots\"", "is not a size"),
    ] {
        let error = parse(&with(&format!("max_buffered_bytes = {value}")))
            .expect_err(value)
            .to_string();
        assert!(
            error.contains("limits.max_buffered_bytes") && error.contains(said),
            "{value}: {error}"
        );
    }
}
