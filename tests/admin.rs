//! The admin API against the local processes that can reach it, on a live daemon in a test
//! host: slow clients holding the admin port's and the health port's connections while the
//! probes ask for readiness, and changes of the log filter from root and from `nobody`.

mod support;

use std::{fs, os::unix::fs::PermissionsExt as _, path::Path, time::Duration};

use serde_json::Value;
use support::{LONG, NETPROBE, Pair, SHORT, TUNNEL};

/// `netprobe.py slow-clients` in host A for `seconds`: `slow` is `PORT:N,...`, `polls`
/// `PORT/PATH` each; slow clients reconnect when closed.
fn slow_clients(pair: &Pair, seconds: u64, slow: &str, polls: &[&str]) -> Value {
    let out = pair
        .a
        .host
        .command("python3")
        .arg(NETPROBE)
        .args(["slow-clients", "127.0.0.1", &seconds.to_string(), "1", slow])
        .args(polls)
        .output(LONG);
    let json = out.stdout.lines().last().unwrap_or_default().to_string();
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {}{}", out.stdout, out.stderr))
}

/// The attack: slow connections on the admin port (and, since any local process can
/// reach it too, on the health port), held and reopened whenever the daemon closes them,
/// while `/healthz/ready` is asked on both every 50 ms. Before, 32 such connections made
/// every probe fail for as long as they were held. 32 and 200 are held whole; 400 are past
/// what each port holds, so they close one another as they reopen.
#[test]
fn slow_admin_connections_do_not_keep_readiness_from_answering() {
    let mut pair = Pair::new("adm-slow", |a| a, |b| b);
    pair.a.start(&pair.testbed);
    for n in [32, 200, 400] {
        let got = slow_clients(
            &pair,
            12,
            &format!("15000:{n},15021:{n}"),
            &["15021/healthz/ready", "15000/healthz/ready"],
        );
        println!(
            "{n} slow connections on each port, reopened when closed ({} closed by the \
             daemon in 12 s):",
            got["closed_by_server"]
        );
        assert_eq!(got["held"], 2 * n, "every slow client connected: {got}");
        for (port, polled) in got["polls"].as_object().unwrap() {
            let failed = polled["failed"].as_u64().unwrap();
            let ok = polled["ok"].as_u64().unwrap();
            let max = polled["max_ms"].as_f64().unwrap();
            println!(
                "  {port}: {ok} answers, {failed} failed, p50 {} ms, p99 {} ms, max {max} ms",
                polled["p50_ms"], polled["p99_ms"]
            );
            assert_eq!(failed, 0, "{port}: {polled}");
            assert!(ok >= 100, "{port}: {polled}");
            if n <= 200 {
                assert!(max < 100.0, "{port}: every answer within 100 ms: {polled}");
            }
        }
    }
    // The daemon is still whole: the admin API answers.
    let metrics = support::admin_get(&pair.a.host, "/metrics");
    assert!(metrics.contains("tunnel_runtime_alive_tasks"), "{metrics}");
}

/// A command in host A, as `nobody` when `as_nobody`.
fn run(pair: &Pair, as_nobody: bool, program: &str, args: &[&str]) -> testbed::Output {
    let command = if as_nobody {
        pair.a
            .host
            .command("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
                program,
            ])
            .args(args)
    } else {
        pair.a.host.command(program).args(args)
    };
    command.output(SHORT)
}

fn log_level(pair: &Pair, as_nobody: bool, socket: &Path, filter: &str) -> testbed::Output {
    let socket = socket.to_str().unwrap();
    let out = run(
        pair,
        as_nobody,
        TUNNEL,
        &["log-level", filter, "--socket", socket],
    );
    println!(
        "$ {}tunnel log-level {filter} -> {:?}\n{}{}",
        if as_nobody { "(nobody) " } else { "" },
        out.status.code(),
        out.stdout,
        out.stderr
    );
    out
}

/// `curl` on the admin port: the status code, then the body.
fn curl(pair: &Pair, as_nobody: bool, method: &str, path: &str) -> String {
    let url = format!("http://127.0.0.1:15000{path}");
    let out = run(
        pair,
        as_nobody,
        "curl",
        &["-sS", "-X", method, "-w", "%{http_code}", &url],
    );
    println!(
        "$ {}curl -X {method} {url}\n{}",
        if as_nobody { "(nobody) " } else { "" },
        out.stdout
    );
    out.stdout
}

/// Only root changes the log filter, through the control socket, and every change is logged
/// with who made it; the admin port answers a change with where to go.
#[test]
fn only_root_changes_the_log_filter_and_each_change_is_logged_with_who() {
    let mut pair = Pair::new("adm-root", |a| a, |b| b);
    pair.start();
    let _server = pair.serve_on_b(&["serve-tagged", "8080"], 8080);
    let socket = support::run_dir(&pair.testbed, "a").join("control.sock");
    let mode = fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", socket.display());

    // The admin port, from anyone: read-only.
    for as_nobody in [true, false] {
        let answer = curl(&pair, as_nobody, "POST", "/logging?level=debug");
        assert!(answer.ends_with("405"), "{answer}");
        assert!(answer.contains("tunnel log-level"), "{answer}");
        let answer = curl(&pair, as_nobody, "GET", "/logging?level=off");
        assert!(answer.ends_with("403"), "{answer}");
    }
    let before = curl(&pair, false, "GET", "/logging");
    assert_eq!(
        before, "warn,tunnel=debug\n200",
        "started with --log-level debug"
    );

    // The control socket, from nobody: the file's mode keeps it out.
    let out = log_level(&pair, true, &socket, "trace");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr
            .contains("permission denied; only root may use the control socket"),
        "{}",
        out.stderr
    );
    // And with the mode opened up, the peer credentials do.
    let testbed_dir = pair.testbed.dir().to_path_buf();
    for dir in [&testbed_dir, &support::run_dir(&pair.testbed, "a")] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o711)).unwrap();
    }
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o666)).unwrap();
    let out = log_level(&pair, true, &socket, "trace");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr
            .contains("only root may use the control socket; this connection is from uid 65534"),
        "{}",
        out.stderr
    );
    let refused = pair.a.daemon().wait_for_line(
        &["control socket: a connection from a user other than root refused"],
        SHORT,
    );
    println!("A's log: {refused}");
    assert!(refused.contains("uid=65534"), "{refused}");
    assert_eq!(curl(&pair, false, "GET", "/logging"), before, "unchanged");

    // Root: changes are taken and logged with who, bad ones refused.
    let out = log_level(&pair, false, &socket, "info");
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stdout, "warn,tunnel=info\n");
    let changed = pair
        .a
        .daemon()
        .wait_for_line(&["log filter changed through the control socket"], SHORT);
    println!("A's log: {changed}");
    for field in [
        "uid=0",
        "command=\"tunnel\"",
        "from=warn,tunnel=debug",
        "to=warn,tunnel=info",
    ] {
        assert!(changed.contains(field), "{field} in {changed}");
    }
    assert!(changed.contains(" pid="), "{changed}");
    for (filter, says) in [
        ("garbage%%%", "is not a log target of this daemon"),
        ("tunnel[{x}]=debug", "span and field filters"),
        (
            "tunnel::access=off",
            "would lower tunnel::access from info to off",
        ),
        ("warn", "keep them: warn,tunnel=warn,tunnel::access=info"),
    ] {
        let out = log_level(&pair, false, &socket, filter);
        assert_eq!(out.status.code(), Some(1), "{filter}");
        assert!(out.stderr.contains(says), "{filter}: {}", out.stderr);
    }
    assert_eq!(
        curl(&pair, false, "GET", "/logging"),
        "warn,tunnel=info\n200"
    );

    // What the daemon suggests is taken: the rest is quieter, the access log stays.
    let out = log_level(
        &pair,
        false,
        &socket,
        "warn,tunnel=warn,tunnel::access=info",
    );
    assert!(out.status.success(), "{}", out.stderr);
    let access_lines = || {
        pair.a
            .logs()
            .lines()
            .filter(|l| l.contains("tunnel::access"))
            .count()
    };
    let before = access_lines();
    let out = pair.frontend(&["first-line", "10.0.0.2", "8080"]);
    assert_eq!(out.stdout.trim(), "port=8080", "{}", out.stderr);
    testbed::wait_until(
        SHORT,
        Duration::from_millis(50),
        || access_lines() > before,
        || format!("no access line for the connection:\n{}", pair.a.logs()),
    );
}
