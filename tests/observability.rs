//! What a running daemon says about itself, end to end: metrics that move by what was
//! carried (read with a Prometheus text parser), the access log, the auth-failure stream and
//! its rate limit, and the admin API (readiness, config dump without key material, the log
//! filter in force, the loopback rule) and `tunnel status`, on real daemons in test hosts.
//! The admin API under attack, and changes of the log filter, are in `admin.rs`.

mod support;

use std::{fs, path::Path, time::Duration};

use support::{LONG, Pair, SHORT, TUNNEL};
use tunnel::{ca::LeafSpec, identity::SpiffeId};

/// `GET path` from the site's daemon's admin API.
fn admin(site: &support::Site, path: &str) -> String {
    support::admin_get(&site.host, path)
}

/// Every sample of a scrape, by metric name, each with its labels.
struct Scrape(Vec<prometheus_parse::Sample>);

impl Scrape {
    fn of(site: &support::Site) -> Self {
        let text = admin(site, "/metrics");
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("a Prometheus text scrape");
        Self(scrape.samples)
    }

    /// The sum of `name`'s samples whose labels include every pair of `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    }

    fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.0.iter().map(|s| s.metric.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// A workload block for host A's config (its cgroup and certificate linked afterwards).
fn workload_block(pair: &Pair, name: &str, issued: &Path) -> String {
    format!(
        "\n[[workload]]\nname = \"{name}\"\nspiffe_id = \"spiffe://example.org/{name}\"\n\
         cert = \"{dir}/cert.pem\"\nkey = \"{dir}/key.pem\"\ncgroup = \"{cgroup}\"\n",
        dir = issued.display(),
        cgroup = pair.a.workload_cgroup(&pair.testbed, name).display()
    )
}

/// Host A with two more callers: `intruder` (a good certificate that B's policy does not
/// admit) and `expired` (a certificate B refuses at the handshake).
fn pair(name: &str) -> Pair {
    let mut pair = Pair::new(name, |a| a, |b| b);
    let intruder = pair.pki.issue("intruder", "intruder");
    let id: SpiffeId = "spiffe://example.org/expired".parse().unwrap();
    let mut spec = LeafSpec::workload(&id, Duration::from_secs(86_400));
    spec.not_before -= time::Duration::days(2);
    spec.not_after = spec.not_before + time::Duration::days(1);
    let expired = pair.pki.issue_spec(&spec, "expired");
    let mut text = fs::read_to_string(&pair.a.config).unwrap();
    text.push_str(&workload_block(&pair, "intruder", &intruder));
    text.push_str(&workload_block(&pair, "expired", &expired));
    fs::write(&pair.a.config, text).unwrap();
    pair.start();
    pair
}

#[test]
fn metrics_move_by_what_was_carried_and_refused() {
    let pair = pair("obs-metrics");
    let _sink = pair.serve_on_b(&["serve-sink", "8080"], 8080);
    let a_before = Scrape::of(&pair.a);
    let b_before = Scrape::of(&pair.b);
    const CONNECTIONS: usize = 5;
    const BYTES: u64 = 1 << 20;
    for _ in 0..CONNECTIONS {
        let out = pair.frontend(&["upload", "10.0.0.2", "8080", &BYTES.to_string()]);
        assert!(
            out.stdout.contains("reply sha256="),
            "{}{}",
            out.stdout,
            out.stderr
        );
    }
    // Denied by B's policy, and refused at B's handshake.
    for workload in ["intruder", "expired"] {
        let out = pair.a.probe(
            &pair.testbed,
            workload,
            &["expect-refused", "10.0.0.2", "8080"],
        );
        assert!(
            !out.stdout.starts_with("outcome=data"),
            "{workload}: {}",
            out.stdout
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let a = Scrape::of(&pair.a);
    let b = Scrape::of(&pair.b);
    let delta = |after: &Scrape, before: &Scrape, name: &str, labels: &[(&str, &str)]| {
        after.sum(name, labels) - before.sum(name, labels)
    };
    let frontend = [("direction", "outbound"), ("source_workload", "frontend")];
    let opened = delta(
        &a,
        &a_before,
        "tunnel_tcp_connections_opened_total",
        &frontend,
    );
    let closed = delta(
        &a,
        &a_before,
        "tunnel_tcp_connections_closed_total",
        &frontend,
    );
    let sent = delta(&a, &a_before, "tunnel_tcp_sent_bytes_total", &frontend);
    let orders = [("direction", "inbound"), ("destination_workload", "orders")];
    let b_opened = delta(
        &b,
        &b_before,
        "tunnel_tcp_connections_opened_total",
        &orders,
    );
    let b_received = delta(&b, &b_before, "tunnel_tcp_received_bytes_total", &orders);
    println!(
        "A: opened {opened} closed {closed} sent {sent} bytes; B: opened {b_opened} received \
         {b_received} bytes (sent {} bytes in {CONNECTIONS} connections)",
        BYTES * CONNECTIONS as u64
    );
    assert_eq!((opened, closed), (CONNECTIONS as f64, CONNECTIONS as f64));
    assert_eq!(b_opened, CONNECTIONS as f64);
    let expected = (BYTES * CONNECTIONS as u64) as f64;
    for (side, bytes) in [("A sent", sent), ("B received", b_received)] {
        assert!(
            (bytes - expected).abs() <= expected * 0.01,
            "{side} {bytes} bytes, expected {expected} within 1%"
        );
    }
    let denied = delta(
        &b,
        &b_before,
        "tunnel_tcp_connections_failed_total",
        &[("direction", "inbound"), ("reason", "policy_denied")],
    );
    let handshake = delta(
        &b,
        &b_before,
        "tunnel_tcp_connections_failed_total",
        &[("direction", "inbound"), ("reason", "tls_handshake_failed")],
    );
    println!("B: policy_denied +{denied}, tls_handshake_failed +{handshake}");
    assert!(denied >= 1.0, "the intruder's denial is counted");
    assert!(
        handshake >= 1.0,
        "the expired caller's handshake failure is counted"
    );
    println!("families on A: {:?}", a.names());
    let tuple = [("map", "ORIGINAL_DST_BY_TUPLE")];
    assert!(
        a.sum("tunnel_capture_map_capacity", &tuple) > 0.0,
        "the tuple map's capacity is reported"
    );
    let excerpt: Vec<String> = admin(&pair.a, "/metrics")
        .lines()
        .filter(|l| {
            l.contains("frontend") && l.starts_with("tunnel_tcp")
                || l.starts_with("tunnel_tls_handshakes_total")
                || l.starts_with("tunnel_pool_connections")
                || l.starts_with("tunnel_certificate_expiry")
        })
        .map(str::to_string)
        .collect();
    println!("A's /metrics (excerpt):\n{}", excerpt.join("\n"));
    let b_excerpt: Vec<String> = admin(&pair.b, "/metrics")
        .lines()
        .filter(|l| {
            l.starts_with("tunnel_tcp_connections_failed_total")
                || l.starts_with("tunnel_authorization")
        })
        .map(str::to_string)
        .collect();
    println!("B's /metrics (excerpt):\n{}", b_excerpt.join("\n"));
    // The expired caller: one auth line on B, with its reason.
    let auth: Vec<String> = pair
        .b
        .logs()
        .lines()
        .filter(|l| l.contains("tunnel::auth") && l.contains("has expired"))
        .map(str::to_string)
        .collect();
    println!("B's auth stream: {auth:#?}");
    assert_eq!(
        auth.len(),
        1,
        "exactly one auth-failure line:\n{}",
        pair.b.logs()
    );
    // And the access log on both sides, one line per connection.
    let access = |site: &support::Site| {
        site.logs()
            .lines()
            .filter(|l| l.contains("tunnel::access"))
            .count()
    };
    println!("access lines: A {}, B {}", access(&pair.a), access(&pair.b));
    assert!(access(&pair.a) >= CONNECTIONS && access(&pair.b) >= CONNECTIONS);
}

#[test]
fn a_flood_of_identical_auth_failures_gives_a_bounded_number_of_lines() {
    let mut pair = pair("obs-flood");
    // B again, with the auth stream also in a file of its own.
    let auth_log = pair.testbed.dir().join("b-auth.log");
    pair.b.daemon = None;
    let mut b = pair
        .b
        .host
        .command(TUNNEL)
        .args(["run", "--log-level", "debug", "--auth-log"])
        .arg(&auth_log)
        .arg("--config")
        .arg(&pair.b.config)
        .in_cgroup(&pair.testbed.cgroup("b/daemon"))
        .spawn();
    b.wait_for("tunnel ready", SHORT);
    pair.b.daemon = Some(b);
    // A's pool shares one dial among every caller waiting for it (so 1,000 connections of
    // the expired workload make few handshakes): flood B directly instead, 1,000 TLS
    // handshakes presenting the expired certificate, from host A (not a captured cgroup).
    let cert = pair.pki.dir.join("expired");
    let out = pair
        .a
        .host
        .command("python3")
        .args(["-c", FLOOD, "10.0.0.2", "15008", "1000"])
        .arg(cert.join("cert.pem"))
        .arg(cert.join("key.pem"))
        .output(LONG);
    println!(
        "1000 handshakes with the expired certificate: {}{}",
        out.stdout.trim(),
        out.stderr
    );
    std::thread::sleep(Duration::from_secs(1));
    let lines = pair
        .b
        .logs()
        .lines()
        .filter(|l| l.contains("tunnel::auth"))
        .count();
    let refused = Scrape::of(&pair.b).sum(
        "tunnel_tcp_connections_failed_total",
        &[("direction", "inbound"), ("reason", "tls_handshake_failed")],
    );
    let in_file = fs::read_to_string(&auth_log).unwrap_or_default();
    println!("B: {refused} handshakes refused, {lines} auth lines; {auth_log:?}:\n{in_file}");
    assert_eq!(
        in_file.lines().count(),
        lines,
        "the auth file holds the auth stream, nothing else"
    );
    assert!(refused >= 1000.0, "the flood reached B: {refused}");
    assert!(lines <= 30, "{lines} auth lines for one repeated failure");
}

#[test]
fn the_admin_api_and_tunnel_status_on_a_live_daemon() {
    let pair = pair("obs-admin");
    let _server = pair.serve_on_b(&["serve-tagged", "8080"], 8080);
    assert_eq!(admin(&pair.a, "/healthz/ready").trim(), "ready");
    // The config dump names every certificate and holds no key material.
    let dump = admin(&pair.a, "/config_dump");
    let json: serde_json::Value = serde_json::from_str(&dump).expect("JSON");
    assert!(dump.contains("spiffe://example.org/frontend"), "{dump}");
    assert!(!dump.contains("PRIVATE KEY"), "a private key in:\n{dump}");
    for key in walk_keys(pair.testbed.dir()) {
        let text = fs::read_to_string(&key).unwrap();
        for line in text
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() > 16)
        {
            assert!(!dump.contains(line), "{} is in the dump", key.display());
        }
    }
    println!(
        "config_dump: {} bytes, top-level keys {:?}",
        dump.len(),
        json.as_object().map(|o| o.keys().collect::<Vec<_>>())
    );
    // The admin port shows the log filter in force; it is changed through the control
    // socket, by root (tests/admin.rs).
    assert_eq!(admin(&pair.a, "/logging").trim(), "warn,tunnel=debug");
    // tunnel status against the live daemon, after a refused handshake.
    pair.a.probe(
        &pair.testbed,
        "expired",
        &["expect-refused", "10.0.0.2", "8080"],
    );
    let status = pair
        .a
        .host
        .command(TUNNEL)
        .args(["status", "--admin", "127.0.0.1:15000"])
        .output(SHORT);
    println!("$ tunnel status\n{}{}", status.stdout, status.stderr);
    assert!(status.status.success(), "{}", status.stderr);
    assert!(status.stdout.contains("frontend"), "{}", status.stdout);
    assert!(
        status.stdout.contains("auth failures (last 1)")
            && status.stdout.contains("alert certificate_expired"),
        "{}",
        status.stdout
    );
}

#[test]
fn the_admin_listener_is_loopback_unless_allowed() {
    let pair = Pair::new(
        "obs-admin-bind",
        |a| a.replace("admin = \"127.0.0.1:15000\"", "admin = \"10.0.0.1:15000\""),
        |b| b,
    );
    let out = pair
        .a
        .host
        .command(TUNNEL)
        .args(["run", "--config"])
        .arg(&pair.a.config)
        .in_cgroup(&pair.testbed.cgroup("a/daemon"))
        .output(SHORT);
    println!("{}", out.stderr);
    assert_eq!(out.status.code(), Some(64), "{}", out.stderr);
    assert!(out.stderr.contains("listen.admin"), "{}", out.stderr);
}

/// TLS 1.3 handshakes in 8 threads, each presenting a client certificate (the server
/// refuses after the client's side is done, so each is read to its end).
const FLOOD: &str = r#"
import socket, ssl, sys, threading
host, port, n, cert, key = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
context.minimum_version = ssl.TLSVersion.TLSv1_3
context.set_alpn_protocols(["h2"])
context.load_cert_chain(cert, key)
done = []
def worker(count):
    for _ in range(count):
        try:
            with socket.create_connection((host, port), timeout=5) as raw:
                with context.wrap_socket(raw) as tls:
                    tls.recv(1)
        except OSError:
            pass
        done.append(1)
threads = [threading.Thread(target=worker, args=(n // 8,)) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
print(f"handshakes={len(done)}")
"#;

/// Every `key.pem` under `dir`.
fn walk_keys(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut keys = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() && !path.is_symlink() {
            keys.extend(walk_keys(&path));
        } else if path.file_name().is_some_and(|n| n == "key.pem") {
            keys.push(path);
        }
    }
    keys
}
