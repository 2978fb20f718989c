//! The mTLS tunnel, end to end: what crosses the wire, who may call whom, and every refusal
//! as both the caller and the two daemons see it (issue: the mTLS tunnel).

mod support;

use std::{fs, time::Duration};

use rcgen::ExtendedKeyUsagePurpose;
use support::{LONG, NETPROBE, Pair, Pki, SHORT, Site, TUNNEL, host_certs, render_example, write};
use tunnel::{ca::LeafSpec, identity::SpiffeId};

const PAYLOAD_SIZE: &str = "104857600";

#[test]
fn plaintext_never_crosses_the_wire_and_connections_share_tunnels() {
    let mut pair = Pair::new(
        "mtls-wire",
        |a| format!("{a}\n[outbound]\nidle_timeout = \"1s\"\n"),
        |b| b.replace("ports = [8080]", "ports = [8080, 8081]"),
    );
    pair.start();
    let _sink = pair.serve_on_b(&["serve-sink", "8080"], 8080);
    let _tagged = pair.serve_on_b(&["serve-tagged", "8081"], 8081);

    let capture = pair
        .b
        .host
        .capture("eth0", "tcp", pair.testbed.dir().join("wire.pcap"));
    let out = pair.frontend(&["upload", "10.0.0.2", "8080", PAYLOAD_SIZE]);
    let packets = capture.stop();
    assert!(
        out.stdout
            .contains(&format!("bytes={PAYLOAD_SIZE} reply sha256=")),
        "{}",
        out.stdout
    );
    let sent = &out.stdout[out.stdout.find("sent sha256=").unwrap() + 12..][..64];
    assert!(
        out.stdout.contains(&format!("reply sha256={sent}")),
        "payload corrupted: {}",
        out.stdout
    );

    // The payload is one 32-byte block repeated; any 64 bytes of it in clear would show.
    let block = payload_block();
    assert!(
        packets.size() > 100_000_000,
        "the capture saw the transfer ({} bytes)",
        packets.size()
    );
    assert!(
        !packets.contains(&block),
        "plaintext payload found on the wire ({})",
        packets.path().display()
    );
    assert_eq!(
        packets.packets_not_matching("tcp port 15008"),
        0,
        "everything on the wire is the tunnel port"
    );

    // 120 concurrent application connections: two TLS connections (100 streams each at most).
    let mut holders: Vec<_> = [60, 60]
        .iter()
        .map(|n| pair.spawn_frontend(&["hold", "10.0.0.2", "8081", &n.to_string(), "3"]))
        .collect();
    for holder in &mut holders {
        holder.wait_for("holding=60", LONG);
    }
    let tunnels = pair.a.host.established_to(15008);
    assert_eq!(
        tunnels, 2,
        "120 application connections should ride on 2 pooled TLS connections"
    );
    for holder in &mut holders {
        holder.wait_for("held=60", LONG);
    }
    for holder in &mut holders {
        holder.wait_timeout(LONG).expect("holders exit");
    }
    // Pooled connections that carry nothing are closed after the idle timeout (1s here).
    testbed::wait_until(
        Duration::from_secs(10),
        Duration::from_millis(200),
        || pair.a.host.established_to(15008) == 0,
        || "idle pooled connections were not closed".into(),
    );
}

fn payload_block() -> Vec<u8> {
    // netprobe's pattern: sha256(b"tunnel-test-payload") repeated.
    let out = std::process::Command::new("python3")
        .args(["-c", "import hashlib,sys; sys.stdout.buffer.write(hashlib.sha256(b'tunnel-test-payload').digest()*2)"])
        .output()
        .unwrap();
    out.stdout
}

/// A workload on host A with a certificate that is wrong in one way, and the reason the
/// inbound daemon must give for refusing it.
struct BadCaller {
    name: &'static str,
    spec: fn(&SpiffeId) -> LeafSpec,
    /// What host A itself finds wrong when the mistake is one no peer would ever accept: the
    /// daemon refuses to start with such a workload and says this; `tunnel probe` warns it and
    /// still presents the certificate. `None`: the daemon starts (the certificate merely
    /// lapsed), and says why when the peer refuses.
    a_refuses: Option<&'static str>,
    b_says: &'static str,
}

fn workload_spec(id: &SpiffeId) -> LeafSpec {
    LeafSpec::workload(id, Duration::from_secs(3600))
}

#[test]
fn every_kind_of_bad_caller_is_refused_and_both_daemons_say_why() {
    let bad_callers = [
        BadCaller {
            name: "expired",
            spec: |id| {
                let mut spec = workload_spec(id);
                spec.not_before -= time::Duration::days(2);
                spec.not_after = spec.not_before + time::Duration::days(1);
                spec
            },
            a_refuses: None,
            b_says: "the certificate has expired",
        },
        BadCaller {
            name: "no-client-auth",
            spec: |id| LeafSpec {
                extended_key_usages: vec![ExtendedKeyUsagePurpose::ServerAuth],
                ..workload_spec(id)
            },
            a_refuses: Some("the certificate has no clientAuth extended key usage"),
            b_says: "not valid for this use",
        },
        BadCaller {
            name: "no-uri",
            spec: |id| LeafSpec {
                uris: vec![],
                ..workload_spec(id)
            },
            a_refuses: Some("the certificate has no URI SAN"),
            b_says: "no URI SAN",
        },
        BadCaller {
            name: "two-uris",
            spec: |id| LeafSpec {
                uris: vec![id.to_string(), "spiffe://example.org/second".into()],
                ..workload_spec(id)
            },
            a_refuses: Some("the certificate has 2 URI SANs"),
            b_says: "2 URI SANs",
        },
        BadCaller {
            name: "other-domain",
            spec: |_| LeafSpec {
                uris: vec!["spiffe://other.org/frontend".into()],
                ..workload_spec(&"spiffe://other.org/frontend".parse().unwrap())
            },
            a_refuses: Some("the certificate is for spiffe://other.org/frontend"),
            b_says: "spiffe://other.org/frontend is outside the trust domain example.org",
        },
        BadCaller {
            name: "ca-as-leaf",
            spec: |id| LeafSpec {
                is_ca: true,
                ..workload_spec(id)
            },
            a_refuses: Some("the certificate is a CA certificate (basicConstraints cA=true)"),
            b_says: "the certificate is a CA certificate (basicConstraints cA=true), not a leaf",
        },
    ];
    let (refused, started): (Vec<&BadCaller>, Vec<&BadCaller>) =
        bad_callers.iter().partition(|b| b.a_refuses.is_some());
    let mut extra = String::new();
    for bad in &started {
        extra.push_str(&workload_block(bad.name));
    }
    extra.push_str(&workload_block("foreign-ca"));
    extra.push_str(&workload_block("intruder"));
    let mut pair = Pair::new("mtls-refusals", |a| format!("{a}{extra}"), |b| b);
    let a_config = pair.a.config.clone();
    for bad in &bad_callers {
        let id: SpiffeId = format!("spiffe://example.org/{}", bad.name)
            .parse()
            .unwrap();
        pair.pki.issue_spec(&(bad.spec)(&id), bad.name);
    }
    for bad in &started {
        link_certs(&pair, &a_config, bad.name, &pair.pki.dir.join(bad.name));
    }
    let foreign = Pki::new(&pair.testbed.dir().join("foreign"));
    link_certs(
        &pair,
        &a_config,
        "foreign-ca",
        &foreign.issue("foreign-ca", "foreign-ca"),
    );
    let intruder = pair.pki.issue("intruder", "intruder");
    link_certs(&pair, &a_config, "intruder", &intruder);

    // Host A's config with the other bad callers too: the daemon will not start with it.
    let mut text = fs::read_to_string(&a_config).unwrap();
    for bad in &refused {
        text.push_str(&workload_block(bad.name));
    }
    let refused_config = write(&pair.testbed.dir().join("host-a-refused.toml"), &text);
    for bad in &refused {
        link_certs(
            &pair,
            &refused_config,
            bad.name,
            &pair.pki.dir.join(bad.name),
        );
    }
    let out = pair
        .a
        .host
        .command(TUNNEL)
        .args(["run", "--config"])
        .arg(&refused_config)
        .in_cgroup(&pair.testbed.cgroup("a/refused"))
        .output(SHORT);
    assert_eq!(out.status.code(), Some(64), "{}", out.stderr);
    for bad in &refused {
        let cert = pair.pki.dir.join(bad.name).join("cert.pem");
        let says = format!("].cert: {}: {}", cert.display(), bad.a_refuses.unwrap());
        assert!(
            out.stderr.lines().any(|l| l.contains(&says)),
            "{}: expected {says:?} in:\n{}",
            bad.name,
            out.stderr
        );
    }

    pair.start();
    let _server = pair.serve_on_b(&["serve-tagged", "8080"], 8080);

    let mut cases: Vec<(&str, &str)> = started.iter().map(|b| (b.name, b.b_says)).collect();
    // Its intermediate has the same name as ours, so webpki tries our key: a bad signature.
    cases.push(("foreign-ca", "issued by another CA than the trust bundle's"));
    cases.push((
        "intruder",
        "no policy allows spiffe://example.org/intruder to reach orders (10.0.0.2:8080): no allow \
         rule of workload \"orders\" matches spiffe://example.org/intruder",
    ));
    for (workload, b_says) in cases {
        let out = pair.a.probe(
            &pair.testbed,
            workload,
            &["expect-refused", "10.0.0.2", "8080"],
        );
        assert!(
            out.stdout.starts_with("outcome=reset")
                || out.stdout.starts_with("outcome=refused")
                || out.stdout.starts_with("outcome=eof"),
            "{workload}: the caller must see a refusal, got {}",
            out.stdout
        );
        pair.a.daemon().wait_for_line(
            &[
                "refused: tunnel not opened",
                &format!("workload={workload}"),
            ],
            SHORT,
        );
        // A refused handshake is on B's auth stream, a refused CONNECT in its main log.
        pair.b.daemon().wait_for_line(&[b_says], SHORT);
    }

    // The certificates the daemon refused to start with, presented anyway by `tunnel probe`:
    // it warns what is wrong, and the peer refuses them for the same reason.
    for bad in &refused {
        let out = pair
            .a
            .host
            .command(TUNNEL)
            .args(["probe", "--config"])
            .arg(&refused_config)
            .args(["--as", bad.name, "10.0.0.2:8080"])
            .output(SHORT);
        assert!(!out.status.success(), "{}: {}", bad.name, out.stdout);
        let warning = format!("warning: our certificate: {}", bad.a_refuses.unwrap());
        assert!(
            out.stdout.contains(&warning) && out.stdout.contains("failed: mTLS handshake"),
            "{}: expected {warning:?} and a failed handshake in:\n{}{}",
            bad.name,
            out.stdout,
            out.stderr
        );
        pair.b
            .daemon()
            .wait_for_line(&["tunnel::auth", bad.b_says], SHORT);
    }

    // A caller whose cgroup has no identity is refused on host A; nothing is sent.
    let out = pair.a.probe(
        &pair.testbed,
        "other",
        &["expect-refused", "10.0.0.2", "8080"],
    );
    assert!(!out.stdout.starts_with("outcome=data"), "{}", out.stdout);
    pair.a
        .daemon()
        .wait_for_line(&["refused: the caller belongs to no workload"], SHORT);
}

fn workload_block(name: &str) -> String {
    format!(
        "\n[[workload]]\nname = \"{name}\"\nspiffe_id = \"spiffe://example.org/{name}\"\n\
         cert = \"/etc-bad/{name}/cert.pem\"\nkey = \"/etc-bad/{name}/key.pem\"\ncgroup = \"CGROUP/{name}\"\n"
    )
}

/// Points a bad workload's entry in `config` at its certificate and creates its cgroup.
fn link_certs(pair: &Pair, config: &std::path::Path, name: &str, issued: &std::path::Path) {
    let text = fs::read_to_string(config).unwrap();
    let cgroup = pair.a.workload_cgroup(&pair.testbed, name);
    let text = text
        .replace(
            &format!("/etc-bad/{name}/"),
            &format!("{}/", issued.display()),
        )
        .replace(&format!("CGROUP/{name}"), &cgroup.display().to_string());
    fs::write(config, text).unwrap();
}

#[test]
fn the_inbound_side_is_not_an_open_proxy() {
    let mut pair = Pair::new("mtls-open-proxy", |a| a, |b| b);
    pair.start();
    let _server = pair.serve_on_b(&["serve-tagged", "8080"], 8080);
    let probe = |destination: &str| {
        pair.a
            .host
            .command(TUNNEL)
            .args([
                "probe",
                "--as",
                "frontend",
                "--via",
                "10.0.0.2:15008",
                "--config",
            ])
            .arg(&pair.a.config)
            .arg(destination)
            .output(SHORT)
    };
    let ok = probe("10.0.0.2:8080");
    assert!(
        ok.status.success(),
        "the allowed CONNECT works: {}{}",
        ok.stdout,
        ok.stderr
    );
    assert!(
        ok.stdout
            .contains("the peer is spiffe://example.org/node/host-b"),
        "{}",
        ok.stdout
    );

    for (destination, b_says) in [
        ("10.0.0.1:8080", "10.0.0.1 is not an address of this host"),
        (
            "10.0.0.2:9999",
            "port 9999 of 10.0.0.2 belongs to no workload",
        ),
        ("127.0.0.1:15000", "127.0.0.1 is not a deliverable address"),
        (
            "10.0.0.2:15008",
            "port 15008 is one of the daemon's own ports",
        ),
    ] {
        let out = probe(destination);
        assert!(
            !out.status.success(),
            "CONNECT {destination} must be refused: {}",
            out.stdout
        );
        // The probe says who refused and why, in B's own words.
        assert!(
            out.stdout
                .contains("refused by spiffe://example.org/node/host-b")
                && out.stdout.contains(b_says)
                && out.stdout.contains("HTTP 403"),
            "{destination}: {}",
            out.stdout
        );
        pair.b.daemon().wait_for_line(
            &["refused CONNECT", &format!("dst={destination}"), b_says],
            SHORT,
        );
    }
}

#[test]
fn clients_without_a_certificate_or_tls_are_refused() {
    let mut pair = Pair::new("mtls-no-cert", |a| a, |b| b);
    pair.start();
    // A plain TLS client without a certificate (from outside any captured cgroup).
    let out = pair
        .a
        .host
        .command("openssl")
        .args([
            "s_client",
            "-ign_eof",
            "-connect",
            "10.0.0.2:15008",
            "-alpn",
            "h2",
            "-CAfile",
        ])
        .arg(pair.pki.ca_dir().join("bundle.pem"))
        .stdin_bytes(b"x".to_vec())
        .output(SHORT);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("alert certificate required") || text.contains("alert number 116"),
        "openssl should see the alert:\n{text}"
    );
    pair.b.daemon().wait_for_line(
        &[
            "tunnel::auth",
            "authentication failed",
            "the peer presented no certificate",
        ],
        SHORT,
    );

    // Plaintext to the tunnel port.
    let out = pair
        .a
        .host
        .command("python3")
        .arg(NETPROBE)
        .args(["expect-refused", "10.0.0.2", "15008"])
        .output(SHORT);
    assert!(!out.stdout.starts_with("outcome=data"), "{}", out.stdout);
    pair.b.daemon().wait_for_line(
        &[
            "refused tunnel connection",
            "plaintext (not TLS) on the tunnel port",
        ],
        SHORT,
    );
}

#[test]
fn a_peer_daemon_outage_is_a_fast_refusal_and_recovery_needs_no_restart() {
    let mut pair = Pair::new("mtls-peer-down", |a| a, |b| b);
    pair.start();
    let _server = pair.serve_on_b(&["serve-tagged", "8080"], 8080);
    assert!(
        pair.frontend(&["peer", "10.0.0.2", "8080"])
            .status
            .success()
    );

    pair.b.daemon.take().expect("daemon").signal("KILL");
    std::thread::sleep(Duration::from_millis(200));
    let capture = pair
        .a
        .host
        .capture("eth0", "tcp", pair.testbed.dir().join("down.pcap"));
    let out = pair.frontend(&["expect-refused", "10.0.0.2", "8080"]);
    let packets = capture.stop();
    assert!(
        out.stdout.starts_with("outcome=reset") || out.stdout.starts_with("outcome=refused"),
        "{}",
        out.stdout
    );
    let ms: u64 = out
        .stdout
        .trim()
        .rsplit("ms=")
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(ms < 2000, "the refusal must be quick, took {ms} ms");
    assert_eq!(
        packets.count_matching("tcp port 8080"),
        0,
        "no plaintext fallback to port 8080"
    );
    // The refused attempt on the tunnel port must show, or the capture is blind.
    assert!(
        packets.count_matching("tcp port 15008") > 0,
        "the capture saw nothing: it is not working"
    );
    pair.a.daemon().wait_for_line(
        &[
            "refused: tunnel not opened",
            "cannot reach the tunnel port 10.0.0.2:15008",
        ],
        SHORT,
    );

    pair.b.start(&pair.testbed);
    let out = pair.frontend(&["fan-out", "10.0.0.2", "8080", "5"]);
    assert_eq!(
        out.stdout.trim(),
        "ok=5 bad=0",
        "new connections work again: {}",
        out.stderr
    );
}

#[test]
fn policy_admits_one_caller_and_keeps_another_out() {
    let mut pair = Pair::new("mtls-three-hosts", |a| a, |b| b);
    let host_c = pair.testbed.add_host("host-c");
    let certs_c = host_certs(&pair.pki, &pair.testbed, "host-c", &["intruder"]);
    let c_text = render_example("host-a.toml", &pair.testbed, "c", &certs_c)
        .replace("node/host-a", "node/host-c")
        .replace("\"frontend\"", "\"intruder\"")
        .replace("/frontend", "/intruder");
    let c_config = write(&pair.testbed.dir().join("host-c.toml"), &c_text);
    pair.testbed.cgroup("c/workloads/intruder");
    let mut c = Site {
        host: host_c,
        label: "c".into(),
        config: c_config,
        daemon: None,
    };
    pair.start();
    c.start(&pair.testbed);
    let _server = pair.serve_on_b(&["serve-tagged", "8080"], 8080);

    let out = pair.frontend(&["fan-out", "10.0.0.2", "8080", "3"]);
    assert_eq!(
        out.stdout.trim(),
        "ok=3 bad=0",
        "A's frontend is allowed: {}",
        out.stderr
    );
    pair.b
        .daemon()
        .wait_for_line(&["allowed", "caller=spiffe://example.org/frontend"], SHORT);

    let out = c.probe(
        &pair.testbed,
        "intruder",
        &["expect-refused", "10.0.0.2", "8080"],
    );
    assert!(
        !out.stdout.starts_with("outcome=data"),
        "C's intruder must be kept out: {}",
        out.stdout
    );
    pair.b.daemon().wait_for_line(
        &[
            "refused CONNECT",
            "src_identity=spiffe://example.org/intruder",
            "policy",
        ],
        SHORT,
    );
    c.daemon()
        .wait_for_line(&["refused: tunnel not opened", "HTTP 403"], SHORT);
}

#[test]
fn a_peer_with_another_identity_than_configured_is_refused() {
    let expect_z = |a: String| {
        a.replace(
            "spiffe_id = \"spiffe://example.org/node/host-b\"",
            "spiffe_id = \"spiffe://example.org/node/host-z\"",
        )
    };
    let mut pair = Pair::new("mtls-peer-identity", expect_z, |b| b);
    pair.start();
    let _server = pair.serve_on_b(&["serve-tagged", "8080"], 8080);
    let out = pair.frontend(&["expect-refused", "10.0.0.2", "8080"]);
    assert!(!out.stdout.starts_with("outcome=data"), "{}", out.stdout);
    pair.a.daemon().wait_for_line(
        &["refused: tunnel not opened", "expected the peer to be spiffe://example.org/node/host-z, but it is spiffe://example.org/node/host-b"],
        SHORT,
    );
}

#[test]
fn a_peer_presenting_a_workload_certificate_is_refused_without_any_peer_entry() {
    // No [[peer]] entry on A: only the default rule (a node identity) protects it.
    let without_peer_entries = |a: String| {
        let cut = a
            .find("[[peer]]")
            .expect("the example has a [[peer]] entry");
        a[..cut].to_string()
    };
    let mut pair = Pair::new("mtls-workload-as-peer", without_peer_entries, |b| b);
    // B's daemon presents the certificate of a workload, `batch`, instead of a node's.
    let batch = pair.pki.issue("batch", "batch");
    let text = fs::read_to_string(&pair.b.config).unwrap();
    let text: Vec<String> = text
        .lines()
        .map(|line| match line {
            l if l.starts_with("spiffe_id = \"spiffe://example.org/node/") => {
                "spiffe_id = \"spiffe://example.org/batch\"".into()
            }
            l if l.starts_with("cert = ") && l.ends_with("/node/cert.pem\"") => {
                format!("cert = \"{}\"", batch.join("cert.pem").display())
            }
            l if l.starts_with("key = ") && l.ends_with("/node/key.pem\"") => {
                format!("key = \"{}\"", batch.join("key.pem").display())
            }
            l => l.into(),
        })
        .collect();
    fs::write(&pair.b.config, text.join("\n")).unwrap();
    pair.start();
    pair.b.daemon().wait_for_line(
        &[
            "node identity spiffe://example.org/batch does not match [outbound] peer_identity \
             spiffe://example.org/node/*",
            "will refuse this daemon",
        ],
        SHORT,
    );
    let _server = pair.serve_on_b(&["serve-tagged", "8080"], 8080);

    let out = pair.frontend(&["expect-refused", "10.0.0.2", "8080"]);
    assert!(
        out.stdout.starts_with("outcome=reset")
            || out.stdout.starts_with("outcome=refused")
            || out.stdout.starts_with("outcome=eof"),
        "the caller must see a refusal, got {}",
        out.stdout
    );
    let reason = "expected a node identity matching spiffe://example.org/node/*, but the peer \
                  presented spiffe://example.org/batch";
    pair.a
        .daemon()
        .wait_for_line(&["refused: tunnel not opened", reason], SHORT);
    pair.b
        .daemon()
        .wait_for_line(&["tunnel::auth", "authentication failed"], SHORT);

    // `tunnel probe` holds the peer to the same rule.
    let probe = pair
        .a
        .host
        .command(TUNNEL)
        .args(["probe", "--as", "frontend", "--config"])
        .arg(&pair.a.config)
        .arg("10.0.0.2:8080")
        .output(SHORT);
    assert!(!probe.status.success(), "{}", probe.stdout);
    assert!(
        probe.stdout.contains(
            "expecting the peer to present a node identity matching spiffe://example.org/node/*"
        ) && probe.stdout.contains(reason),
        "{}",
        probe.stdout
    );

    // Nothing reached B's workload: no tunnel connection was ever accepted.
    let b_logs = pair.b.logs();
    assert!(
        !b_logs.contains("tunnel connection accepted") && !b_logs.contains("allowed"),
        "{b_logs}"
    );
}

#[test]
fn source_address_rules_dry_run_and_audit_rules_work_end_to_end() {
    // B: a deny on A's address, first in dry-run, beside an audit rule for everything.
    let rules = |dry_run: bool| {
        move |b: String| {
            format!(
                "{b}\n[[policy]]\naction = \"deny\"\nto = \"orders\"\nfrom_ips = [\"10.0.0.1/32\"]\n\
                 dry_run = {dry_run}\n\n[[policy]]\naction = \"audit\"\nto = \"orders\"\n"
            )
        }
    };
    let mut pair = Pair::new("mtls-policy-forms", |a| a, rules(true));
    pair.start();
    let _server = pair.serve_on_b(&["serve-tagged", "8080"], 8080);
    let out = pair.frontend(&["fan-out", "10.0.0.2", "8080", "1"]);
    assert_eq!(
        out.stdout.trim(),
        "ok=1 bad=0",
        "dry-run denies nothing: {}",
        out.stderr
    );
    let b = pair.b.daemon();
    let dry = b.wait_for_line(
        &[
            "policy: dry-run: this rule would deny",
            "rule=policy[1]",
            "source=10.0.0.1",
        ],
        SHORT,
    );
    let audit = b.wait_for_line(&["policy: audit rule matched", "rule=policy[2]"], SHORT);
    println!("{}\n{}", dry.trim(), audit.trim());

    // The same rule enforced: A's address is refused, with the rule named on both sides.
    let enforced = rules(false);
    let text = enforced(String::new());
    let config = fs::read_to_string(&pair.b.config).unwrap();
    let config = config.replace(&rules(true)(String::new()), &text);
    fs::write(&pair.b.config, config).unwrap();
    pair.b.daemon.take().expect("daemon").signal("TERM");
    pair.b.start(&pair.testbed);
    let out = pair.frontend(&["expect-refused", "10.0.0.2", "8080"]);
    assert!(!out.stdout.starts_with("outcome=data"), "{}", out.stdout);
    pair.b
        .daemon()
        .wait_for_line(&["refused CONNECT", "deny rule policy[1]"], SHORT);
    pair.a
        .daemon()
        .wait_for_line(&["refused: tunnel not opened", "HTTP 403"], SHORT);
}

const TLSSCAN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/support/tlsscan.py");
/// The Python of the venv `cargo xtask setup` makes for sslyze.
const SSLYZE_PYTHON: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../target/tools/sslyze/bin/python"
);

/// What a TLS scanner (sslyze, presenting a workload's certificate where asked) sees on the
/// tunnel port: TLS 1.3 only, a client certificate required, no session resumption (no
/// tickets, no ids), no 0-RTT; and what a capture shows two daemons agree on: the
/// post-quantum hybrid group.
#[test]
fn a_tls_scan_of_the_tunnel_port_finds_tls_1_3_only_a_required_client_certificate_and_no_resumption()
 {
    assert!(
        std::path::Path::new(SSLYZE_PYTHON).exists(),
        "{SSLYZE_PYTHON} is missing: `cargo xtask setup` installs sslyze"
    );
    let mut pair = Pair::new("mtls-tls-scan", |a| a, |b| b);
    pair.start();
    let _server = pair.serve_on_b(&["serve-sink", "8080"], 8080);
    let certs = pair.testbed.dir().join("etc-host-a/frontend");
    let out = pair
        .a
        .host
        .command(SSLYZE_PYTHON)
        .arg(TLSSCAN)
        .args(["scan", "10.0.0.2", "15008"])
        .arg(certs.join("cert.pem"))
        .arg(certs.join("key.pem"))
        .output(LONG);
    println!("sslyze of 10.0.0.2:15008: {}", out.stdout.trim());
    let scan: serde_json::Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {}{}", out.stdout, out.stderr));
    assert_eq!(scan["accepted"], serde_json::json!(["tls_1_3"]), "{scan}");
    assert_eq!(
        scan["without_certificate"], "refused: TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "{scan}"
    );
    assert_eq!(scan["early_data"], false, "{scan}");
    // sslyze can test resumption over TLS 1.2 only, which is refused; over TLS 1.3 no ticket
    // is sent, so nothing can be resumed.
    assert_eq!(
        scan["tls_1_3_resumption"],
        serde_json::json!({"ticket": false, "resumed": false}),
        "{scan}"
    );

    // Between the daemons: the group in B's ServerHello, read off the wire.
    let link = pair.b.host.capture(
        "eth0",
        "tcp port 15008",
        pair.testbed.dir().join("hello.pcap"),
    );
    let call = pair.frontend(&["upload", "10.0.0.2", "8080", "1000"]);
    assert!(call.stdout.contains("bytes=1000"), "{call:?}");
    let packets = link.stop();
    let groups = pair
        .a
        .host
        .command(SSLYZE_PYTHON)
        .arg(TLSSCAN)
        .arg("server-groups")
        .arg(packets.path())
        .arg("15008")
        .output(SHORT);
    println!(
        "key exchange groups in B's ServerHellos to A: {}",
        groups.stdout.trim()
    );
    assert_eq!(groups.stdout.trim(), "[\"X25519MLKEM768\"]", "{groups:?}");
}

/// `[runtime] threads = 2` on both hosts: each daemon serves its listeners from two
/// runtimes (two sockets per address in one `SO_REUSEPORT` group), each runtime with its own
/// pool, and everything still arrives whole; a drain still ends the daemon in time.
#[test]
fn two_data_plane_runtimes_split_the_connections_and_each_keeps_its_pool() {
    let two = |text: String| testbed::with_runtime_threads(&text, 2);
    let mut pair = Pair::new("mtls-two-runtimes", two, |b| {
        two(b).replace("ports = [8080]", "ports = [8080, 8081]")
    });
    pair.start();
    let _sink = pair.serve_on_b(&["serve-sink", "8080"], 8080);
    let _tagged = pair.serve_on_b(&["serve-tagged", "8081"], 8081);

    for host in [&pair.a.host, &pair.b.host] {
        let listening = host
            .command("ss")
            .args(["-Hltn", "sport = :15001 or sport = :15008"])
            .output(SHORT);
        let mut sockets = std::collections::BTreeMap::<&str, usize>::new();
        for line in listening.stdout.lines() {
            let local = line.split_whitespace().nth(3).expect("ss: local address");
            *sockets.entry(local).or_default() += 1;
        }
        assert!(
            sockets.len() >= 2 && sockets.values().all(|n| *n == 2),
            "two runtimes: two sockets on each outbound and inbound address:\n{}",
            listening.stdout
        );
    }
    let out = pair.frontend(&["upload", "10.0.0.2", "8080", PAYLOAD_SIZE]);
    let sent = &out.stdout[out.stdout.find("sent sha256=").unwrap() + 12..][..64];
    assert!(
        out.stdout.contains(&format!("reply sha256={sent}")),
        "payload corrupted: {}",
        out.stdout
    );

    // 40 connections held at once: the kernel spreads them over both runtimes' listeners
    // (all on one of two would happen once in 2^39), and each runtime dials its own pooled
    // connection to B rather than reach across to the other's.
    let mut holder = pair.spawn_frontend(&["hold", "10.0.0.2", "8081", "40", "3"]);
    holder.wait_for("holding=40", LONG);
    assert_eq!(
        pair.a.host.established_to(15008),
        2,
        "one pooled TLS connection per runtime"
    );
    holder.wait_for("held=40", LONG);
    holder.wait_timeout(LONG).expect("holder exits");
    // More at once than one pooled connection takes (100 streams): every runtime's pool
    // grows as it should.
    let out = pair.frontend(&["fan-out", "10.0.0.2", "8081", "300"]);
    assert_eq!(out.stdout.trim(), "ok=300 bad=0", "{}", out.stderr);

    // A drain waits for the connections of both runtimes (40 held: both have some) and
    // ends as soon as the application closes them, well before its deadline (5 s).
    let mut holder = pair.spawn_frontend(&["hold", "10.0.0.2", "8081", "40", "3"]);
    holder.wait_for("holding=40", LONG);
    let daemon = pair.a.daemon.as_mut().unwrap();
    daemon.signal("TERM");
    assert!(
        daemon.wait_timeout(Duration::from_secs(1)).is_none(),
        "the daemon left while connections were open: {}",
        daemon.logs()
    );
    holder.wait_for("held=40", LONG);
    holder.wait_timeout(LONG).expect("holder exits");
    let status = daemon
        .wait_timeout(Duration::from_secs(10))
        .expect("the daemon exits once its connections are closed");
    assert!(status.success(), "{status:?}: {}", daemon.logs());
    let logs = daemon.logs();
    assert!(
        logs.contains("drained") && !logs.contains("drain deadline passed"),
        "{logs}"
    );
}
