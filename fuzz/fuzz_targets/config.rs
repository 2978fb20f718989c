//! The config file: TOML text → `${NAME}` expanded → a validated `Config` (`Config::parse_with`,
//! what `Config::load` runs on a file's text).
//!
//! Input: the config text, then after a NUL byte the text of every `policy_files` entry (the
//! target's stand-in for the filesystem: nothing is read from disk). The environment is fixed:
//! `NODE_NAME` and `NODE_IP` are set, every other name is unset.
//!
//! Checked:
//! 1. a problem's line is a line of the file, and every message says something;
//! 2. a config that validates meets the rules it promises: identities in the trust domain,
//!    workload names, ports and cgroups not shared, ports not the daemon's own, PROXY, XFCC
//!    and per-port modes only on the workload's ports, the peer pattern matching no workload,
//!    policies naming a workload (or a pod identity with `[pods]`), 1 to 256 threads, no zero
//!    duration, the pod identity template giving identities of the trust domain, a port of its
//!    own for each listener (health's included), the admin API on loopback unless allowed
//!    otherwise, the control socket an absolute path apart from the pod API's;
//! 3. every TTL of a certificate the daemon issues itself can be issued (the leaf's dates);
//! 4. validating is deterministic and does not depend on the file's formatting: the same
//!    document written out again by the toml crate validates to the same config (lines
//!    aside).
#![no_main]

use std::{collections::BTreeSet, io, path::Path};

use libfuzzer_sys::fuzz_target;
use tunnel::{
    ca::LeafSpec,
    config::{CertSource, Config, PodCertificates, expand_env},
    identity::{PodNames, SpiffeId},
};
use tunnel_fuzz::parts;

const FILE: &str = "/etc/tunnel/tunnel.toml";

fn env(name: &str) -> Option<String> {
    match name {
        "NODE_NAME" => Some("host-a".into()),
        "NODE_IP" => Some("10.0.0.1".into()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let [config, policy] = parts(data, 2)[..] else {
        unreachable!()
    };
    let (Ok(text), Ok(policy)) = (std::str::from_utf8(config), std::str::from_utf8(policy)) else {
        return;
    };
    let read = |path: &Path| -> io::Result<String> {
        if path.starts_with("/etc/tunnel") {
            Ok(policy.to_string())
        } else {
            Err(io::Error::from(io::ErrorKind::NotFound))
        }
    };
    let parsed = Config::parse_with(text, Path::new(FILE), env, read);
    let config = match parsed {
        Ok(config) => config,
        Err(e) => {
            let lines = text.lines().count().max(policy.lines().count()) + 1;
            assert!(!e.problems.is_empty(), "an error without a problem");
            for problem in &e.problems {
                assert!(
                    problem.line.is_none_or(|l| (1..=lines).contains(&l)),
                    "{problem:?}"
                );
                assert!(!problem.message.trim().is_empty(), "{problem:?}");
            }
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    rules(&config);
    issuable(&config);

    let again =
        Config::parse_with(text, Path::new(FILE), env, read).expect("valid once, valid twice");
    assert_eq!(
        format!("{config:?}"),
        format!("{again:?}"),
        "two readings differ"
    );

    // The expanded document, written out again: comments, layout, quoting and key order are
    // the toml crate's now. A "${" left in a value (a multi-line string's line starting with
    // '#' is not expanded) would be expanded on the second reading: not comparable.
    let Ok(document) = toml::from_str::<toml::Table>(
        &expand_env(text, env).expect("only text that expanded without a problem gets here"),
    ) else {
        panic!("the config validated but its expanded text is not a TOML table");
    };
    let rewritten = toml::to_string(&document).expect("a parsed table writes out");
    if rewritten.contains("${") {
        return;
    }
    match Config::parse_with(&rewritten, Path::new(FILE), env, read) {
        Ok(same) => assert_eq!(
            without_lines(&format!("{config:?}")),
            without_lines(&format!("{same:?}")),
            "the same document written otherwise validates otherwise:\n{rewritten}"
        ),
        Err(e) => panic!("the same document written otherwise is refused: {e}\n{rewritten}"),
    }
});

/// A Debug rendering with every `line: Some(N)` made `line: _`.
fn without_lines(debug: &str) -> String {
    let mut out = String::with_capacity(debug.len());
    let mut rest = debug;
    while let Some(at) = rest.find("line: Some(") {
        out.push_str(&rest[..at]);
        out.push_str("line: _");
        let after = &rest[at + "line: Some(".len()..];
        rest = &after[after.find(')').map_or(after.len(), |i| i + 1)..];
    }
    out.push_str(rest);
    out
}

fn rules(config: &Config) {
    let td = &config.trust_domain;
    assert!(config.node.spiffe_id.is_in(td));
    let own = config.listen.own_ports();
    let mut names = BTreeSet::new();
    let mut ids = BTreeSet::new();
    let mut ports = BTreeSet::new();
    let mut cgroups = BTreeSet::new();
    for w in &config.workloads {
        assert!(w.spiffe_id.is_in(td), "{w:?}");
        assert!(names.insert(&w.name), "workload {:?} twice", w.name);
        assert!(ids.insert(&w.spiffe_id), "identity {} twice", w.spiffe_id);
        assert!(!w.ports.contains(&0));
        for port in &w.ports {
            assert!(
                !own.contains(port),
                "port {port} is the daemon's and {:?}'s",
                w.name
            );
            assert!(ports.insert(*port), "port {port} twice");
        }
        assert!(w.proxy_protocol.is_subset(&w.ports), "{w:?}");
        assert!(w.xfcc.is_subset(&w.ports), "{w:?}");
        assert!(w.port_modes.keys().all(|p| w.ports.contains(p)), "{w:?}");
        assert!(w.cgroup.is_some() || !w.ports.is_empty(), "{w:?}");
        if let Some(cgroup) = &w.cgroup {
            assert!(
                cgroup.value.starts_with(&config.capture.cgroup.value),
                "{w:?}"
            );
            assert!(
                cgroups.insert(&cgroup.value),
                "cgroup {:?} twice",
                cgroup.value
            );
        }
        assert!(
            !config.outbound.peer_identity.matches(&w.spiffe_id),
            "{} admits workload {}",
            config.outbound.peer_identity,
            w.spiffe_id
        );
    }
    for peer in &config.peers {
        assert!(peer.spiffe_id.is_in(td), "{peer:?}");
        assert!(!peer.destinations.is_empty());
    }
    for policy in &config.policies {
        if let Some(to) = &policy.to {
            let pod = config.pods.is_some() && to.parse::<SpiffeId>().is_ok();
            assert!(names.contains(to) || pod, "policy to {to:?}");
        }
    }
    assert!((1..=256).contains(&config.runtime.worker_threads));
    let o = &config.outbound;
    assert!(o.peer_port != 0 && o.max_streams_per_connection != 0);
    for d in [o.connect_timeout, o.idle_timeout, o.keepalive] {
        assert!(!d.is_zero());
    }
    let i = &config.inbound;
    for d in [i.handshake_timeout, i.idle_timeout, i.keepalive] {
        assert!(!d.is_zero());
    }
    let l = &config.listen;
    // One port per listener role (an IPv6 twin shares its IPv4 listener's), none of them 0.
    let roles = [
        ("outbound", Some(l.outbound.port()), l.outbound_v6.map(|a| a.port())),
        ("inbound", Some(l.inbound.port()), l.inbound_v6.map(|a| a.port())),
        (
            "inbound_plaintext",
            Some(l.inbound_plaintext.port()),
            l.inbound_plaintext_v6.map(|a| a.port()),
        ),
        ("admin", Some(l.admin.port()), None),
        ("health", Some(l.health.port()), None),
    ];
    let mut taken = std::collections::BTreeMap::new();
    for (role, v4, v6) in roles {
        for port in [v4, v6].into_iter().flatten() {
            assert_ne!(port, 0, "listen.{role}");
            let first = *taken.entry(port).or_insert(role);
            assert_eq!(first, role, "port {port} is listen.{first}'s and listen.{role}'s");
        }
    }
    assert!(l.admin.ip().is_loopback() || l.admin_allow_remote, "{l:?}");
    assert!(l.control.is_absolute(), "{l:?}");
    if let Some(pods) = &config.pods {
        assert_ne!(l.control, pods.socket, "the control socket is the pod API's");
    }
    if let Some(pods) = &config.pods {
        // Names as Kubernetes and the pod API's checks let them through.
        for (namespace, name, service_account) in [
            ("default", "pod", "default"),
            ("shop", "orders-7d9f", "orders"),
            ("kube-system", "a.b.c", "x"),
        ] {
            let names = PodNames {
                trust_domain: td,
                namespace,
                name,
                service_account: Some(service_account),
            };
            if let Ok(id) = pods.spiffe_id.render(&names) {
                assert!(id.is_in(td), "{} gives {id}, outside {td}", pods.spiffe_id);
            }
        }
    }
}

/// Every certificate the daemon would issue from the config: the leaf's dates, as the
/// renewal makes them.
fn issuable(config: &Config) {
    let sources = std::iter::once((&config.node.credential, &config.node.spiffe_id)).chain(
        config
            .workloads
            .iter()
            .map(|w| (&w.credential, &w.spiffe_id)),
    );
    for (source, id) in sources {
        if let CertSource::Issuer { ttl, .. } = source {
            leaf(id, *ttl);
        }
    }
    if let Some(pods) = &config.pods
        && let PodCertificates::Issuer { ttl, .. } = &pods.certificates
    {
        let id: SpiffeId = format!("spiffe://{}/ns/default/sa/default", config.trust_domain)
            .parse()
            .unwrap();
        leaf(&id, *ttl);
    }
}

fn leaf(id: &SpiffeId, ttl: std::time::Duration) {
    let spec = LeafSpec::workload(id, ttl);
    assert!(spec.not_after > spec.not_before, "ttl {ttl:?}");
}
