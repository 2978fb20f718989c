//! The workload's port is not a side door: plaintext from other hosts to a workload's port is
//! steered to the daemon (`steer_inbound`, sk_lookup) and refused in strict mode, passed and
//! labelled in permissive mode, passed and reported in audit mode; local callers are never
//! steered, and with no daemon the steered connections are refused. Host C runs no daemon.

mod support;

use support::{NETPROBE, Pair, SHORT};

/// The addresses the workload's server accepted connections from (its access log).
fn accepted_from(server: &support::Proc) -> Vec<String> {
    server
        .stdout()
        .lines()
        .filter_map(|l| l.strip_prefix("accepted from "))
        .map(|ip| ip.trim_start_matches("::ffff:").to_string())
        .collect()
}

/// Hosts A and B from the examples with both daemons started, and host C (10.0.0.3) with no
/// daemon. `orders` replaces the `ports = [8080]` line of B's `orders` workload (ports,
/// modes, forwarding options).
fn three_hosts(name: &str, orders: impl AsRef<str>) -> (Pair, support::Host) {
    let orders = orders.as_ref().to_string();
    let mut pair = Pair::new(name, |a| a, move |b| b.replace("ports = [8080]", &orders));
    let c = pair.testbed.add_host("host-c");
    pair.start();
    (pair, c)
}

fn plain(host: &support::Host, args: &[&str]) -> String {
    host.command("python3")
        .arg(NETPROBE)
        .args(args)
        .output(SHORT)
        .stdout
        .trim()
        .to_string()
}

#[test]
fn strict_mode_refuses_plaintext_from_other_hosts_and_never_steers_local_callers() {
    let (mut pair, c) = three_hosts("steer-strict", "ports = [8080]");
    let server = pair.serve_on_b(&["serve-tagged", "8080"], 8080);

    let from_c = plain(&c, &["expect-refused", "10.0.0.2", "8080"]);
    let from_a_uncaptured = plain(&pair.a.host, &["expect-refused", "10.0.0.2", "8080"]);
    println!("plaintext from C: {from_c}; from an uncaptured process on A: {from_a_uncaptured}");
    for outcome in [&from_c, &from_a_uncaptured] {
        assert!(
            outcome.starts_with("outcome=reset"),
            "refused with a reset: {outcome}"
        );
    }
    // Round trips, so each connection is still open when the server logs it.
    assert_eq!(
        pair.frontend(&["fan-out", "10.0.0.2", "8080", "1"])
            .stdout
            .trim(),
        "ok=1 bad=0",
        "tunnelled call"
    );
    for local in ["127.0.0.1", "10.0.0.2"] {
        let out = pair
            .b
            .host
            .command("python3")
            .arg(NETPROBE)
            .args(["fan-out", local, "8080", "1"])
            .output(SHORT);
        assert_eq!(
            out.stdout.trim(),
            "ok=1 bad=0",
            "local caller on B to {local}: {}",
            out.stderr
        );
    }
    // The server's output is collected in the background: wait for the three lines.
    testbed::wait_until(
        SHORT,
        std::time::Duration::from_millis(50),
        || accepted_from(&server).len() >= 3,
        || {
            format!(
                "three connections in the access log: {:?}",
                accepted_from(&server)
            )
        },
    );
    let seen = accepted_from(&server);
    println!("the workload accepted connections from {seen:?}");
    assert!(
        seen.iter().all(|ip| ip == "10.0.0.2" || ip == "127.0.0.1"),
        "only the daemon's deliveries and local callers reach the workload: {seen:?}"
    );
    assert_eq!(
        seen.len(),
        3,
        "the tunnelled call and both local calls: {seen:?}"
    );
    let logs = pair.b.logs();
    assert!(
        logs.lines().any(
            |l| l.contains("refused plaintext from another host") && l.contains("src=10.0.0.3")
        ),
        "B logs the refusal with the caller's address:\n{logs}"
    );

    // IPv6 the same way: refused from C, never steered for B's own callers.
    let from_c_v6 = plain(&c, &["expect-refused", "fd00::2", "8080"]);
    println!("plaintext over IPv6 from C: {from_c_v6}");
    assert!(from_c_v6.starts_with("outcome=reset"), "{from_c_v6}");
    for local in ["::1", "fd00::2"] {
        assert_eq!(
            plain(&pair.b.host, &["fan-out", local, "8080", "1"]),
            "ok=1 bad=0",
            "local IPv6 caller on B to {local}"
        );
    }
    assert!(
        !accepted_from(&server).iter().any(|ip| ip == "fd00::3"),
        "the workload never saw C over IPv6"
    );

    // No daemon: steered connections are refused, never delivered in plaintext.
    pair.b.daemon.take().expect("daemon").signal("KILL");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let outcome = plain(&c, &["expect-refused", "10.0.0.2", "8080"]);
    println!("plaintext from C with B's daemon killed: {outcome}");
    assert!(
        !outcome.starts_with("outcome=data"),
        "nothing delivered: {outcome}"
    );
    assert!(
        !accepted_from(&server).iter().any(|ip| ip == "10.0.0.3"),
        "the workload never saw host C"
    );

    // The next daemon takes the steering over: refused (reset) and logged again.
    pair.b.start(&pair.testbed);
    let outcome = plain(&c, &["expect-refused", "10.0.0.2", "8080"]);
    println!("plaintext from C after B's daemon restarted: {outcome}");
    assert!(outcome.starts_with("outcome=reset"), "{outcome}");
    pair.b.daemon().wait_for_line(
        &["refused plaintext from another host", "src=10.0.0.3"],
        SHORT,
    );
    assert!(!accepted_from(&server).iter().any(|ip| ip == "10.0.0.3"));
}

#[test]
fn permissive_passes_plaintext_labelled_and_audit_reports_what_strict_would_refuse() {
    for mode in ["permissive", "audit"] {
        let (pair, c) = three_hosts(
            &format!("steer-{mode}"),
            format!("ports = [8080]\nmode = \"{mode}\""),
        );
        let server = pair.serve_on_b(&["serve-tagged", "8080", "9090"], 9090);
        // A round trip (the tag line and an echo), so a connection reset after its
        // handshake cannot pass for a delivered one.
        let out = c
            .command("python3")
            .arg(NETPROBE)
            .args(["fan-out", "10.0.0.2", "8080", "1"])
            .output(SHORT);
        assert_eq!(
            out.stdout.trim(),
            "ok=1 bad=0",
            "{mode}: plaintext from C reaches the workload: {}",
            out.stderr
        );
        assert!(
            pair.frontend(&["peer", "10.0.0.2", "8080"])
                .status
                .success(),
            "{mode}: tunnelled call"
        );
        let seen = accepted_from(&server);
        assert!(
            seen.iter().any(|ip| ip == "10.0.0.2"),
            "{mode}: delivered by the daemon: {seen:?}"
        );
        let wanted = match mode {
            "permissive" => "plaintext connection passed to the workload (not authenticated)",
            _ => "audit: plaintext connection passed to the workload, strict mode would refuse it",
        };
        let line = pair
            .b
            .daemon()
            .wait_for_line(&[wanted, "src=10.0.0.3"], SHORT);
        println!("{mode}: {}", line.trim());
        if mode == "permissive" {
            // What steering costs a plaintext connection: the same server on a port no
            // workload owns (not steered) against the workload's port (steered and passed).
            let latency = |port: &str| {
                let out = c
                    .command("python3")
                    .arg(NETPROBE)
                    .args(["latency", "10.0.0.2", port, "200"])
                    .output(SHORT);
                out.stdout.trim().to_string()
            };
            let (direct, steered) = (latency("9090"), latency("8080"));
            println!(
                "new plaintext connections from C: not steered {direct}; steered and passed {steered}"
            );
            assert!(steered.starts_with("ok=200 "), "{steered}");
        }
    }
}

#[test]
fn a_reload_switches_modes_and_closes_what_the_new_policy_denies() {
    let (pair, c) = three_hosts(
        "steer-reload",
        "ports = [8080, 8081]\nmode = \"permissive\"",
    );
    let _server = pair.serve_on_b(&["serve-tagged", "8080", "8081"], 8081);
    let round_trip = |host: &support::Host| plain(host, &["fan-out", "10.0.0.2", "8080", "1"]);
    assert_eq!(
        round_trip(&c),
        "ok=1 bad=0",
        "permissive: C's plaintext passes"
    );

    // permissive → audit by a file change: C still passes, and the log says what strict
    // would refuse.
    let config = std::fs::read_to_string(&pair.b.config).unwrap();
    std::fs::write(
        &pair.b.config,
        config.replace("mode = \"permissive\"", "mode = \"audit\""),
    )
    .unwrap();
    pair.b
        .daemon()
        .wait_for_line(&["policy reloaded", "trigger=\"file change\""], SHORT);
    assert_eq!(round_trip(&c), "ok=1 bad=0", "audit: C's plaintext passes");
    let audit = pair.b.daemon().wait_for_line(
        &[
            "audit: plaintext connection passed to the workload, strict mode would refuse it",
            "src=10.0.0.3",
        ],
        SHORT,
    );
    println!("{}", audit.trim());

    // Two tunnelled connections held open across the reload: the new rule denies the one to
    // 8080 and allows the one to 8081.
    let hold = |port: &str| {
        let mut held = pair.spawn_frontend(&["hold", "10.0.0.2", port, "1", "30"]);
        held.wait_for("holding=1", SHORT);
        held
    };
    let (held_denied, held_allowed) = (hold("8080"), hold("8081"));

    // Strict, and a rule that denies frontend: picked up from the file change, no signal and
    // no restart.
    let config = std::fs::read_to_string(&pair.b.config).unwrap();
    let stricter = config.replace("mode = \"audit\"", "mode = \"strict\"")
        + "\n[[policy]]\naction = \"deny\"\nto = \"orders\"\nfrom = [\"spiffe://example.org/frontend\"]\nports = [8080]\n";
    std::fs::write(&pair.b.config, &stricter).unwrap();
    let pid = pair.b.daemon().pid();
    let reloaded = pair.b.daemon().wait_for_line(
        &[
            "policy reloaded",
            "trigger=\"file change\"",
            "closed_connections=1",
        ],
        SHORT,
    );
    println!("{}", reloaded.trim());
    assert_eq!(pair.b.daemon().pid(), pid, "the same daemon");
    pair.b.daemon().wait_for_line(
        &[
            "closing a live connection: the reloaded policy denies it",
            "deny rule policy[1]",
        ],
        SHORT,
    );
    // Closed under the application on both hosts (B's delivery socket and A's captured one);
    // the allowed one stays.
    testbed::wait_until(
        SHORT,
        std::time::Duration::from_millis(100),
        || pair.b.host.established_to(8080) == 0 && pair.a.host.established_to(15001) == 1,
        || "the denied connection is closed on both hosts".into(),
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        pair.b.host.established_to(8081),
        1,
        "the allowed connection stays"
    );
    held_denied.signal("KILL");
    held_allowed.signal("KILL");
    let outcome = plain(&c, &["expect-refused", "10.0.0.2", "8080"]);
    assert!(
        outcome.starts_with("outcome=reset"),
        "strict now: {outcome}"
    );
    let out = pair.frontend(&["expect-refused", "10.0.0.2", "8080"]);
    assert!(
        !out.stdout.starts_with("outcome=data"),
        "frontend denied now: {}",
        out.stdout
    );

    // Another file changing in the directory reloads nothing (the config's text is the same).
    let reloads = || pair.b.logs().matches("policy reloaded").count();
    let before = reloads();
    std::fs::write(pair.testbed.dir().join("unrelated.txt"), "x").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert_eq!(reloads(), before, "an unrelated change reloaded the policy");

    // A broken file keeps the policy in force (by file change, and again by SIGHUP).
    std::fs::write(
        &pair.b.config,
        stricter.replace("action = \"deny\"", "action = \"maybe\""),
    )
    .unwrap();
    pair.b.daemon().signal("HUP");
    let failed = pair.b.daemon().wait_for_line(
        &[
            "policy reload failed, the policy in force stays",
            "trigger=\"SIGHUP\"",
        ],
        SHORT,
    );
    println!("{}", failed.trim());
    let outcome = plain(&c, &["expect-refused", "10.0.0.2", "8080"]);
    assert!(
        outcome.starts_with("outcome=reset"),
        "still strict: {outcome}"
    );
}

#[test]
fn rules_in_a_policy_file_reload_when_that_file_changes() {
    let with_file = |b: String| format!("policy_files = [\"rules.toml\"]\n{b}");
    let mut pair = Pair::new("steer-policy-file", |a| a, with_file);
    let rules = pair.b.config.parent().unwrap().join("rules.toml");
    std::fs::write(&rules, "").unwrap();
    pair.start();
    let _server = pair.serve_on_b(&["serve-tagged", "8080"], 8080);
    assert_eq!(
        pair.frontend(&["fan-out", "10.0.0.2", "8080", "1"])
            .stdout
            .trim(),
        "ok=1 bad=0",
        "allowed by the config file's own rule"
    );
    std::fs::write(
        &rules,
        "[[policy]]\naction = \"deny\"\nto = \"orders\"\nfrom = [\"spiffe://example.org/frontend\"]\n",
    )
    .unwrap();
    let line = pair.b.daemon().wait_for_line(
        &["policy reloaded", "trigger=\"file change\"", "rules=2"],
        SHORT,
    );
    println!("{}", line.trim());
    let out = pair.frontend(&["expect-refused", "10.0.0.2", "8080"]);
    assert!(!out.stdout.starts_with("outcome=data"), "{}", out.stdout);
    pair.b.daemon().wait_for_line(
        &["refused CONNECT", "rules.toml: policy[0] (line 1)"],
        SHORT,
    );
}

#[test]
fn the_workload_learns_the_caller_from_a_proxy_protocol_header() {
    let (pair, c) = three_hosts(
        "steer-proxy-v2",
        "ports = [8080]\nproxy_protocol = [8080]\nmode = \"permissive\"",
    );
    let _server = pair.serve_on_b(&["serve-proxy-v2", "8080"], 8080);

    let tunnelled = pair.frontend(&["first-line", "10.0.0.2", "8080"]);
    println!("tunnelled: {}", tunnelled.stdout.trim());
    assert!(
        tunnelled.stdout.starts_with("proxy src=10.0.0.1:")
            && tunnelled
                .stdout
                .trim()
                .ends_with("dst=10.0.0.2:8080 spiffe=spiffe://example.org/frontend"),
        "{}",
        tunnelled.stdout
    );
    let plaintext = plain(&c, &["first-line", "10.0.0.2", "8080"]);
    println!("plaintext (permissive): {plaintext}");
    assert!(
        plaintext.starts_with("proxy src=10.0.0.3:")
            && plaintext.ends_with("dst=10.0.0.2:8080 spiffe=none"),
        "{plaintext}"
    );
}

#[test]
fn http_requests_carry_the_callers_identity_and_a_spoofed_header_is_replaced() {
    let (pair, c) = three_hosts(
        "steer-xfcc",
        "ports = [8080]\nxfcc = [8080]\nmode = \"permissive\"",
    );
    let _server = pair.serve_on_b(&["serve-xfcc", "8080"], 8080);
    // Two requests on one keep-alive connection, each with a forged header.
    let out = pair
        .a
        .host
        .command("curl")
        .args([
            "-sS",
            "-m",
            "10",
            "-H",
            "X-Forwarded-Client-Cert: By=x;URI=spiffe://example.org/admin",
            "http://10.0.0.2:8080/first",
            "http://10.0.0.2:8080/second",
        ])
        .in_cgroup(&pair.a.workload_cgroup(&pair.testbed, "frontend"))
        .output(SHORT);
    println!("{}", out.stdout.trim());
    let expected = "xfcc=By=spiffe://example.org/node/host-b;URI=spiffe://example.org/frontend";
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines, vec![expected, expected], "stderr: {}", out.stderr);
    pair.a.daemon().wait_for_line(&["tunnel::access"], SHORT);
    let carried = pair.a.logs().matches("tunnel::access").count();
    assert_eq!(carried, 1, "both requests on one connection");

    // A request an application could read two ways is refused, not passed on: whitespace
    // before the colon (the application would see the caller's header first), and bare LF
    // line ends (refused at once, where it used to hang until the application timed out).
    for (name, request, says) in [
        (
            "whitespace before the colon",
            "GET / HTTP/1.1\\r\\nHost: b\\r\\nX-Forwarded-Client-Cert : URI=spiffe://example.org/admin\\r\\n\\r\\n",
            "reset: whitespace between the header name and the colon in 'X-Forwarded-Client-Cert '",
        ),
        (
            "bare LF",
            "GET / HTTP/1.1\\nHost: b\\n\\n",
            "reset: a bare LF (a line ending without CR) in a request head",
        ),
    ] {
        let script = format!(
            "import socket, time\n\
             s = socket.create_connection(('10.0.0.2', 8080), timeout=5)\n\
             s.sendall(b'{request}')\n\
             t = time.monotonic()\n\
             try:\n    answer = s.recv(4096)\nexcept ConnectionResetError:\n    answer = b'<reset>'\n\
             print(answer.decode(errors='replace') or '<closed>', round(time.monotonic() - t, 2))"
        );
        let out = pair
            .a
            .host
            .command("python3")
            .args(["-c", &script])
            .in_cgroup(&pair.a.workload_cgroup(&pair.testbed, "frontend"))
            .output(SHORT);
        println!("{name}: the caller got {}", out.stdout.trim());
        assert!(
            out.stdout.starts_with("<reset>") || out.stdout.starts_with("<closed>"),
            "{name}: {} {}",
            out.stdout,
            out.stderr
        );
        let line = pair
            .b
            .daemon()
            .wait_for_line(&["tunnel::access", says], SHORT);
        println!("{name}: B's access line: {line}");
    }

    // Plaintext passed in permissive mode: the forged header is removed, none is added.
    let out = c
        .command("curl")
        .args([
            "-sS",
            "-m",
            "10",
            "-H",
            "X-Forwarded-Client-Cert: By=x;URI=spiffe://example.org/admin",
            "http://10.0.0.2:8080/first",
            "http://10.0.0.2:8080/second",
        ])
        .output(SHORT);
    println!("plaintext: {}", out.stdout.trim());
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        vec!["xfcc=none", "xfcc=none"],
        "stderr: {}",
        out.stderr
    );
}

#[test]
fn a_port_can_have_its_own_mode() {
    let (pair, c) = three_hosts(
        "steer-port-mode",
        "ports = [8080, 8081]\nport_modes = { \"8081\" = \"permissive\" }",
    );
    let _server = pair.serve_on_b(&["serve-tagged", "8080", "8081"], 8081);
    let strict_port = plain(&c, &["expect-refused", "10.0.0.2", "8080"]);
    let permissive_port = plain(&c, &["fan-out", "10.0.0.2", "8081", "1"]);
    println!("plaintext from C: 8080 (strict) {strict_port}; 8081 (permissive) {permissive_port}");
    assert!(strict_port.starts_with("outcome=reset"), "{strict_port}");
    assert_eq!(permissive_port, "ok=1 bad=0");
}
