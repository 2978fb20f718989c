//! Transparent capture, end to end: real processes in cgroups on test hosts, the real daemon
//! on each host, traffic through the kernel programs (issue: transparent capture).

mod support;

use std::time::Duration;

use support::{LONG, NETPROBE, Pair, SHORT, admin_get, endpoint, start_daemon};
use tunnel::ca::LeafSpec;

/// A file served by `python3 -m http.server` on host B, and what curl on A gets for it.
fn curl_through(pair: &Pair, url: &str) -> String {
    let frontend = pair.a.workload_cgroup(&pair.testbed, "frontend");
    let out = pair
        .a
        .host
        .command("curl")
        .args(["-sS", "-m", "10", url])
        .in_cgroup(&frontend)
        .output(SHORT);
    assert!(
        out.status.success(),
        "curl {url} failed: {}\nhost A daemon:\n{}",
        out.stderr,
        pair.a.logs()
    );
    out.stdout
}

fn http_server_on_b(pair: &Pair) -> testbed::Proc {
    let root = pair.testbed.dir().join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("hello.txt"), "hello from orders\n").unwrap();
    let server = pair
        .b
        .host
        .command("python3")
        .args(["-m", "http.server", "8080", "--bind", "::", "--directory"])
        .arg(&root)
        .spawn();
    pair.b.host.wait_for_listener(8080, SHORT);
    server
}

#[test]
fn captured_clients_get_the_right_bytes_and_see_the_address_they_dialled() {
    let mut pair = Pair::new("capture-basic", |a| a, |b| b);
    pair.start();
    let _server = http_server_on_b(&pair);

    assert_eq!(
        curl_through(&pair, "http://10.0.0.2:8080/hello.txt"),
        "hello from orders\n"
    );
    pair.a.daemon().wait_for_line(
        &["tunnel::access", "dst=10.0.0.2:8080", "workload=frontend"],
        SHORT,
    );

    let out = pair.frontend(&["peer", "10.0.0.2", "8080"]);
    assert_eq!(
        endpoint(&out.stdout, "peer"),
        "10.0.0.2:8080",
        "getpeername must show the dialled address"
    );
    assert!(
        endpoint(&out.stdout, "sock").starts_with("127.0.0.1:"),
        "the connection went to the daemon: {}",
        out.stdout
    );
}

#[test]
fn ipv6_and_v4_mapped_destinations_are_captured() {
    let mut pair = Pair::new("capture-ipv6", |a| a, |b| b);
    pair.start();
    let _server = http_server_on_b(&pair);

    assert_eq!(
        curl_through(&pair, "http://[fd00::2]:8080/hello.txt"),
        "hello from orders\n"
    );
    pair.a
        .daemon()
        .wait_for_line(&["tunnel::access", "dst=[fd00::2]:8080"], SHORT);
    let out = pair.frontend(&["peer", "fd00::2", "8080"]);
    assert_eq!(endpoint(&out.stdout, "peer"), "[fd00::2]:8080");
    assert!(
        endpoint(&out.stdout, "sock").starts_with("[::1]:"),
        "{}",
        out.stdout
    );

    // An IPv6 socket dialling an IPv4 destination in its v4-mapped form (Java's default).
    let out = pair.frontend(&["peer", "::ffff:10.0.0.2", "8080"]);
    assert_eq!(endpoint(&out.stdout, "peer"), "[::ffff:10.0.0.2]:8080");
    assert!(
        endpoint(&out.stdout, "sock").starts_with("[::ffff:127.0.0.1]:"),
        "{}",
        out.stdout
    );
}

#[test]
fn only_selected_destinations_ports_and_cgroups_are_captured() {
    let narrow = |a: String| {
        a.replace(
            r#"destinations = ["10.0.0.0/24", "fd00::/64"]"#,
            r#"destinations = ["10.0.0.2/32", "fd00::/64"]
ports = [8080]
exclude = ["fd00::3/128"]"#,
        )
    };
    // B passes plaintext (permissive): this test is about what A captures, and an uncaptured
    // process's plaintext must be able to arrive to show that it went out directly.
    let permissive =
        |b: String| b.replace("ports = [8080]", "ports = [8080]\nmode = \"permissive\"");
    let mut pair = Pair::new("capture-selection", narrow, permissive);
    let host_c = pair.testbed.add_host("host-c");
    pair.start();
    let _b8080 = pair.serve_on_b(&["serve-tagged", "8080", "9090"], 9090);
    let mut c = host_c
        .command("python3")
        .arg(NETPROBE)
        .args(["serve-tagged", "8080"])
        .spawn();
    c.wait_for("listening", SHORT);
    let mut a_local = pair
        .a
        .host
        .command("python3")
        .arg(NETPROBE)
        .args(["serve-tagged", "8080"])
        .spawn();
    a_local.wait_for("listening", SHORT);

    let not_captured = |args: &[&str], sock_prefix: &str| {
        let out = pair.frontend(args);
        let sock = endpoint(&out.stdout, "sock");
        assert!(
            sock.starts_with(sock_prefix),
            "{args:?} should go out directly from {sock_prefix}, got {}",
            out.stdout
        );
    };
    not_captured(&["peer", "10.0.0.3", "8080"], "10.0.0.1:"); // outside destinations
    not_captured(&["peer", "10.0.0.2", "9090"], "10.0.0.1:"); // port outside ports
    not_captured(&["peer", "fd00::3", "8080"], "[fd00::1]:"); // excluded
    not_captured(&["peer", "127.0.0.1", "8080"], "127.0.0.1:"); // loopback

    // Still captured: in destinations, on a selected port.
    let out = pair.frontend(&["peer", "10.0.0.2", "8080"]);
    assert!(
        endpoint(&out.stdout, "sock").starts_with("127.0.0.1:"),
        "{}",
        out.stdout
    );

    // A process outside the captured cgroup goes out directly, even to a captured destination.
    let out = pair
        .a
        .host
        .command("python3")
        .arg(NETPROBE)
        .args(["peer", "10.0.0.2", "8080"])
        .output(SHORT);
    assert!(
        endpoint(&out.stdout, "sock").starts_with("10.0.0.1:"),
        "{}",
        out.stdout
    );

    let logs = pair.a.logs();
    for dst in [
        "dst=10.0.0.3:8080",
        "dst=10.0.0.2:9090",
        "dst=[fd00::3]:8080",
        "dst=127.0.0.1:8080",
    ] {
        assert!(
            !logs.contains(dst),
            "the daemon must not have carried {dst}:\n{logs}"
        );
    }
}

#[test]
fn concurrent_connections_from_several_processes_never_mix_up() {
    let ports = |b: String| b.replace("ports = [8080]", "ports = [8080, 8081, 8082, 8083]");
    let mut pair = Pair::new("capture-fanout", |a| a, ports);
    pair.start();
    let _server = pair.serve_on_b(&["serve-tagged", "8080", "8081", "8082", "8083"], 8083);
    let frontend = pair.a.workload_cgroup(&pair.testbed, "frontend");
    let clients: Vec<_> = (0..4)
        .map(|_| {
            pair.a
                .host
                .command("python3")
                .arg(NETPROBE)
                .args(["fan-out", "10.0.0.2", "8080,8081,8082,8083", "50"])
                .in_cgroup(&frontend)
                .spawn()
        })
        .collect();
    for mut client in clients {
        client.wait_timeout(LONG).expect("fan-out finishes");
        assert_eq!(
            client.stdout().trim(),
            "ok=50 bad=0",
            "stderr: {}",
            client.stderr()
        );
    }

    // Every connection is closed: the kernel's tuple map holds nothing any more.
    let pinned = pair.testbed.bpf_dir("a").join(format!(
        "maps-v{}/ORIGINAL_DST_BY_TUPLE",
        tunnel_common::MAP_LAYOUT_VERSION
    ));
    testbed::wait_until(
        SHORT,
        Duration::from_millis(100),
        || tuple_map_entries(&pinned) == 0,
        || {
            let entries = tuple_map_entries(&pinned);
            format!("{entries} tuple map entries left after all connections closed")
        },
    );
}

#[test]
fn a_killed_daemon_fails_closed_and_the_next_one_takes_over() {
    let mut pair = Pair::new("capture-failclosed", |a| a, |b| b);
    pair.start();
    let _server = pair.serve_on_b(&["serve-tagged", "8080"], 8080);
    pair.a.daemon.take().expect("daemon").signal("KILL");
    std::thread::sleep(Duration::from_millis(200));

    let pcap = pair.testbed.dir().join("failclosed.pcap");
    let capture = pair
        .a
        .host
        .capture("eth0", "tcp port 8080 or tcp port 9999", pcap);
    let out = pair.frontend(&["expect-refused", "10.0.0.2", "8080"]);
    // Control: an uncaptured process's attempt on port 9999 must show, or the capture is blind.
    let control =
        pair.a
            .host
            .command("python3")
            .arg(NETPROBE)
            .args(["expect-refused", "10.0.0.2", "9999"]);
    control.output(SHORT);
    let packets = capture.stop();
    assert!(
        packets.count_matching("tcp port 9999") > 0,
        "the capture saw nothing: it is not working"
    );
    assert!(
        out.stdout.starts_with("outcome=refused"),
        "a captured connect with no daemon must be refused: {}",
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
    assert!(ms < 1000, "refusal must be immediate, took {ms} ms");
    assert_eq!(
        packets.count_matching("tcp port 8080"),
        0,
        "nothing may leave for port 8080 while no daemon runs"
    );

    let restarted = start_daemon(&pair.testbed, &pair.a.host, "a", &pair.a.config);
    restarted.wait_for_line(&["took over capture from an earlier run"], SHORT);
    let out = pair.frontend(&["peer", "10.0.0.2", "8080"]);
    assert!(
        endpoint(&out.stdout, "sock").starts_with("127.0.0.1:"),
        "capture works again: {}",
        out.stdout
    );
}

#[test]
fn large_transfers_arrive_intact_and_half_close_is_carried() {
    let ports = |b: String| b.replace("ports = [8080]", "ports = [8080, 8081]");
    let mut pair = Pair::new("capture-bulk", |a| a, ports);
    pair.start();
    const SIZE: &str = "104857600";
    let _sink = pair.serve_on_b(&["serve-sink", "8080"], 8080);
    let _source = pair.serve_on_b(&["serve-source", "8081", SIZE], 8081);

    // Upload, then shut down the write side and still read the server's reply.
    let out = pair.frontend(&["upload", "10.0.0.2", "8080", SIZE]);
    let sent = field(&out.stdout, "sent sha256=");
    assert_eq!(
        field(&out.stdout, "reply sha256="),
        sent,
        "upload corrupted or truncated: {}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains(&format!("reply sha256={sent} bytes={SIZE}")),
        "{}",
        out.stdout
    );

    let out = pair.frontend(&["download", "10.0.0.2", "8081", SIZE]);
    assert_eq!(
        field(&out.stdout, "received sha256="),
        field(&out.stdout, "expected sha256="),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!("bytes={SIZE}")),
        "{}",
        out.stdout
    );
}

/// The hop between the application and A's daemon through the sockmap: bytes both ways,
/// in order, with the half-close carried, and counted as moved by `redirect_local`; with
/// the hop off, nothing is.
#[test]
fn the_sockmap_hop_carries_bytes_in_order_and_only_when_on() {
    for on in [true, false] {
        // Both hosts: A's hop is application → daemon, B's is daemon → workload.
        let ports = |b: String| {
            let b = b.replace("ports = [8080]", "ports = [8080, 8081, 8082, 8083]");
            testbed::with_sockmap(&b, on)
        };
        let name = if on {
            "capture-sockmap-on"
        } else {
            "capture-sockmap-off"
        };
        let mut pair = Pair::new(name, |a| testbed::with_sockmap(&a, on), ports);
        pair.start();
        const SIZE: &str = "33554432";
        // In B's capture cgroup, where its workloads' ends join the map.
        let serve = |args: &[&str], port| pair.serve_on_b_as("orders", args, port);
        let _sink = serve(&["serve-sink", "8080"], 8080);
        let _source = serve(&["serve-source", "8081", SIZE], 8081);
        let _tagged = serve(&["serve-tagged", "8082"], 8082);
        let _slow = serve(&["serve-slow-sink", "8083"], 8083);

        let out = pair.frontend(&["upload", "10.0.0.2", "8080", SIZE]);
        let sent = field(&out.stdout, "sent sha256=");
        assert!(
            out.stdout
                .contains(&format!("reply sha256={sent} bytes={SIZE}")),
            "sockmap {on}: upload corrupted, truncated or its half-close lost: {}",
            out.stdout
        );
        let out = pair.frontend(&["download", "10.0.0.2", "8081", SIZE]);
        assert_eq!(
            field(&out.stdout, "received sha256="),
            field(&out.stdout, "expected sha256="),
            "sockmap {on}: {}",
            out.stdout
        );
        // A reader slower than the application: back-pressure must reach the application
        // as TCP's (its writes wait), not as errors, and nothing may pile up unbounded.
        // Redirected bytes are outside TCP's flow control, so past the first 128 KiB the
        // hop hands the direction back to TCP; without that cap, iperf3 through the hop got
        // ENOMEM once the queue had eaten the host's TCP memory.
        let out = pair.frontend(&["upload", "10.0.0.2", "8083", "8388608"]);
        let sent = field(&out.stdout, "sent sha256=");
        assert!(
            out.stdout
                .contains(&format!("reply sha256={sent} bytes=8388608")),
            "sockmap {on}: an upload to a slow reader failed or arrived wrong: {}{}",
            out.stdout,
            out.stderr
        );
        // Short connections, many at once: each is a new pair of sockets joining the map.
        let out = pair.frontend(&["fan-out", "10.0.0.2", "8082", "200"]);
        assert_eq!(
            out.stdout.trim(),
            "ok=200 bad=0",
            "sockmap {on}: {}",
            out.stderr
        );

        // A long connection whose receivers keep up (16 KiB echoed in lock-step, megabytes
        // in all): what waits unread never nears the bound, so it stays on the map however
        // much it moves, where a bound on bytes ever moved would send it to TCP after 128 KiB.
        let moved_and_left_on_a = || {
            let (_, counts) = sockmap_counts(&pair.a.host);
            (counts["redirected"], counts["left_on_tcp"])
        };
        let (redirected_before, left_before) = moved_and_left_on_a();
        let out = pair.frontend(&["load", "10.0.0.2", "8082", "2", "1", "2"]);
        let (redirected, left) = moved_and_left_on_a();
        let echoed: u64 = out
            .stdout
            .split_whitespace()
            .find_map(|word| word.strip_prefix("echoed_bytes="))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no echoed_bytes= in {}", out.stdout));
        assert!(
            out.stdout.contains("long_failed=0 corrupted_bytes=0") && echoed > 1 << 20,
            "sockmap {on}: the lock-step echo: {}{}",
            out.stdout,
            out.stderr
        );
        let (moved, on_tcp) = (redirected - redirected_before, left - left_before);
        println!(
            "sockmap {on}: lock-step echo of {echoed} bytes: {moved} messages moved, {on_tcp} by TCP"
        );
        if on {
            assert!(
                moved > 100 && on_tcp * 20 < moved,
                "the lock-step echo left the map: {moved} moved, {on_tcp} by TCP"
            );
        }

        // Every call above was one delivery on B: both its ends joined there.
        const DELIVERIES: u64 = 3 + 200;
        for (host, side) in [(&pair.a.host, "A"), (&pair.b.host, "B")] {
            let (capture, counts) = sockmap_counts(host);
            let redirected = counts["redirected"];
            let left_on_tcp = counts["left_on_tcp"];
            let joined = counts["sockets_joined"];
            println!("sockmap {on}, {side}: {counts:?}");
            if on {
                assert!(
                    redirected > 100,
                    "{side}: the hop is on but moved {redirected} messages: {capture}"
                );
                assert!(capture.contains("\"sock_ops_daemon\""), "{side}: {capture}");
                // The uploads and the download went past the cap: their rest went by TCP,
                // after what the map moved, and arrived in order (the checksums above).
                assert!(
                    left_on_tcp > 0,
                    "{side}: nothing went back to TCP: {capture}"
                );
                assert!(
                    side == "A" || joined >= 2 * DELIVERIES,
                    "B: {joined} sockets joined for {DELIVERIES} deliveries: {capture}"
                );
            } else {
                assert_eq!(
                    redirected + left_on_tcp + joined,
                    0,
                    "{side}: the hop is off: {capture}"
                );
            }
        }
    }
}

/// `host`'s `/debug/capture`, and its sockmap counters by name.
fn sockmap_counts(host: &testbed::Host) -> (String, std::collections::BTreeMap<String, u64>) {
    let capture = admin_get(host, "/debug/capture");
    let json: serde_json::Value = serde_json::from_str(&capture).unwrap();
    let counts = json["sockmap"]
        .as_object()
        .unwrap_or_else(|| panic!("no sockmap counters: {capture}"))
        .iter()
        .map(|(name, value)| (name.clone(), value.as_u64().unwrap()))
        .collect();
    (capture, counts)
}

#[test]
fn bad_config_files_are_refused_with_exit_code_64() {
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/host-a.toml"
    ))
    .unwrap();
    let refused = |name: &str, text: &str| -> String {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(support::TUNNEL)
            .args(["run", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(64), "{name}: {stderr}");
        assert!(
            stderr.contains(&path.display().to_string()),
            "{name}: the file is named:\n{stderr}"
        );
        stderr
    };
    let cases = [
        (
            base.replace("mode = \"strict\"", "mode = \"strickt\""),
            "mode: unknown variant `strickt`",
        ),
        (
            base.replace("[listen]", "[listen]\nport = 1"),
            "unknown field `port`",
        ),
        (
            base.replace("\"10.0.0.0/24\"", "\"10.0.0.1/24\""),
            "capture.destinations[0]: \"10.0.0.1/24\" has host bits set",
        ),
        (
            base.replace("cgroup = \"/sys/fs/cgroup/workloads\"", "cgroup = \"/tmp\""),
            "workload[0].cgroup",
        ),
        (
            base.replace("trust_domain = \"example.org\"", ""),
            "missing field `trust_domain`",
        ),
        (
            base.replace("mode = \"strict\"", "mode = \"strict\"\nmode = \"strict\""),
            "mode: `mode` is set twice",
        ),
        (
            base.replace("0.0.0.0:15008", "0.0.0.0:15001"),
            "listen.inbound: port 15001 is also the port of listen.outbound",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let stderr = refused(&format!("bad-{i}"), text);
        assert!(
            stderr.contains(expected),
            "case {i}: expected {expected:?} in:\n{stderr}"
        );
    }

    // What the config names is checked on the host, every problem at once: a capture cgroup
    // that is not cgroup v2, pins off bpffs, certificates peers would refuse.
    let pki = support::Pki::new(dir.path());
    let certs = |node: &LeafSpec, frontend: &LeafSpec| {
        pki.issue_spec(node, "node");
        pki.issue_spec(frontend, "frontend");
        base.replace("/etc/tunnel/", &format!("{}/", dir.path().display()))
    };
    let id = |path: &str| format!("spiffe://example.org/{path}").parse().unwrap();
    let good = |path: &str| LeafSpec::workload(&id(path), SHORT * 100);
    let mut expired = good("node/host-a");
    expired.not_before -= time::Duration::days(2);
    expired.not_after = expired.not_before + time::Duration::days(1);
    let node_cert = dir.path().join("node/cert.pem").display().to_string();
    let frontend_cert = dir.path().join("frontend/cert.pem").display().to_string();

    let stderr = refused("expired-node", &certs(&expired, &good("frontend")));
    assert!(
        stderr.contains(&format!("node.cert: {node_cert}: the certificate expired ")),
        "{stderr}"
    );
    let stderr = refused("other-id", &certs(&good("node/host-a"), &good("backend")));
    assert!(
        stderr.contains(&format!(
            "workload[0].cert: {frontend_cert}: the certificate is for spiffe://example.org/backend, \
             but workload \"frontend\" is spiffe://example.org/frontend"
        )),
        "{stderr}"
    );
    let text = certs(&good("node/host-a"), &good("frontend"))
        .replace("/sys/fs/cgroup/workloads", "/tmp")
        .replace("/sys/fs/bpf/tunnel", "/tmp/pins");
    let stderr = refused("host", &text);
    let bpf_dir = stderr
        .lines()
        .find(|l| l.contains("capture.bpf_dir: /tmp/pins is on a "))
        .unwrap_or_default();
    assert!(
        stderr.contains("capture.cgroup: /tmp is not a cgroup v2 directory")
            && bpf_dir.contains("filesystem, not bpffs"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(".cert:"),
        "the certificates are fine:\n{stderr}"
    );
}

/// The hex after `prefix` in a netprobe line.
fn field<'a>(text: &'a str, prefix: &str) -> &'a str {
    let start = text
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix} in {text}"))
        + prefix.len();
    &text[start..start + 64]
}

/// Entries in a pinned `ORIGINAL_DST_BY_TUPLE` map.
fn tuple_map_entries(pin: &std::path::Path) -> usize {
    use aya::maps::{HashMap, Map, MapData};
    use tunnel_common::{OriginalDst, SocketTuple};
    let data = MapData::from_pin(pin).unwrap_or_else(|e| panic!("open {}: {e}", pin.display()));
    let map: HashMap<_, SocketTuple, OriginalDst> =
        HashMap::try_from(Map::LruHashMap(data)).expect("an LRU hash map");
    map.keys().count()
}
