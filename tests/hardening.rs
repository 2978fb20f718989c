//! The daemon under abuse and a bad network, end to end: each test pushes past one of the
//! caps of the inbound side or the pool and measures what held (the peer daemon's memory
//! and file descriptors from /proc, legitimate calls' success, times to failure). Figures
//! are printed; the bounds asserted are generous multiples of what the design allows.

mod support;

use std::{
    fs,
    path::PathBuf,
    sync::{RwLock, RwLockReadGuard},
    thread,
    time::{Duration, Instant},
};

use support::{LONG, Pair, Proc, SHORT};

const H2ATTACK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/support/h2attack.py");

/// The buffer-budget test fills the kernel's TCP memory, which every namespace shares (its
/// 12,800 back-pressured streams hold their socket buffers full): while it runs, any other
/// test's connections stall. It takes this lock alone; every other test shares it.
static KERNEL_TCP_MEMORY: RwLock<()> = RwLock::new(());

fn sharing_the_kernel() -> RwLockReadGuard<'static, ()> {
    KERNEL_TCP_MEMORY
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> f64 {
    support::rss_kib(pid) as f64 / 1024.0
}

/// User and system CPU time a process has used, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // After the command's closing parenthesis: fields 3.. of proc(5); utime and stime are
    // the 14th and 15th, in clock ticks (100 a second on Linux).
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split(' ')
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// `/metrics`, asked up to 6 times: with the kernel's TCP memory full, a connection to the
/// admin port can stall for seconds before it is served.
fn metrics_under_pressure(host: &support::Host) -> String {
    for _ in 0..5 {
        let out = host
            .command("curl")
            .args(["-sS", "--max-time", "5", "http://127.0.0.1:15000/metrics"])
            .output(SHORT);
        if out.status.success() {
            return out.stdout;
        }
    }
    support::admin_get(host, "/metrics")
}

fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc fd")
        .count()
}

/// The certificate files of workload `frontend` on host A, for the attack scripts.
fn frontend_credentials(pair: &Pair) -> [String; 3] {
    let dir = pair.testbed.dir().join("etc-host-a");
    [
        dir.join("frontend/cert.pem"),
        dir.join("frontend/key.pem"),
        dir.join("ca/bundle.pem"),
    ]
    .map(|p: PathBuf| p.display().to_string())
}

/// Runs an h2attack command on host A, outside any workload (uncaptured), and returns its
/// JSON line.
fn attack(pair: &Pair, args: &[&str]) -> String {
    let out = pair
        .a
        .host
        .command("python3")
        .arg(H2ATTACK)
        .args(args)
        .output(LONG);
    assert!(
        out.status.success(),
        "h2attack {args:?} failed: {}",
        out.stderr
    );
    out.stdout.trim().to_string()
}

fn json_number(json: &str, key: &str) -> Option<f64> {
    let start = json.find(&format!("\"{key}\": "))? + key.len() + 4;
    let rest = &json[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

fn inbound_limits(extra: &str) -> impl Fn(String) -> String {
    let extra = extra.to_string();
    move |config: String| format!("{config}\n[inbound]\n{extra}\n")
}

#[test]
fn an_authenticated_caller_cannot_grow_the_peer_daemon_without_bound() {
    let _kernel = sharing_the_kernel();
    let mut pair = Pair::new(
        "hardening-memory",
        |a| a,
        inbound_limits("handshake_timeout = \"3s\""),
    );
    pair.start();
    let _source = pair.serve_on_b(&["serve-source", "8080", "1000000000"], 8080);
    let pid = pair.b.daemon().pid();
    let [cert, key, ca] = frontend_credentials(&pair);
    let creds = [cert.as_str(), key.as_str(), ca.as_str()];

    // A header block that never ends, on 40 connections at once.
    let before = rss_mib(pid);
    let mut args = vec!["continuation", "10.0.0.2", "15008"];
    args.extend(creds);
    args.extend(["40", "8"]);
    let result = attack(&pair, &args);
    let grown = rss_mib(pid) - before;
    println!(
        "CONTINUATION flood, 40 connections for up to 8 s: {result}; daemon RSS +{grown:.1} MiB"
    );
    assert_eq!(
        json_number(&result, "closed"),
        Some(40.0),
        "every connection closed: {result}"
    );
    let slowest = json_number(&result, "max_close_s").expect("close times");
    assert!(
        slowest <= 5.0,
        "closed within the 3 s handshake timeout (+2 s): {result}"
    );
    assert!(grown < 64.0, "RSS grew {grown:.1} MiB");

    // One CONNECT with a 16 MB header: refused at the 16 KiB limit, and not logged whole.
    let log_before = pair.b.logs().len();
    let mut args = vec!["big-header", "10.0.0.2", "15008"];
    args.extend(creds);
    args.extend(["10.0.0.2:8080", "16000000"]);
    let result = attack(&pair, &args);
    let log_grown = pair.b.logs().len() - log_before;
    println!("16 MB header: {result}; daemon log +{log_grown} bytes");
    assert!(
        result.contains("\"status_431\": true")
            || result.contains("\"reset\"")
            || result.contains("\"goaway\""),
        "the oversized CONNECT is refused: {result}"
    );
    assert!(log_grown < 64 * 1024, "log grew {log_grown} bytes");

    // 1,000 streams with a 2 GiB window to a fast server, never read: measured while the
    // attacker holds them.
    let before = rss_mib(pid);
    let mut never_read = pair
        .a
        .host
        .command("python3")
        .arg(H2ATTACK)
        .arg("never-read")
        .args(["10.0.0.2", "15008"])
        .args(creds)
        .args(["10.0.0.2:8080", "1000", "8"])
        .spawn();
    thread::sleep(Duration::from_secs(5));
    let served = pair.b.host.established_to(8080);
    let grown = rss_mib(pid) - before;
    never_read
        .wait_timeout(LONG)
        .expect("the attacker finishes");
    println!(
        "1000 streams never read, 2 GiB window: {served} delivered at once (cap 100); daemon RSS +{grown:.1} MiB \
         (bound: 100 streams x 512 KiB + 16 MiB)"
    );
    assert!(
        (50..=100).contains(&served),
        "the streams were served, up to the cap: {served}"
    );
    assert!(grown < 150.0, "RSS grew {grown:.1} MiB");
    // Once the attacker is gone, the buffers are freed and given back to the system (glibc
    // returns chunks this large at once; measured with and without a periodic malloc_trim:
    // +0.7 and -0.8 MiB, so the daemon does not trim).
    thread::sleep(Duration::from_secs(2));
    let left = rss_mib(pid) - before;
    println!("after the attacker left: daemon RSS {left:+.1} MiB over its level before the attack");
    assert!(
        left < 16.0,
        "the memory of the attack is given back: {left:.1} MiB left"
    );

    // Still serving legitimate callers.
    let out = pair.frontend(&["download", "10.0.0.2", "8080", "1000000"]);
    assert!(
        out.stdout.contains("bytes=1000000"),
        "legitimate call after the attacks: {out:?}"
    );
}

#[test]
fn floods_before_tls_leave_legitimate_calls_working() {
    let _kernel = sharing_the_kernel();
    let mut pair = Pair::new(
        "hardening-pretls",
        |a| a,
        inbound_limits(
            "max_unauthenticated = 200\nmax_unauthenticated_per_address = 50\nhandshake_timeout = \"2s\"",
        ),
    );
    let attacker = pair.testbed.add_host("host-c");
    pair.start();
    let _sink = pair.serve_on_b(&["serve-sink", "8080"], 8080);
    let pid = pair.b.daemon().pid();
    let fds_before = open_fds(pid);

    let flood = thread::scope(|scope| {
        let flood = scope.spawn(|| {
            attacker
                .command("python3")
                .args([H2ATTACK, "no-tls", "10.0.0.2", "15008", "2000", "4"])
                .output(LONG)
        });
        thread::sleep(Duration::from_secs(1));
        let mut succeeded = 0;
        let mut peak_fds = 0;
        for _ in 0..20 {
            let out = pair.frontend(&["upload", "10.0.0.2", "8080", "10000"]);
            succeeded += usize::from(out.stdout.contains("bytes=10000"));
            peak_fds = peak_fds.max(open_fds(pid));
        }
        (flood.join().expect("flood thread"), succeeded, peak_fds)
    });
    let (flood, succeeded, peak_fds) = flood;
    println!(
        "2000 connections that never start TLS from one address: {}; legitimate calls {succeeded}/20; \
         daemon fds {fds_before} before, {peak_fds} at peak",
        flood.stdout.trim()
    );
    assert_eq!(succeeded, 20, "every legitimate call succeeded");
    assert!(peak_fds < fds_before + 100, "fds held: {peak_fds}");
    let logs = pair.b.logs();
    let refusal_lines = logs
        .lines()
        .filter(|l| l.contains("too_many_unauthenticated_from_address"))
        .count();
    println!("refusal log lines: {refusal_lines}");
    assert!(refusal_lines >= 1, "the refusals are logged");
    assert!(
        refusal_lines <= 10,
        "and rate-limited: {refusal_lines} lines"
    );
}

/// The pre-TLS slots are shared fairly: 16 addresses, each in a /24 of its own, keeping as
/// many connections open as they can (each reopened as soon as it is closed), cannot keep
/// a caller from elsewhere out. Every legitimate call here opens a new tunnel connection
/// (`tunnel probe` has no pool to reuse).
#[test]
fn sixteen_flooding_addresses_cannot_shut_the_door_on_new_callers() {
    let _kernel = sharing_the_kernel();
    let mut pair = Pair::new("hardening-fair-pretls", |a| a, |b| b);
    let attacker = pair.testbed.add_host("host-c");
    let sources: Vec<String> = (0..16).map(|i| format!("10.0.{}.2", 16 + i)).collect();
    for source in &sources {
        attacker
            .command("ip")
            .args(["addr", "add", &format!("{source}/24"), "dev", "eth0"])
            .output(SHORT);
    }
    pair.b
        .host
        .command("ip")
        .args(["route", "add", "10.0.16.0/20", "via", "10.0.0.3"])
        .output(SHORT);
    pair.start();
    let _server = pair.serve_on_b(&["serve-tagged", "8080"], 8080);
    let probe = || {
        pair.a
            .host
            .command(support::TUNNEL)
            .args(["probe", "--as", "frontend", "--config"])
            .arg(&pair.a.config)
            .arg("10.0.0.2:8080")
            .output(SHORT)
    };
    assert!(probe().status.success(), "a call before the flood");
    // Forget that host A was just authenticated: the flood must be survived by fairness,
    // not by the known sources' reserve (restarting B clears what it knew).
    pair.b.start(&pair.testbed);

    let mut flood = attacker
        .command("python3")
        .args([
            H2ATTACK,
            "no-tls-flood",
            "10.0.0.2",
            "15008",
            &sources.join(","),
            "128",
            "25",
        ])
        .spawn();
    flood.wait_for("flooding", SHORT);
    thread::sleep(Duration::from_secs(2));
    // Calls for 20 s of the flood's 25.
    let started = Instant::now();
    let mut calls = 0;
    let mut failures = Vec::new();
    while started.elapsed() < Duration::from_secs(20) {
        let out = probe();
        calls += 1;
        if !out.status.success() {
            failures.push(format!("{}{}", out.stdout, out.stderr));
        }
    }
    let took = started.elapsed();
    flood.wait_timeout(LONG).expect("the flood ends");
    let flooded: String = flood
        .stdout()
        .trim()
        .lines()
        .last()
        .unwrap_or("")
        .to_string();
    let logs = pair.b.logs();
    let evictions = logs
        .lines()
        .filter(|l| l.contains("evicted_unauthenticated"))
        .count();
    println!(
        "16 addresses in 16 /24s, 128 connections each that never start TLS, reopened as closed: {flooded}; \
         legitimate calls, each a new tunnel connection: {}/{calls} in {took:.1?}; eviction log lines (rate-limited): {evictions}",
        calls - failures.len()
    );
    if let Some(first) = failures.first() {
        println!("first failure: {first}");
    }
    assert!(calls >= 20, "enough calls to judge: {calls}");
    assert!(
        failures.len() * 100 <= calls,
        "at least 99% of the calls succeed: {} of {calls} failed",
        failures.len()
    );
    assert!(
        flooded.contains("\"closed_by_server\""),
        "the flood ran: {flooded}"
    );
}

#[test]
fn a_handshake_flood_leaves_established_callers_served() {
    let _kernel = sharing_the_kernel();
    let mut pair = Pair::new("hardening-handshakes", |a| a, |b| b);
    let attacker = pair.testbed.add_host("host-c");
    pair.start();
    let _server = pair.serve_on_b(&["serve-tagged", "8080"], 8080);
    let pid = pair.b.daemon().pid();
    let [cert, key, ca] = frontend_credentials(&pair);
    let quiet = pair.frontend(&["latency", "10.0.0.2", "8080", "50"]);
    // The daemons run at debug level in tests; count what an operator at info would see.
    let info_lines = || {
        pair.b
            .logs()
            .lines()
            .filter(|l| !l.contains(" DEBUG ") && !l.contains(" TRACE "))
            .count()
    };
    let log_before = info_lines();
    let (flood, loaded) = thread::scope(|scope| {
        let flood = scope.spawn(|| {
            attacker
                .command("python3")
                .args([
                    H2ATTACK,
                    "handshakes",
                    "10.0.0.2",
                    "15008",
                    &cert,
                    &key,
                    &ca,
                    "20",
                    "6",
                ])
                .output(LONG)
        });
        thread::sleep(Duration::from_secs(1));
        let loaded = pair.frontend(&["latency", "10.0.0.2", "8080", "50"]);
        (flood.join().expect("flood thread"), loaded)
    });
    let log_lines = info_lines() - log_before;
    println!(
        "handshake flood from 20 processes: {}; legitimate new connections: quiet {}, under the flood {}; \
         daemon log +{log_lines} lines at info, RSS {:.1} MiB",
        flood.stdout.trim(),
        quiet.stdout.trim(),
        loaded.stdout.trim(),
        rss_mib(pid)
    );
    assert!(
        flood.stdout.contains("\"handshakes\""),
        "the flood ran: {}",
        flood.stderr
    );
    assert!(
        loaded.stdout.starts_with("ok=50 "),
        "every legitimate call succeeded: {}",
        loaded.stdout
    );
    assert!(
        log_lines < 100,
        "the flood did not flood the log: {log_lines} lines"
    );
}

#[test]
fn a_burst_of_captured_connects_fits_the_accept_queue() {
    let _kernel = sharing_the_kernel();
    let mut pair = Pair::new("hardening-burst", |a| a, |b| b);
    pair.start();
    let _server = pair.serve_on_b(&["serve-tagged", "8080"], 8080);
    let overflows = || listen_overflows(&pair.a.host);
    let before = overflows();
    let out = pair.frontend(&["fan-out", "10.0.0.2", "8080", "2000"]);
    let overflowed = overflows() - before;
    println!(
        "2000 simultaneous captured connects: {}; listen overflows on host A: {overflowed}",
        out.stdout.trim()
    );
    assert_eq!(out.stdout.trim(), "ok=2000 bad=0", "{}", out.stderr);
    assert_eq!(
        overflowed, 0,
        "the outbound listener's accept queue overflowed"
    );
}

/// TcpExt ListenOverflows of a host's network namespace.
fn listen_overflows(host: &support::Host) -> u64 {
    let out = host.command("cat").arg("/proc/net/netstat").output(SHORT);
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("TcpExt:"))
        .collect();
    let (names, values) = (lines[0].split_whitespace(), lines[1].split_whitespace());
    names
        .zip(values)
        .find(|(name, _)| *name == "ListenOverflows")
        .and_then(|(_, value)| value.parse().ok())
        .expect("ListenOverflows in /proc/net/netstat")
}

#[test]
fn a_partition_strands_nothing_on_the_receiving_side() {
    let _kernel = sharing_the_kernel();
    let keepalive = |config: String| {
        format!("{config}\n[outbound]\nkeepalive = \"2s\"\nconnect_timeout = \"2s\"\n")
    };
    let mut pair = Pair::new(
        "hardening-partition",
        keepalive,
        inbound_limits("keepalive = \"2s\""),
    );
    pair.start();
    let _server = pair.serve_on_b(&["serve-tagged", "8080"], 8080);
    let held = thread::scope(|scope| {
        let held = scope.spawn(|| pair.frontend(&["hold", "10.0.0.2", "8080", "5", "20"]));
        testbed::wait_until(
            SHORT,
            Duration::from_millis(100),
            || pair.b.host.established_to(8080) >= 5,
            || "the held connections reach B".into(),
        );
        let started = Instant::now();
        pair.a
            .host
            .command("ip")
            .args(["link", "set", "eth0", "down"])
            .output(SHORT);
        // A new connect during the partition: its stream on the silent pooled connection
        // gets no answer within connect_timeout, the retry's dial times out too.
        let new_call = pair.frontend(&["expect-refused", "10.0.0.2", "8080"]);
        println!(
            "a new connect during the partition: {}",
            new_call.stdout.trim()
        );
        let ms: u64 = new_call
            .stdout
            .trim()
            .rsplit("ms=")
            .next()
            .and_then(|m| m.parse().ok())
            .expect("ms=");
        assert!(
            ms < 5_000,
            "failed within 2 x connect_timeout (+1 s): {}",
            new_call.stdout
        );
        testbed::wait_until(
            LONG,
            Duration::from_millis(200),
            || pair.b.host.established_to(8080) == 0 && established_on(&pair.b.host, 15008) == 0,
            || "B closes the tunnel and delivery sockets".into(),
        );
        let cleared = started.elapsed();
        pair.a
            .host
            .command("ip")
            .args(["link", "set", "eth0", "up"])
            .output(SHORT);
        (held.join().expect("hold thread"), cleared)
    });
    let (held, cleared) = held;
    println!(
        "partition: B closed the tunnel and delivery sockets {cleared:?} after the link went down; hold: {}",
        held.stdout.trim()
    );
    assert!(cleared < Duration::from_secs(15), "took {cleared:?}");
    // The network is back: new calls work without a restart.
    testbed::wait_until(
        LONG,
        Duration::from_millis(500),
        || {
            pair.frontend(&["peer", "10.0.0.2", "8080"])
                .status
                .success()
        },
        || "calls work again after the partition".into(),
    );
}

/// Established TCP connections whose local port is `port`.
fn established_on(host: &support::Host, port: u16) -> usize {
    let out = host
        .command("ss")
        .args(["-Htn", "state", "established", &format!("sport = :{port}")])
        .output(Duration::from_secs(5));
    out.stdout.lines().filter(|l| !l.trim().is_empty()).count()
}

#[test]
fn connects_to_an_unreachable_peer_fail_together_within_the_connect_timeout() {
    let _kernel = sharing_the_kernel();
    let timeout = |config: String| format!("{config}\n[outbound]\nconnect_timeout = \"2s\"\n");
    let mut pair = Pair::new("hardening-unreachable", timeout, |b| b);
    pair.start();
    let backlog = pair
        .a
        .host
        .command("ss")
        .args(["-Hltn", "sport = :15001"])
        .output(SHORT);
    println!("outbound listener: {}", backlog.stdout.trim());
    assert!(
        backlog.stdout.split_whitespace().nth(2) == Some("4096"),
        "outbound backlog 4096: {}",
        backlog.stdout
    );
    // 10.0.0.77 is inside the captured range, and no host answers there.
    let started = Instant::now();
    let callers: Vec<Proc> = (0..10)
        .map(|_| pair.spawn_frontend(&["expect-refused", "10.0.0.77", "8080"]))
        .collect();
    // Each caller's own measure: from its connect to the reset it got.
    let mut ends = Vec::new();
    for mut caller in callers {
        caller.wait_timeout(LONG).expect("the caller finishes");
        let out = caller.stdout();
        let ms: u64 = out
            .trim()
            .rsplit("ms=")
            .next()
            .and_then(|ms| ms.parse().ok())
            .unwrap_or_else(|| panic!("no ms= in {out:?}"));
        assert!(out.starts_with("outcome=reset"), "{out}");
        ends.push(Duration::from_millis(ms));
    }
    let (first, last) = (ends.iter().min().unwrap(), ends.iter().max().unwrap());
    println!(
        "10 parallel connects to an unreachable peer: each failed after {first:?} to {last:?} (all done {:?} after the first started)",
        started.elapsed()
    );
    assert!(
        *last < Duration::from_secs(3),
        "all failed within the 2 s connect timeout (+1 s): {ends:?}"
    );
    let dials = pair.a.logs().matches("refused: tunnel not opened").count();
    assert_eq!(dials, 10, "each caller refused with a reason");
}

#[test]
fn non_local_binds_keep_the_daemon_from_delivering() {
    let _kernel = sharing_the_kernel();
    let mut pair = Pair::new("hardening-nonlocal", |a| a, |b| b);
    let sysctl = |host: &support::Host, value: &str| {
        let out = host
            .command("sysctl")
            .args(["-w", &format!("net.ipv4.ip_nonlocal_bind={value}")])
            .output(SHORT);
        assert!(out.status.success(), "sysctl: {}", out.stderr);
    };
    sysctl(&pair.b.host, "1");
    let out = pair
        .b
        .host
        .command(support::TUNNEL)
        .args(["run", "--config"])
        .arg(&pair.b.config)
        .in_cgroup(&pair.testbed.cgroup("b/daemon"))
        .output(SHORT);
    println!(
        "start with ip_nonlocal_bind=1: {:?} {}",
        out.status.code(),
        out.stderr.trim()
    );
    assert_eq!(
        out.status.code(),
        Some(69),
        "refused to start: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("net.ipv4.ip_nonlocal_bind"),
        "{}",
        out.stderr
    );

    sysctl(&pair.b.host, "0");
    pair.start();
    let _server = pair.serve_on_b(&["serve-tagged", "8080"], 8080);
    assert!(
        pair.frontend(&["peer", "10.0.0.2", "8080"])
            .status
            .success()
    );
    sysctl(&pair.b.host, "1");
    testbed::wait_until(
        SHORT,
        Duration::from_millis(200),
        || pair.b.logs().contains("non-local binds were enabled"),
        || "the daemon notices the sysctl".into(),
    );
    let out = pair.frontend(&["expect-refused", "10.0.0.2", "8080"]);
    println!(
        "call with ip_nonlocal_bind=1 at runtime: {}",
        out.stdout.trim()
    );
    assert!(
        pair.b.logs().contains("locality cannot be proven"),
        "the CONNECT is refused with the reason"
    );
    sysctl(&pair.b.host, "0");
}

/// The buffer budget's case: 4 identities × 32 connections × 100 streams, every stream
/// towards a server that sends without end, none ever read. The daemon's RSS is sampled
/// while the attackers hold their streams; what it charges stays within the budget, its
/// growth is bounded, it returns to within 64 MB of its idle level once they are gone, and
/// a legitimate call made during the attack completes (its streams' stalled buffers are
/// reclaimed).
#[test]
fn many_identities_that_never_read_stay_within_the_buffer_budget() {
    let _kernel = KERNEL_TCP_MEMORY
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    const IDENTITIES: usize = 4;
    const BUDGET_MIB: f64 = 256.0;
    let mut pair = Pair::new(
        "hardening-budget",
        |a| a,
        // Port 8080 sends without end (the attackers'), 8081 one megabyte (the legitimate
        // caller's).
        |b| {
            let b = b.replace("ports = [8080]", "ports = [8080, 8081]");
            format!(
                "{b}\n[[policy]]\naction = \"allow\"\nto = \"orders\"\nfrom = [\"spiffe://example.org/attacker/*\"]\n"
            )
        },
    );
    let attackers: Vec<[String; 3]> = (1..=IDENTITIES)
        .map(|n| {
            let dir = pair
                .pki
                .issue(&format!("attacker/{n}"), &format!("attacker-{n}"));
            [
                dir.join("cert.pem"),
                dir.join("key.pem"),
                pair.pki.dir.join("etc-host-a/ca/bundle.pem"),
            ]
            .map(|p| p.display().to_string())
        })
        .collect();
    pair.start();
    let _endless = pair.serve_on_b(&["serve-endless", "8080"], 8080);
    let _megabyte = pair.serve_on_b(&["serve-source", "8081", "1000000"], 8081);
    let pid = pair.b.daemon().pid();
    // Warm: one legitimate download, so the idle level includes a served connection.
    let warm = pair.frontend(&["download", "10.0.0.2", "8081", "1000000"]);
    assert!(warm.stdout.contains("bytes=1000000"), "{warm:?}");
    thread::sleep(Duration::from_secs(1));
    let idle = rss_mib(pid);
    let idle_fds = open_fds(pid);

    let mut attacks: Vec<Proc> = attackers
        .iter()
        .map(|[cert, key, ca]| {
            pair.a
                .host
                .command("python3")
                .arg(H2ATTACK)
                .arg("never-read")
                .args(["10.0.0.2", "15008", cert, key, ca])
                .args(["10.0.0.2:8080", "100", "25", "32"])
                .spawn()
        })
        .collect();
    for attack in &mut attacks {
        attack.wait_for("holding", LONG);
    }
    let held_from = Instant::now();
    let cpu_from = cpu_seconds(pid);
    let mut peak = 0.0_f64;
    let mut served_peak = 0;
    let mut legit: Option<(Proc, Instant)> = None;
    while held_from.elapsed() < Duration::from_secs(15) {
        peak = peak.max(rss_mib(pid));
        // Each stream delivered is a socket of the daemon (`ss` is too slow at this scale).
        served_peak = served_peak.max(open_fds(pid).saturating_sub(idle_fds));
        if legit.is_none() && held_from.elapsed() > Duration::from_secs(5) {
            let call = pair.spawn_frontend(&["download", "10.0.0.2", "8081", "1000000"]);
            legit = Some((call, Instant::now()));
        }
        thread::sleep(Duration::from_millis(250));
    }
    let busy = (cpu_seconds(pid) - cpu_from) / held_from.elapsed().as_secs_f64();
    let metrics = metrics_under_pressure(&pair.b.host);
    let metric = |name: &str| {
        metrics
            .lines()
            .filter(|l| l.starts_with(name))
            .collect::<Vec<_>>()
            .join("; ")
    };
    for attack in &mut attacks {
        attack.wait_timeout(LONG).expect("the attacker finishes");
    }
    let mut after = rss_mib(pid);
    for _ in 0..20 {
        if after - idle < 64.0 {
            break;
        }
        thread::sleep(Duration::from_millis(500));
        after = rss_mib(pid);
    }
    let metrics_after = metrics_under_pressure(&pair.b.host);
    let buffered_after: Vec<&str> = metrics_after
        .lines()
        .filter(|l| l.starts_with("tunnel_buffered_bytes"))
        .collect();
    let (mut call, started) = legit.expect("a legitimate call was made during the attack");
    let legit_took = call.wait_timeout(LONG).map(|_| started.elapsed());
    let legit_ok = call.stdout().contains("bytes=1000000");
    // How long B carried it. The process itself takes far longer (about 20 s): its
    // connection reaches A's daemon late, and B's log shows the stream arriving ~18 s
    // after the process started. Every namespace here shares one kernel, whose TCP memory
    // the 12,800 back-pressured sockets to the endless source hold; that is the likely
    // cause, not verified.
    let carried: Vec<String> = pair
        .b
        .logs()
        .lines()
        .filter(|l| l.contains("tunnel::access") && l.contains("dst=10.0.0.2:8081"))
        .filter_map(|l| {
            l.split("duration_ms=")
                .nth(1)?
                .split(' ')
                .next()
                .map(String::from)
        })
        .collect();
    println!(
        "{IDENTITIES} identities x 32 connections x 100 streams never read: the daemon's sockets +{served_peak}; \
         daemon RSS idle {idle:.1} MiB, peak {peak:.1} MiB (bound: budget {BUDGET_MIB} + 64), after {after:.1} MiB; \
         a legitimate 1 MB download started during the attack: ok={legit_ok}, process ended after {legit_took:?}, \
         carried by B in ms (warm-up, then during the attack): {carried:?}; \
         the daemon used {busy:.2} CPU cores meanwhile\n\
         during: {}\nafter: {buffered_after:?}\n{}\n{}\n{}",
        metric("tunnel_buffered_bytes"),
        metric("tunnel_buffer_budget_paused_total"),
        metric("tunnel_buffer_budget_reclaimed_total"),
        metric("tunnel_buffer_windows_narrowed_total"),
    );
    assert!(
        served_peak >= 1000,
        "the attack reached the destination: {served_peak} streams"
    );
    assert!(
        metrics.contains("tunnel_buffer_budget_paused_total"),
        "the budget is reported"
    );
    // The budget bounds what the daemon buffers (the metrics above: reads and windows
    // together at most the budget; each identity's reads at most an eighth of it). The
    // state of each of 12,800 streams (socket, task, h2's stream) comes on top, uncharged.
    assert!(
        peak < BUDGET_MIB + 64.0,
        "RSS peaked at {peak:.1} MiB, over the budget + 64 MiB"
    );
    assert!(
        metric("tunnel_buffered_bytes")
            .split("; ")
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
            <= BUDGET_MIB * 1024.0 * 1024.0,
        "what is charged stays within the budget"
    );
    assert!(
        after - idle < 64.0,
        "RSS {after:.1} MiB is not back within 64 MiB of idle ({idle:.1} MiB)"
    );
    let daemons_said: Vec<String> = pair
        .a
        .logs()
        .lines()
        .filter(|l| l.contains("dst=10.0.0.2:8081"))
        .map(String::from)
        .chain(
            pair.b
                .logs()
                .lines()
                .filter(|l| l.contains("dst=10.0.0.2:8081"))
                .map(String::from),
        )
        .collect();
    assert!(
        legit_ok,
        "the legitimate call during the attack completed: {legit_took:?}: {}{}\nthe daemons said: {daemons_said:#?}",
        call.stdout(),
        call.stderr()
    );
}
