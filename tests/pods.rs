//! Pods end to end, as a Kubernetes node looks from the daemon's side: the cluster of
//! `tests/support/cluster.rs` (two nodes, dual-stack pods behind a bridge made by the
//! reference CNI plugins with `tunnel-cni` chained, the Kubernetes API answered by a
//! stand-in), and what each test proves of it.

#[path = "support/cluster.rs"]
mod cluster;
mod support;

use std::{
    fs,
    time::{Duration, Instant},
};

use cluster::{
    Cluster, Setup, add, alive_tasks, line_with, map_entries, payload_block, process_figures,
};
use rcgen::ExtendedKeyUsagePurpose;
use serde_json::json;
use support::{LONG, NETPROBE, SHORT, TUNNEL, admin_get};
use tunnel::ca::LeafSpec;

/// Policy on both nodes: frontend may call orders and ledger; nobody else may call anyone.
const POLICY: &str = r#"
[[policy]]
action = "allow"
to = "spiffe://example.org/ns/shop/sa/orders"
from = ["spiffe://example.org/ns/shop/sa/frontend"]

[[policy]]
action = "allow"
to = "spiffe://example.org/ns/shop/sa/ledger"
from = ["spiffe://example.org/ns/shop/sa/frontend"]
"#;

#[test]
fn pods_are_tunnelled_across_and_within_nodes_with_their_own_identities() {
    let cluster = Cluster::new("pods-calls", POLICY);
    let frontend = add(&cluster, 0, "frontend");
    let ledger = add(&cluster, 0, "ledger");
    let orders = add(&cluster, 1, "orders");
    let batch = add(&cluster, 1, "batch");
    let list = cluster.pod_cli(0, &["list"]);
    println!("tunnel pod list on n1:\n{}", list.stdout);
    assert!(
        list.stdout
            .contains("identity=spiffe://example.org/ns/shop/sa/frontend")
            && list
                .stdout
                .contains(&format!("hbone {}:15008", frontend.ip)),
        "{}",
        list.stdout
    );
    let _orders_sink = orders.serve(&["serve-sink", "8080"]);
    let _ledger_sink = ledger.serve(&["serve-sink", "8080"]);
    let block = payload_block();

    // Across nodes: the node link carries only the tunnel port, and no payload in clear.
    let link =
        cluster.nodes[1]
            .host
            .capture("eth0", "tcp", cluster.testbed.dir().join("node-link.pcap"));
    let out = frontend.netprobe(&["upload", &orders.ip, "8080", "1048576"]);
    let packets = link.stop();
    assert!(
        out.stdout.contains("bytes=1048576 reply sha256="),
        "{out:?}"
    );
    let sent = &out.stdout[out.stdout.find("sent sha256=").unwrap() + 12..][..64];
    assert!(
        out.stdout.contains(&format!("reply sha256={sent}")),
        "{out:?}"
    );
    assert!(packets.size() > 1_000_000, "the capture saw the transfer");
    assert!(
        !packets.contains(&block),
        "plaintext on the node link ({})",
        packets.path().display()
    );
    assert_eq!(
        packets.packets_not_matching("tcp port 15008"),
        0,
        "only HBONE crosses the node link"
    );
    println!(
        "tcpdump on n2's eth0 (the node link) during a 1 MiB upload frontend → orders: {} packets, {} bytes, all tcp port 15008, no block of the payload in clear",
        packets.packet_count(),
        packets.size()
    );
    let n2 = cluster.logs(1);
    let access = line_with(
        &n2,
        &[
            "tunnel::access",
            "direction=\"inbound\"",
            "src_identity=spiffe://example.org/ns/shop/sa/frontend",
            "dst_workload=spiffe://example.org/ns/shop/sa/orders",
            &format!("src={}:", frontend.ip),
        ],
    )
    .unwrap_or_else(|| panic!("n2 logs no inbound access line for frontend → orders:\n{n2}"));
    println!("n2 (receiving daemon): {access}");

    // On one node: pod to pod over the bridge, tunnelled too, and the caller expected exactly
    // the destination pod's identity (it knows its own node's pods).
    let bridge =
        cluster.nodes[0]
            .host
            .capture("cni0", "tcp", cluster.testbed.dir().join("bridge.pcap"));
    let out = frontend.netprobe(&["upload", &ledger.ip, "8080", "1048576"]);
    let packets = bridge.stop();
    assert!(
        out.stdout.contains("bytes=1048576 reply sha256="),
        "{out:?}"
    );
    assert!(
        !packets.contains(&block),
        "plaintext on the bridge ({})",
        packets.path().display()
    );
    assert_eq!(
        packets.packets_not_matching("tcp port 15008"),
        0,
        "only HBONE on the bridge"
    );
    println!(
        "tcpdump on n1's cni0 (the bridge) during a 1 MiB upload frontend → ledger: {} packets, {} bytes, all tcp port 15008, no block of the payload in clear",
        packets.packet_count(),
        packets.size()
    );
    let n1 = cluster.logs(0);
    let inbound = line_with(
        &n1,
        &[
            "direction=\"inbound\"",
            "src_identity=spiffe://example.org/ns/shop/sa/frontend",
            "dst_workload=spiffe://example.org/ns/shop/sa/ledger",
        ],
    )
    .unwrap_or_else(|| panic!("n1 logs no inbound access line for frontend → ledger:\n{n1}"));
    println!("n1 (same node, receiving side): {inbound}");
    let outbound = line_with(
        &n1,
        &[
            "direction=\"outbound\"",
            "workload=shop/frontend",
            &format!("peer={}:15008", ledger.ip),
            "peer_identity=\"spiffe://example.org/ns/shop/sa/ledger\"",
            // The pod's own address, not the loopback its connect was captured on, and the
            // pod it reached.
            &format!("src={}:", frontend.ip),
            "dst_workload=spiffe://example.org/ns/shop/sa/ledger",
        ],
    )
    .unwrap_or_else(|| panic!("n1 logs no outbound access line for frontend → ledger:\n{n1}"));
    println!("n1 (same node, calling side): {outbound}");

    // A pod on another node is expected to be exactly what the API says holds its address:
    // here the API says the pod at audit's address runs as `payments`, and audit presents
    // its own identity, so frontend's daemon refuses it before sending anything.
    let audit = add(&cluster, 1, "audit");
    let _audit = audit.serve(&["serve-tagged", "8080"]);
    cluster.edit_api_pod(&audit.uid, |record| {
        record["serviceAccountName"] = json!("payments")
    });
    let out = frontend.netprobe(&["expect-refused", &audit.ip, "8080"]);
    println!(
        "frontend → audit (the API says payments): {}",
        out.stdout.trim()
    );
    let n1 = cluster.logs(0);
    let mismatch = line_with(
        &n1,
        &[
            "refused: tunnel not opened",
            &format!("dst={}:8080", audit.ip),
            "spiffe://example.org/ns/shop/sa/payments",
            &format!("src={}:", frontend.ip),
            // The certificate frontend presented, named.
            "our_certificate=\"spiffe://example.org/ns/shop/sa/frontend serial ",
        ],
    )
    .unwrap_or_else(|| panic!("n1 did not refuse audit for not being payments:\n{n1}"));
    println!("n1: {mismatch}");
    assert!(
        !cluster.logs(1).contains(&format!("dst={}:8080", audit.ip)),
        "audit's daemon was sent a CONNECT"
    );

    // Policy by pod identity: batch may not call orders, and is told why.
    let out = batch.netprobe(&["expect-refused", &orders.ip, "8080"]);
    println!("batch → orders: {}", out.stdout.trim());
    let n2 = cluster.logs(1);
    let refused = line_with(
        &n2,
        &[
            "refused CONNECT",
            "src_identity=spiffe://example.org/ns/shop/sa/batch",
            "no policy allows spiffe://example.org/ns/shop/sa/batch to reach spiffe://example.org/ns/shop/sa/orders",
        ],
    )
    .unwrap_or_else(|| panic!("n2 did not refuse batch → orders by policy:\n{n2}"));
    println!("n2: {refused}");
    assert!(
        !n2.lines().any(|l| l.contains("tunnel::access")
            && l.contains("src_identity=spiffe://example.org/ns/shop/sa/batch")),
        "batch reached orders"
    );
}

/// Policy for the view's test: frontend may call audit.
const AUDIT_POLICY: &str = r#"
[[policy]]
action = "allow"
to = "spiffe://example.org/ns/shop/sa/audit"
from = ["spiffe://example.org/ns/shop/sa/frontend"]
"#;

/// The daemon knows other nodes' pods from a watch of the API, and keeps knowing them when
/// the API drops the watch, forgets the history a resume needs (410 Gone) or goes away: it
/// serves from its last view meanwhile and catches up with what changed.
#[test]
fn the_cluster_view_follows_the_api_through_dropped_watches_a_410_and_an_outage() {
    let cluster = Cluster::new("pods-view", AUDIT_POLICY);
    let frontend = add(&cluster, 0, "frontend");
    let audit = add(&cluster, 1, "audit");
    let _audit = audit.serve(&["serve-tagged", "8080"]);
    // Until `within`, calls frontend → audit until one gives `want` ("ok" or "refused").
    let until = |want: &str, within: Duration| -> Duration {
        let started = Instant::now();
        loop {
            let out = frontend.netprobe(&["fan-out", &audit.ip, "8080", "1"]);
            let ok = out.stdout.trim() == "ok=1 bad=0";
            if (want == "ok") == ok {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "frontend → audit not {want} within {within:?}: {} {}",
                out.stdout,
                out.stderr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    until("ok", SHORT);
    let api_says = |service_account: &str| {
        let service_account = service_account.to_string();
        cluster.edit_api_pod(&audit.uid, |record| {
            record["serviceAccountName"] = json!(service_account)
        });
    };

    // A changed service account reaches the view through the watch.
    api_says("payments");
    let took = until("refused", SHORT);
    println!("the API says audit runs as payments: refused after {took:?}");

    // The watch dropped (an API server restart): resumed from where it was, the change made
    // since is seen.
    cluster.api_control(0, "drop-watches");
    api_says("audit");
    let took = until("ok", SHORT);
    println!("after a dropped watch, audit as audit again: ok after {took:?}");

    // Away, and its history compacted meanwhile: the resume gets 410 Gone, and the view is
    // listed again, with the change made meanwhile.
    cluster.api_control(0, "pause 3");
    api_says("payments");
    cluster.api_control(0, "compact");
    let took = until("refused", Duration::from_secs(40));
    println!("after an outage and a 410, audit as payments: refused after {took:?}");
    let listed = cluster.logs(0).matches("pod view listed").count();
    println!("n1 listed the pods {listed} times");
    assert!(listed >= 2, "no relist after the 410:\n{}", cluster.logs(0));

    // The API away for 5 s: the last view serves, and what changed meanwhile is caught up.
    cluster.api_control(0, "pause 5");
    api_says("audit");
    let during = frontend.netprobe(&["expect-refused", &audit.ip, "8080"]);
    println!(
        "during the outage (the last view: payments): {}",
        during.stdout.trim()
    );
    assert!(
        during.stdout.starts_with("outcome=reset"),
        "{}",
        during.stdout
    );
    let took = until("ok", Duration::from_secs(40));
    println!("after the outage, the change made meanwhile applies: ok after {took:?}");
}

#[test]
fn failed_registration_fails_the_add_and_del_and_restart_keep_the_node_right() {
    let mut cluster = Cluster::new("pods-lifecycle", POLICY);
    let frontend = add(&cluster, 0, "frontend");
    let orders = add(&cluster, 1, "orders");
    let _orders = orders.serve(&["serve-tagged", "8080"]);
    let _frontend = frontend.serve(&["serve-tagged", "9090"]);
    let reached = || {
        let out = frontend.netprobe(&["first-line", &orders.ip, "8080"]);
        out.stdout.contains("port=8080")
    };
    assert!(reached(), "frontend → orders works before anything else");
    // And over IPv6 (connect6 → the pod's [::1]:15001, HBONE to the pod's IPv6 address).
    let out = frontend.netprobe(&["first-line", &orders.ip6, "8080"]);
    assert!(
        out.stdout.contains("port=8080"),
        "frontend → orders over IPv6: {out:?}"
    );
    let n2 = cluster.logs(1);
    let v6 = line_with(
        &n2,
        &[
            "tunnel::access",
            "src_identity=spiffe://example.org/ns/shop/sa/frontend",
            &format!("dst=[{}]:8080", orders.ip6),
        ],
    )
    .unwrap_or_else(|| panic!("n2 logs no IPv6 access line for frontend → orders:\n{n2}"));
    println!("n2 (IPv6): {v6}");
    // A figure, not a limit: new pod-to-pod connections across nodes, each timed from
    // connect to its first byte (pooled tunnel, a delivery socket made in the pod each).
    let latency = frontend.netprobe(&["latency", &orders.ip, "8080", "300"]);
    println!(
        "300 new connections frontend → orders: {}",
        latency.stdout.trim()
    );
    assert!(latency.stdout.contains("ok=300"), "{latency:?}");

    // Plaintext straight to a pod from outside the mesh (a process of the other node, not
    // captured) is refused in strict mode; the pod's own node (the kubelet's probes) gets
    // through.
    let plaintext_from_other_node = |cluster: &Cluster| {
        cluster.nodes[1]
            .host
            .command("python3")
            .arg(NETPROBE)
            .args(["expect-refused", &frontend.ip, "9090"])
            .output(LONG)
    };
    let out = plaintext_from_other_node(&cluster);
    println!("plaintext from n2 to frontend:9090: {}", out.stdout.trim());
    assert!(
        out.stdout.contains("outcome=reset") || out.stdout.contains("outcome=refused"),
        "plaintext reached the pod: {out:?}"
    );
    let logs = cluster.logs(0);
    assert!(
        line_with(
            &logs,
            &[
                "refused plaintext from another host",
                &format!("dst={}:9090", frontend.ip),
                "spiffe://example.org/ns/shop/sa/frontend is in strict mode",
            ]
        )
        .is_some(),
        "{logs}"
    );
    let v6 = cluster.nodes[1]
        .host
        .command("python3")
        .arg(NETPROBE)
        .args(["expect-refused", &frontend.ip6, "9090"])
        .output(LONG);
    println!(
        "plaintext from n2 to [frontend]:9090 over IPv6: {}",
        v6.stdout.trim()
    );
    assert!(
        v6.stdout.contains("outcome=reset") || v6.stdout.contains("outcome=refused"),
        "IPv6 plaintext reached the pod: {v6:?}"
    );
    let probe = cluster.nodes[0]
        .host
        .command("python3")
        .arg(NETPROBE)
        .args(["first-line", &frontend.ip, "9090"])
        .output(LONG);
    assert!(
        probe.stdout.contains("port=9090"),
        "the node's own probe: {probe:?}"
    );

    // A pod the API does not know: the daemon refuses, tunnel-cni fails the ADD (the
    // runtime would not start the pod), and nothing listens in its namespace.
    let (ghost, added) = cluster.add_pod(0, "shop", "ghost", None);
    let failure = added.expect_err("ADD of a pod the API does not know succeeded");
    println!("ADD of shop/ghost: {failure}");
    assert_eq!(failure.plugin, "tunnel-cni", "{failure}");
    assert!(
        failure.msg.contains("pods \"ghost\" not found"),
        "{failure}"
    );
    assert!(
        !ghost.listeners().contains(":15001") && !ghost.listeners().contains(":15008"),
        "{}",
        ghost.listeners()
    );

    // Only root may use the registration API.
    let n = &cluster.nodes[0];
    let nobody = n
        .host
        .command("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            TUNNEL,
            "pod",
            "list",
            "--socket",
        ])
        .arg(&n.socket)
        .output(SHORT);
    println!("tunnel pod list as nobody: {}", nobody.stderr.trim());
    assert!(!nobody.status.success(), "{nobody:?}");
    assert!(nobody.stderr.contains("Permission denied"), "{nobody:?}");

    // DEL: the pod's listeners, registration and record go; a second DEL succeeds.
    let ledger = add(&cluster, 0, "ledger");
    assert!(
        ledger.listeners().contains("127.0.0.1:15001"),
        "{}",
        ledger.listeners()
    );
    assert!(
        ledger.listeners().contains(&format!("{}:15008", ledger.ip)),
        "{}",
        ledger.listeners()
    );
    let records = || fs::read_dir(&cluster.nodes[0].state_dir).unwrap().count();
    assert_eq!(records(), 2, "frontend and ledger are recorded");
    cluster.del_pod(&ledger);
    assert_eq!(
        ledger.listeners().trim(),
        "",
        "listeners left in ledger after DEL"
    );
    assert!(!cluster.pod_cli(0, &["list"]).stdout.contains("ledger"));
    assert_eq!(records(), 1, "ledger's record is gone");
    cluster.del_pod(&ledger);

    // A pod whose namespace goes without a DEL (a runtime that crashed) is forgotten too.
    let vanishing = add(&cluster, 0, "vanishing");
    let vanishing_uid = vanishing.uid.clone();
    drop(vanishing); // `ip netns del`, and no CNI DEL
    let started = Instant::now();
    testbed::wait_until(
        Duration::from_secs(15),
        Duration::from_millis(200),
        || {
            !cluster
                .pod_cli(0, &["list"])
                .stdout
                .contains(&vanishing_uid)
        },
        || "the pod whose namespace vanished is still registered".into(),
    );
    println!(
        "a vanished namespace's pod forgotten after {:?}",
        started.elapsed()
    );
    assert_eq!(records(), 1, "its record is gone");

    // Restart: the daemon goes, the pod's captured connects are refused (never sent in
    // clear, never reaching orders); the new daemon takes the pod back from its records.
    let daemon = cluster.nodes[0].daemon.take().unwrap();
    daemon.signal("TERM");
    drop(daemon);
    let gap = frontend.netprobe(&["expect-refused", &orders.ip, "8080"]);
    println!(
        "frontend → orders with no daemon on n1: {}",
        gap.stdout.trim()
    );
    assert!(gap.stdout.contains("refused"), "{gap:?}");
    // The pod's steering is pinned: with no daemon, plaintext to it is dropped.
    let out = plaintext_from_other_node(&cluster);
    println!(
        "plaintext from n2 to frontend:9090 with no daemon on n1: {}",
        out.stdout.trim()
    );
    assert!(
        out.stdout.contains("outcome=reset") || out.stdout.contains("outcome=refused"),
        "plaintext reached the pod during the gap: {out:?}"
    );
    let started = Instant::now();
    cluster.start(0);
    cluster.nodes[0]
        .daemon
        .as_mut()
        .unwrap()
        .wait_for("pod taken back from the records", SHORT);
    let logs = cluster.logs(0);
    assert!(
        line_with(
            &logs,
            &["pod taken back from the records", "pod=shop/frontend"]
        )
        .is_some(),
        "{logs}"
    );
    assert!(reached(), "frontend → orders after the restart");
    println!("restart to first tunnelled call: {:?}", started.elapsed());
    let out = plaintext_from_other_node(&cluster);
    assert!(
        out.stdout.contains("outcome=reset") || out.stdout.contains("outcome=refused"),
        "plaintext reached the pod after the restart: {out:?}"
    );
}

#[test]
fn in_permissive_mode_plaintext_to_a_pod_passes_and_is_logged() {
    let cluster = Cluster::with(
        "pods-permissive",
        &Setup {
            mode: "permissive",
            policy: "",
            pod_certificates: None,
        },
    );
    let orders = add(&cluster, 1, "orders");
    let _orders = orders.serve(&["serve-tagged", "8080"]);
    let out = cluster.nodes[0]
        .host
        .command("python3")
        .arg(NETPROBE)
        .args(["first-line", &orders.ip, "8080"])
        .output(LONG);
    assert!(out.stdout.contains("port=8080"), "{out:?}");
    let logs = cluster.logs(1);
    let passed = line_with(
        &logs,
        &[
            "tunnel::access",
            "direction=\"inbound_plaintext\"",
            "dst_workload=spiffe://example.org/ns/shop/sa/orders",
            "src=10.0.0.1:",
        ],
    )
    .unwrap_or_else(|| panic!("n2 did not log the passed plaintext:\n{logs}"));
    println!("n2: {passed}");
}

#[test]
fn pod_certificates_can_come_from_files_laid_out_per_identity() {
    // The directory an outside issuer (cert-manager, SPIRE) would fill, one directory per
    // identity (the daemon makes it and watches it); the cluster's test CA stands in for the
    // issuer, writing elsewhere first so that only the copy into the directory is seen.
    let scratch = tempfile::tempdir().unwrap();
    let (certificates, staging) = (scratch.path().join("pods"), scratch.path().join("staging"));
    let cluster = Cluster::with(
        "pods-files",
        &Setup {
            mode: "strict",
            policy: POLICY,
            pod_certificates: Some(&format!("cert_dir = \"{}\"", certificates.display())),
        },
    );
    let issue = |sa: &str| {
        let issued = cluster.pki.issue(
            &format!("ns/shop/sa/{sa}"),
            staging.join(sa).to_str().unwrap(),
        );
        let dir = certificates.join(format!("ns/shop/sa/{sa}"));
        fs::create_dir_all(&dir).unwrap();
        for file in ["cert.pem", "key.pem"] {
            // Written then renamed, as an issuer replaces them.
            let next = dir.join(format!(".{file}.next"));
            fs::copy(issued.join(file), &next).unwrap();
            fs::rename(&next, dir.join(file)).unwrap();
        }
    };
    issue("frontend");
    issue("orders");
    let frontend = add(&cluster, 0, "frontend");
    let orders = add(&cluster, 1, "orders");
    let _orders = orders.serve(&["serve-tagged", "8080"]);
    let call = || frontend.netprobe(&["first-line", &orders.ip, "8080"]);
    assert!(
        call().stdout.contains("port=8080"),
        "frontend → orders with files"
    );

    // No files for the identity: the ADD fails, naming where they were looked for.
    let (_batch, added) = cluster.add_pod(0, "shop", "batch", Some("batch"));
    let failure = added.expect_err("ADD without a certificate succeeded");
    println!("ADD of batch without files: {}", failure.msg);
    assert!(
        failure.msg.contains("ns/shop/sa/batch/cert.pem"),
        "{failure}"
    );

    // A pod serves its HBONE listener with its certificate too: one without serverAuth (an
    // outside issuer's mistake) is refused at ADD, not found out by the first caller.
    let client_only = LeafSpec {
        extended_key_usages: vec![ExtendedKeyUsagePurpose::ClientAuth],
        ..LeafSpec::workload(
            &"spiffe://example.org/ns/shop/sa/ledger".parse().unwrap(),
            Duration::from_secs(3600),
        )
    };
    let issued = cluster
        .pki
        .issue_spec(&client_only, staging.join("ledger").to_str().unwrap());
    let ledger_dir = certificates.join("ns/shop/sa/ledger");
    fs::create_dir_all(&ledger_dir).unwrap();
    for file in ["cert.pem", "key.pem"] {
        fs::copy(issued.join(file), ledger_dir.join(file)).unwrap();
    }
    let (_ledger, added) = cluster.add_pod(0, "shop", "ledger", Some("ledger"));
    let failure = added.expect_err("ADD with a client-only certificate succeeded");
    println!(
        "ADD of ledger with a client-only certificate: {}",
        failure.msg
    );
    assert!(failure.msg.contains("serverAuth"), "{failure}");

    // A new certificate written over frontend's is taken without a restart.
    issue("frontend");
    let daemon = cluster.nodes[0].daemon.as_ref().unwrap();
    let replaced = daemon.wait_for_line(
        &["certificate replaced", "workload \"shop/frontend\""],
        SHORT,
    );
    println!("n1: {replaced}");
    assert!(
        call().stdout.contains("port=8080"),
        "frontend → orders after the rotation"
    );
    let _ = fs::remove_dir_all(&certificates);
}

/// The pod API holds at most 64 requests at once, each sent within 10 s: 70 clients that
/// connect and say nothing get 64 answers of "no request within 10s" and 6 closed
/// connections, a registration tool meanwhile is turned away, and the API serves again once
/// the silent ones have been answered.
#[test]
fn the_pod_api_bounds_silent_clients() {
    let cluster = Cluster::new("pods-api-bounds", "");
    let node = &cluster.nodes[0];
    let silent = r#"
import socket, sys, time
held = []
for _ in range(70):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    s.settimeout(20)
    held.append(s)
print("holding", len(held), flush=True)
answered = closed = 0
for s in held:
    try:
        line = s.makefile().readline()
    except OSError:
        line = ""
    if "no request within" in line:
        answered += 1
    elif line == "":
        closed += 1
print(f"answered={answered} closed={closed}", flush=True)
"#;
    let mut clients = node
        .host
        .command("python3")
        .args(["-c", silent])
        .arg(&node.socket)
        .spawn();
    clients.wait_for("holding", SHORT);
    std::thread::sleep(Duration::from_millis(300));
    let turned_away = cluster.pod_cli(0, &["list"]);
    println!(
        "tunnel pod list while 64 silent clients hold the API: {}",
        turned_away.stderr.trim()
    );
    assert!(!turned_away.status.success(), "{turned_away:?}");
    assert!(
        clients.wait_timeout(LONG).is_some(),
        "the silent clients were never answered"
    );
    let counts = clients.stdout();
    println!("70 silent clients: {}", counts.trim());
    assert!(counts.contains("answered=64 closed=6"), "{counts}");
    let list = cluster.pod_cli(0, &["list"]);
    assert!(list.status.success(), "the API serves again: {list:?}");
}

/// Policy for the enrolment test: frontend may call every pod.
const FRONTEND_CALLS_ALL: &str = r#"
[[policy]]
action = "allow"
from = ["spiffe://example.org/ns/shop/sa/frontend"]
"#;

/// How many pods a node runs before its daemon starts.
const RUNNING: usize = 20;

/// The DaemonSet installed into a running cluster: node n1's pods were made before any
/// daemon ran there (their conflist had no tunnel-cni), so none is registered; the daemon
/// finds them from the cluster view and the node's processes, and serves every one, in
/// strict mode, without restarting any. Two that cannot be enrolled are said and counted. A
/// daemon restarted without its state directory finds them again.
#[test]
fn a_daemon_started_after_its_pods_enrols_every_one_without_a_restart() {
    let mut cluster = Cluster::with_daemons(
        "pods-enrol",
        &Setup {
            mode: "strict",
            policy: FRONTEND_CALLS_ALL,
            pod_certificates: None,
        },
        &[1],
    );
    let frontend = add(&cluster, 1, "frontend");
    let started = Instant::now();
    // Half in the kubelet's cgroupfs layout, half in its systemd layout.
    let pods: Vec<_> = (0..RUNNING)
        .map(|i| cluster.add_running_pod(0, &format!("existing-{i}"), i % 2 == 1))
        .collect();
    // Two that cannot be enrolled: a pod whose sandbox process is gone, and one whose
    // namespace does not hold the address the API gives it.
    let mut gone = cluster.add_running_pod(0, "gone", false);
    drop(gone.pause.take());
    let moved = cluster.add_running_pod(0, "moved", true);
    cluster.edit_api_pod(&moved.uid, |record| {
        record["podIP"] = json!("10.1.1.250");
        record["podIPs"] = json!(["10.1.1.250"]);
    });
    println!(
        "{} pods running on n1 with no daemon, made in {:?}",
        RUNNING + 2,
        started.elapsed()
    );
    let called = &pods[3];
    let _server = called.serve(&["serve-tagged", "8080"]);
    let plaintext_from_n2 = |cluster: &Cluster, pod: &cluster::Pod, command: &str| {
        cluster.nodes[1]
            .host
            .command("python3")
            .arg(NETPROBE)
            .args([command, &pod.ip, "8080"])
            .output(LONG)
    };
    // Before the daemon, plaintext reaches the pod: the test would see it get through.
    let before = plaintext_from_n2(&cluster, called, "first-line");
    assert_eq!(before.stdout.trim(), "port=8080", "{before:?}");

    let start = Instant::now();
    cluster.start(0);
    let summary = cluster.nodes[0]
        .daemon
        .as_ref()
        .unwrap()
        .wait_for_line(&["pods already running on this node enrolled"], SHORT);
    println!(
        "n1 started: {summary} ({:?} from the start)",
        start.elapsed()
    );
    let logs = cluster.logs(0);
    if let Some(scan) = line_with(&logs, &["the node's processes read for pods to enrol"]) {
        println!("n1: {scan}");
    }
    assert!(
        summary.contains(&format!("enrolled={RUNNING} failed=2")),
        "{summary}
{}",
        cluster.logs(0)
    );
    let check_enrolled = |cluster: &Cluster| {
        let logs = cluster.logs(0);
        let list = cluster.pod_cli(0, &["list"]).stdout;
        for pod in &pods {
            let id = format!("identity=spiffe://example.org/ns/shop/sa/{}", pod.name);
            assert!(
                line_with(&list, &[&format!("shop/{} uid={}", pod.name, pod.uid), &id]).is_some(),
                "{} not registered:
{list}",
                pod.name
            );
            assert!(
                line_with(
                    &logs,
                    &["running pod enrolled", &format!("pod=shop/{}", pod.name)]
                )
                .is_some(),
                "{logs}"
            );
        }
        assert!(!list.contains("shop/gone") && !list.contains("shop/moved"));
        let no_process = line_with(
            &logs,
            &[
                "running pod not enrolled",
                "pod=shop/gone",
                &format!("uid={}", gone.uid),
                "reason=no_process",
            ],
        )
        .unwrap_or_else(|| {
            panic!(
                "no line for shop/gone:
{logs}"
            )
        });
        let not_its_address = line_with(
            &logs,
            &[
                "running pod not enrolled",
                "pod=shop/moved",
                &format!("uid={}", moved.uid),
                "reason=address_not_in_netns",
                &format!("holds {}", moved.ip),
            ],
        )
        .unwrap_or_else(|| {
            panic!(
                "no line for shop/moved:
{logs}"
            )
        });
        let metrics = admin_get(&cluster.nodes[0].host, "/metrics");
        let enrolments: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("tunnel_pod_enrolments_total{"))
            .collect();
        let mut expected = vec![
            format!("tunnel_pod_enrolments_total{{result=\"enrolled\"}} {RUNNING}"),
            "tunnel_pod_enrolments_total{result=\"failed\",reason=\"no_process\"} 1".into(),
            "tunnel_pod_enrolments_total{result=\"failed\",reason=\"address_not_in_netns\"} 1"
                .into(),
        ];
        let mut found: Vec<String> = enrolments.iter().map(ToString::to_string).collect();
        expected.sort();
        found.sort();
        assert_eq!(found, expected, "{metrics}");
        (
            no_process.to_string(),
            not_its_address.to_string(),
            enrolments.join("\n"),
        )
    };
    let (no_process, not_its_address, counted) = check_enrolled(&cluster);
    println!("n1: {no_process}\nn1: {not_its_address}\nn1 /metrics:\n{counted}");

    // A pod of n2 calls an enrolled pod: tunnelled, expecting and getting its exact identity.
    let call = || frontend.netprobe(&["first-line", &called.ip, "8080"]);
    let out = call();
    assert_eq!(out.stdout.trim(), "port=8080", "{out:?}");
    let outbound = line_with(
        &cluster.logs(1),
        &[
            "direction=\"outbound\"",
            "workload=shop/frontend",
            &format!("peer={}:15008", called.ip),
            "peer_identity=\"spiffe://example.org/ns/shop/sa/existing-3\"",
        ],
    )
    .unwrap_or_else(|| {
        panic!(
            "n2 logs no outbound line to existing-3:\n{}",
            cluster.logs(1)
        )
    })
    .to_string();
    let inbound = line_with(
        &cluster.logs(0),
        &[
            "tunnel::access",
            "direction=\"inbound\"",
            "src_identity=spiffe://example.org/ns/shop/sa/frontend",
            "dst_workload=spiffe://example.org/ns/shop/sa/existing-3",
        ],
    )
    .unwrap_or_else(|| {
        panic!(
            "n1 logs no inbound line to existing-3:\n{}",
            cluster.logs(0)
        )
    })
    .to_string();
    println!("n2: {outbound}\nn1: {inbound}");

    // Plaintext from the other node to every enrolled pod: refused (strict).
    let refused_all = |cluster: &Cluster| {
        let took = Instant::now();
        for pod in &pods {
            let out = plaintext_from_n2(cluster, pod, "expect-refused");
            assert!(
                out.stdout.starts_with("outcome=reset"),
                "plaintext to {}: {out:?}",
                pod.name
            );
        }
        let logs = cluster.logs(0);
        for pod in &pods {
            assert!(
                line_with(
                    &logs,
                    &[
                        "refused plaintext from another host",
                        &format!("dst={}:8080", pod.ip),
                        "is in strict mode",
                    ]
                )
                .is_some(),
                "{logs}"
            );
        }
        took.elapsed()
    };
    let took = refused_all(&cluster);
    println!(
        "plaintext from n2 to each of the {RUNNING} enrolled pods: reset, logged as refused ({took:?})"
    );

    // Restarted without its state directory: it finds them again.
    cluster.stop(0);
    fs::remove_dir_all(&cluster.nodes[0].state_dir).unwrap();
    cluster.start(0);
    let summary = cluster.nodes[0]
        .daemon
        .as_ref()
        .unwrap()
        .wait_for_line(&["pods already running on this node enrolled"], SHORT);
    println!("n1 restarted without its state directory: {summary}");
    check_enrolled(&cluster);
    assert_eq!(call().stdout.trim(), "port=8080");
    refused_all(&cluster);
    println!("the whole test: {:?}", started.elapsed());
}

/// A rolling update with surge: the new daemon starts beside the running one (their
/// listeners share the ports), takes the pods back and becomes ready; only then is the old
/// one stopped. Pod traffic runs throughout, every connection counted.
#[test]
fn a_new_daemon_takes_over_a_node_beside_the_old_one() {
    let mut cluster = Cluster::new("pods-takeover", POLICY);
    let frontend = add(&cluster, 0, "frontend");
    let orders = add(&cluster, 1, "orders");
    let _orders = orders.serve(&["serve-tagged", "8080"]);
    let mut load = frontend
        .command("python3")
        .arg(NETPROBE)
        .args(["load", &orders.ip, "8080", "12", "4", "3"])
        .spawn();
    load.wait_for("started", SHORT);
    std::thread::sleep(Duration::from_secs(2));
    let new = cluster.spawn_daemon(0);
    let taken = new.wait_for_line(
        &["pod taken back from the records", "pod=shop/frontend"],
        SHORT,
    );
    println!("new daemon: {taken}");
    // The old one drains and exits (as the kubelet stops it once the new pod is ready).
    let mut old = cluster.nodes[0].daemon.take().unwrap();
    old.signal("TERM");
    assert!(
        old.wait_timeout(LONG).is_some(),
        "the old daemon did not exit"
    );
    let socket = &cluster.nodes[0].socket;
    assert!(
        socket.exists(),
        "the old daemon removed the new one's pod API socket"
    );
    cluster.nodes[0].daemon = Some(new);
    // Registrations reach the new daemon.
    let ledger = add(&cluster, 0, "ledger");
    assert!(cluster.pod_cli(0, &["list"]).stdout.contains(&ledger.uid));
    assert!(load.wait_timeout(LONG).is_some(), "the load did not finish");
    let counts = load.stdout();
    println!("pod traffic across the takeover: {}", counts.trim());
    assert!(
        counts.contains("short_failed=0"),
        "{counts}\n{}",
        load.stderr()
    );
    assert!(
        counts.contains("long_failed=0"),
        "{counts}\n{}",
        load.stderr()
    );
    assert!(counts.contains("corrupted_bytes=0"), "{counts}");
}

#[test]
fn five_hundred_pods_added_and_deleted_leave_nothing_behind() {
    const CYCLES: usize = 500;
    let cluster = Cluster::new(
        "pods-churn",
        r#"
[[policy]]
action = "allow"
to = "spiffe://example.org/ns/shop/sa/echo"
"#,
    );
    let node = &cluster.nodes[0];
    let pid = node.daemon.as_ref().unwrap().pid();
    // Every churned pod calls this one, so each cycle also opens (and must let go of) a
    // pooled tunnel connection from inside the pod, a captured socket's map entry, and an
    // inbound connection.
    let echo = add(&cluster, 0, "echo");
    let _echo = echo.serve(&["serve-tagged", "8080"]);
    let cycle = |name: &str| {
        let pod = add(&cluster, 0, name);
        let out = pod.netprobe(&["first-line", &echo.ip, "8080"]);
        assert!(out.stdout.contains("port=8080"), "{name} → echo: {out:?}");
        cluster.del_pod(&pod);
    };
    // One pod first, so that what the first registration allocates once (the namespace
    // thread, the runtime's buffers) is not counted as growth.
    cycle("warmup");
    let before = process_figures(pid);
    let maps_before = map_entries(node);
    let tasks_before = alive_tasks(node);
    let started = Instant::now();
    for i in 0..CYCLES {
        cycle(&format!("churn-{i}"));
    }
    let elapsed = started.elapsed();
    // Pooled and accepted connections close on their own schedule; give the last ones a
    // moment.
    std::thread::sleep(Duration::from_millis(500));
    let after = process_figures(pid);
    let maps_after = map_entries(node);
    let tasks_after = alive_tasks(node);
    println!(
        "{CYCLES} cycles of CNI ADD, a tunnelled call, CNI DEL in {elapsed:.1?} ({:.0} ms each)\n  fds: {} → {}\n  threads: {} → {}\n  RSS: {} KiB → {} KiB\n  runtime tasks: {tasks_before} → {tasks_after}\n  capture map entries: {maps_before} → {maps_after}",
        elapsed.as_millis() as f64 / CYCLES as f64,
        before.0,
        after.0,
        before.1,
        after.1,
        before.2,
        after.2
    );
    let list = cluster.pod_cli(0, &["list"]);
    assert_eq!(
        list.stdout.matches("uid=").count(),
        1,
        "only echo is left: {list:?}"
    );
    assert_eq!(
        fs::read_dir(&node.state_dir).unwrap().count(),
        1,
        "records left behind"
    );
    assert!(
        after.0 <= before.0 + 2,
        "fds grew: {} → {}",
        before.0,
        after.0
    );
    assert_eq!(after.1, before.1, "threads");
    assert_eq!(tasks_after, tasks_before, "runtime tasks");
    assert_eq!(maps_before, maps_after, "capture map entries");
    let pins = cluster.testbed.bpf_dir("n1").join("pods");
    let pinned = fs::read_dir(&pins).map_or(0, |d| d.count());
    println!("  pinned pod steering links: {pinned} (echo's)");
    assert_eq!(
        pinned,
        1,
        "steering links left pinned in {}",
        pins.display()
    );
    assert!(
        after.2 < before.2 + 16 * 1024,
        "RSS grew by more than 16 MiB over {CYCLES} pods: {} → {} KiB",
        before.2,
        after.2
    );
}
