//! Kubernetes Services end to end, on the cluster of `tests/support/cluster.rs` (two nodes,
//! dual-stack pods, the API answered by a stand-in that serves Services and EndpointSlices
//! with their real shapes and watch protocol): a pod's connection to a ClusterIP is
//! captured, resolved by its node's daemon to one of the Service's ready endpoints, and
//! tunnelled to that pod, whose identity is checked. No kube-proxy runs here, so a
//! ClusterIP reaches nothing unless the daemon resolves it.

#[path = "support/cluster.rs"]
#[allow(
    dead_code,
    reason = "the cluster's helpers are shared with tests/pods.rs"
)]
mod cluster;
mod support;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use cluster::{Cluster, Pod, add, line_with};
use serde_json::{Value, json};
use support::{LONG, NETPROBE, SHORT};

/// frontend may call the orders pods (service account `orders`); nobody else may call
/// anyone.
const POLICY: &str = r#"
[[policy]]
action = "allow"
to = "spiffe://example.org/ns/shop/sa/orders"
from = ["spiffe://example.org/ns/shop/sa/frontend"]
"#;

const ORDERS_V4: &str = "10.96.0.10";
const ORDERS_V6: &str = "fd00:96::10";
const SOLO: &str = "10.96.0.12";
const EMPTY: &str = "10.96.0.11";

/// A Service as a user writes it (the stand-in fills in what the API server would).
fn service(name: &str, cluster_ips: &[&str]) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "namespace": "shop", "name": name, "uid": format!("svc-{name}") },
        "spec": {
            "clusterIP": cluster_ips[0],
            "clusterIPs": cluster_ips,
            "selector": { "app": name },
            "ports": [{ "name": "http", "port": 80, "targetPort": "web" }],
        },
    })
}

/// An EndpointSlice of `service` as the EndpointSlice controller writes it: the named
/// target port resolved to 8080, each pod ready on its node.
fn slice(service: &str, family: &str, pods: &[&Pod]) -> Value {
    let endpoints: Vec<Value> = pods
        .iter()
        .map(|pod| {
            let ip = if family == "IPv6" { &pod.ip6 } else { &pod.ip };
            json!({
                "addresses": [ip],
                "conditions": { "ready": true, "serving": true, "terminating": false },
                "nodeName": format!("n{}", pod.node + 1),
                "targetRef": { "kind": "Pod", "namespace": "shop", "name": pod.name, "uid": pod.uid },
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "namespace": "shop",
            "name": format!("{service}-{}", family.to_lowercase()),
            "uid": format!("slice-{service}-{family}"),
            "labels": { "kubernetes.io/service-name": service },
        },
        "addressType": family,
        "endpoints": endpoints,
        "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
    })
}

fn orders_slices(pods: &[&Pod]) -> Vec<Value> {
    vec![slice("orders", "IPv4", pods), slice("orders", "IPv6", pods)]
}

/// `netprobe http-calls`' answer.
fn calls(pod: &Pod, host: &str, port: &str, n: usize, gap_ms: u64) -> Value {
    let out = pod.netprobe(&[
        "http-calls",
        host,
        port,
        &n.to_string(),
        &gap_ms.to_string(),
    ]);
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

/// Calls until the daemon's view has the change the test just made (the watch carries it
/// within milliseconds; this bounds the wait).
fn until_served(pod: &Pod, host: &str, port: &str, by: impl Fn(&Value) -> bool) {
    until_served_within(pod, host, port, SHORT, by);
}

/// [`until_served`] with a bound of its own; how long it took.
fn until_served_within(
    pod: &Pod,
    host: &str,
    port: &str,
    within: Duration,
    by: impl Fn(&Value) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let answer = calls(pod, host, port, 1, 0);
        if by(&answer) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "never served as expected: {answer}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn a_service_is_balanced_over_its_endpoints_fails_over_and_refuses_with_none() {
    let cluster = Cluster::new("services", POLICY);
    let frontend = add(&cluster, 0, "frontend");
    let endpoint = |node: usize, name: &str| {
        let (pod, added) = cluster.add_pod(node, "shop", name, Some("orders"));
        added.unwrap_or_else(|e| panic!("ADD of {name}: {e}"));
        pod
    };
    let orders_a = endpoint(0, "orders-a");
    let orders_b = endpoint(1, "orders-b");
    let orders_c = endpoint(1, "orders-c");
    let a = orders_a.serve(&["serve-http", "8080", "orders-a"]);
    let _b = orders_b.serve(&["serve-http", "8080", "orders-b"]);
    let _c = orders_c.serve(&["serve-http", "8080", "orders-c"]);
    let everyone = [&orders_a, &orders_b, &orders_c];
    cluster.set_api_services(&[
        service("orders", &[ORDERS_V4, ORDERS_V6]),
        service("empty", &[EMPTY]),
        service("solo", &[SOLO]),
    ]);
    let mut slices = orders_slices(&everyone);
    slices.push(slice("solo", "IPv4", &[&orders_b]));
    cluster.set_api_slices(&slices);
    until_served(&frontend, ORDERS_V4, "80", |a| a["ok"] == 1);

    // 300 calls to the ClusterIP spread over the three endpoints on both nodes, and only
    // the tunnel port crosses the node link.
    let link =
        cluster.nodes[1]
            .host
            .capture("eth0", "tcp", cluster.testbed.dir().join("node-link.pcap"));
    let spread = calls(&frontend, ORDERS_V4, "80", 300, 0);
    let packets = link.stop();
    let by: BTreeMap<String, u64> = serde_json::from_value(spread["by"].clone()).unwrap();
    println!(
        "300 calls to http://{ORDERS_V4}:80/: ok={} failed={} by endpoint {by:?}",
        spread["ok"], spread["failed"]
    );
    assert_eq!(spread["ok"], 300, "{spread}");
    assert_eq!(by.len(), 3, "every endpoint is used: {by:?}");
    assert!(
        by.values().all(|n| *n >= 60),
        "each gets at least 20%: {by:?}"
    );
    assert!(
        packets.packet_count() > 0,
        "calls to n2's endpoints crossed the link"
    );
    assert_eq!(
        packets.packets_not_matching("tcp port 15008"),
        0,
        "only HBONE crosses the node link ({})",
        packets.path().display()
    );
    let n1 = cluster.logs(0);
    let outbound = line_with(
        &n1,
        &[
            "direction=\"outbound\"",
            &format!("dst={ORDERS_V4}:80"),
            "dst_service=shop/orders",
            &format!("upstream={}:8080", orders_b.ip),
            "dst_workload=spiffe://example.org/ns/shop/sa/orders",
        ],
    )
    .unwrap_or_else(|| panic!("n1 logs no outbound line to orders-b through the Service:\n{n1}"));
    println!("n1 (caller): {outbound}");
    let n2 = cluster.logs(1);
    let inbound = line_with(
        &n2,
        &[
            "direction=\"inbound\"",
            "src_identity=spiffe://example.org/ns/shop/sa/frontend",
            "dst_service=shop/orders",
            &format!("src={}:", frontend.ip),
        ],
    )
    .unwrap_or_else(|| panic!("n2 logs no inbound line naming the Service:\n{n2}"));
    println!("n2 (receiver): {inbound}");

    // A Service with no endpoint: refused at once, and said.
    let refused = frontend.netprobe(&["expect-refused", EMPTY, "80"]);
    println!(
        "frontend → {EMPTY}:80 (no endpoint): {}",
        refused.stdout.trim()
    );
    assert!(refused.stdout.contains("outcome=reset"), "{refused:?}");
    let ms: u64 = refused
        .stdout
        .trim()
        .rsplit("ms=")
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(ms < 1000, "{refused:?}");
    let n1 = cluster.logs(0);
    let said = line_with(&n1, &["refused: Service shop/empty has no ready endpoint"])
        .unwrap_or_else(|| panic!("n1 does not name the Service it refused:\n{n1}"));
    println!("n1: {said}");

    // Dual stack: the IPv6 ClusterIP reaches the same pods, each checked for its exact
    // identity; an IPv6 pod address on the other node too.
    let v6 = calls(&frontend, ORDERS_V6, "80", 30, 0);
    println!(
        "30 calls to http://[{ORDERS_V6}]:80/: ok={} by {}",
        v6["ok"], v6["by"]
    );
    assert_eq!(v6["ok"], 30, "{v6}");
    let direct_v6 = calls(&frontend, &orders_b.ip6, "8080", 1, 0);
    assert_eq!(direct_v6["by"]["orders-b"], 1, "{direct_v6}");
    let n1 = cluster.logs(0);
    for needles in [
        [
            format!("dst=[{ORDERS_V6}]:80"),
            format!("upstream=[{}]:8080", orders_c.ip6),
        ],
        [
            format!("dst=[{}]:8080", orders_b.ip6),
            "dst_service=-".to_string(),
        ],
    ] {
        let mut needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        needles.extend([
            "direction=\"outbound\"",
            "dst_workload=spiffe://example.org/ns/shop/sa/orders",
            "peer_identity=\"spiffe://example.org/ns/shop/sa/orders\"",
        ]);
        let line = line_with(&n1, &needles)
            .unwrap_or_else(|| panic!("n1 logs no IPv6 line with {needles:?}:\n{n1}"));
        println!("n1 (IPv6): {line}");
    }

    // The added cost of a ClusterIP: calls through a one-endpoint Service vs to that pod's
    // address, alternating in rounds so both see the same machine.
    let (mut service_times, mut pod_times) = (Vec::new(), Vec::new());
    for _ in 0..4 {
        service_times.push(calls(&frontend, SOLO, "80", 100, 0));
        pod_times.push(calls(&frontend, &orders_b.ip, "8080", 100, 0));
    }
    let quantiles = |runs: &[Value]| {
        let p = |key: &str| {
            let mut v: Vec<f64> = runs.iter().map(|r| r[key].as_f64().unwrap()).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        (p("p50_ms"), p("p99_ms"))
    };
    let (service_p50, service_p99) = quantiles(&service_times);
    let (pod_p50, pod_p99) = quantiles(&pod_times);
    println!(
        "connect-to-response, 4 rounds of 100 calls each (median of the rounds): ClusterIP \
         p50 {service_p50} ms p99 {service_p99} ms; pod IP p50 {pod_p50} ms p99 {pod_p99} ms; \
         added p50 {:.2} ms p99 {:.2} ms",
        service_p50 - pod_p50,
        service_p99 - pod_p99
    );

    // Endpoints go mid-load. orders-c leaves the EndpointSlice (its pod being deleted; its
    // server still answers): new calls stop reaching it. Then orders-a's server dies while
    // its slice entry stays (a crash the API has not seen yet): calls picked for it are
    // refused by its node and tried on another endpoint. No call fails, and strict mode
    // holds (only HBONE on the node link).
    let link =
        cluster.nodes[1]
            .host
            .capture("eth0", "tcp", cluster.testbed.dir().join("failover.pcap"));
    let mut load = frontend
        .command("python3")
        .arg(NETPROBE)
        .args(["http-calls", ORDERS_V4, "80", "250", "20"])
        .spawn();
    std::thread::sleep(Duration::from_millis(1500));
    let mut slices = orders_slices(&[&orders_a, &orders_b]);
    slices.push(slice("solo", "IPv4", &[&orders_b]));
    cluster.set_api_slices(&slices);
    let updated = now();
    std::thread::sleep(Duration::from_millis(1500));
    drop(a);
    let crashed = now();
    load.wait_timeout(LONG).expect("the load finishes");
    let packets = link.stop();
    let result: Value = serde_json::from_str(load.stdout().trim())
        .unwrap_or_else(|e| panic!("{e}: {}", load.logs()));
    let made: Vec<(f64, String)> = serde_json::from_value(result["calls"].clone()).unwrap();
    let last_served_by = |name: &str| {
        made.iter()
            .filter(|(_, by)| by == name)
            .map(|(at, _)| *at)
            .fold(f64::MIN, f64::max)
    };
    let between = |from: f64, to: f64| {
        made.iter().filter(|(at, _)| *at > from && *at <= to).fold(
            BTreeMap::<&str, usize>::new(),
            |mut by, (_, name)| {
                *by.entry(name.as_str()).or_default() += 1;
                by
            },
        )
    };
    let n1 = cluster.logs(0);
    let retried: Vec<&str> = n1
        .lines()
        .filter(|l| l.contains("Service endpoint not reached; trying another"))
        .collect();
    println!(
        "failover under load (250 calls, 20 ms apart): ok={} failed={}",
        result["ok"], result["failed"]
    );
    println!(
        "  orders-c removed from the slice: last served {:+.3} s from the update; calls in the \
         1.5 s after it by endpoint {:?}",
        last_served_by("orders-c") - updated,
        between(updated, crashed)
    );
    println!(
        "  orders-a's server killed, its slice entry kept: calls after it by endpoint {:?}; {} \
         attempts retried on another endpoint",
        between(crashed, f64::MAX),
        retried.len()
    );
    if let Some(first) = retried.first() {
        println!("n1: {first}");
    }
    assert_eq!(result["failed"], 0, "{result}");
    assert!(
        last_served_by("orders-c") < updated + 2.0,
        "orders-c still served 2 s after its slice entry went"
    );
    assert!(
        !retried.is_empty(),
        "no call was picked for the dead orders-a"
    );
    assert!(
        retried
            .iter()
            .all(|l| l.contains(&format!("endpoint={}:8080", orders_a.ip))),
        "only orders-a failed: {retried:#?}"
    );
    assert_eq!(
        packets.packets_not_matching("tcp port 15008"),
        0,
        "only HBONE crossed the node link during the failover ({})",
        packets.path().display()
    );

    // The watches dropped without a goodbye (an API server that crashed): resumed, and a
    // change made since is seen. orders-c comes back; the dead orders-a goes.
    cluster.api_control(0, "drop-watches abrupt");
    let mut slices = orders_slices(&[&orders_b, &orders_c]);
    slices.push(slice("solo", "IPv4", &[&orders_b]));
    cluster.set_api_slices(&slices);
    let took = until_served_within(&frontend, ORDERS_V4, "80", SHORT, |a| {
        a["by"]["orders-c"] == 1
    });
    println!("watches cut: orders-c back in the slice, served after {took:.2?}");

    // The API away for 30 s, its history compacted meanwhile (the resume gets 410 Gone and
    // lists again): the last view serves throughout, and the change made meanwhile is
    // caught up after.
    cluster.api_control(0, "pause 30");
    let away = Instant::now();
    let mut slices = orders_slices(&[&orders_b]);
    slices.push(slice("solo", "IPv4", &[&orders_b]));
    cluster.set_api_slices(&slices);
    cluster.api_control(0, "compact");
    let during = calls(&frontend, ORDERS_V4, "80", 40, 0);
    println!(
        "API away: 40 calls from the last view: ok={} by {}",
        during["ok"], during["by"]
    );
    assert_eq!(during["ok"], 40, "the last view serves: {during}");
    assert!(
        during["by"]["orders-c"].as_u64().unwrap_or(0) > 0,
        "the change made while away is not seen before the API is back: {during}"
    );
    until_served_within(&frontend, ORDERS_V4, "80", Duration::from_secs(90), |_| {
        let batch = calls(&frontend, ORDERS_V4, "80", 20, 0);
        batch["by"]["orders-b"] == 20
    });
    println!(
        "API back after 30 s with its history compacted: orders-c gone from the view {:.1?} \
         after the outage began; slices listed {} times",
        away.elapsed(),
        cluster
            .logs(0)
            .matches("service view listed its EndpointSlices")
            .count()
    );
    assert!(
        cluster
            .logs(0)
            .matches("service view listed its EndpointSlices")
            .count()
            >= 2,
        "no relist after the 410"
    );
}

/// Figures, not limits: how long a daemon takes to its first complete view of a cluster of
/// 10,000 dual-stack pods and 1,000 Services (10 endpoints each, 1,000 EndpointSlices),
/// and what holding that view costs it in resident memory, against the same daemon on an
/// empty cluster.
#[test]
fn the_first_sync_of_10000_pods_and_1000_services() {
    let mut cluster = Cluster::new("service-view-figures", "");
    let synced = |cluster: &mut Cluster| {
        let started = Instant::now();
        cluster.start(0);
        let daemon = cluster.nodes[0].daemon.as_mut().unwrap();
        daemon.wait_for("cluster view synced", LONG);
        let elapsed = started.elapsed();
        // The watches' first events and the list's buffers settle.
        std::thread::sleep(Duration::from_millis(500));
        let (_, _, rss_kib) = cluster::process_figures(daemon.pid());
        let line = line_with(&daemon.logs(), &["cluster view synced"])
            .unwrap()
            .to_string();
        (elapsed, rss_kib, line)
    };
    let (empty_time, empty_rss, _) = synced(&mut cluster);

    let ip = |i: u32| {
        let [_, _, hi, lo] = i.to_be_bytes();
        (format!("10.64.{hi}.{lo}"), format!("fd64::{hi:x}:{lo:x}"))
    };
    let pods: Vec<Value> = (0..10_000u32)
        .map(|i| {
            let (v4, v6) = ip(i);
            json!({
                "namespace": format!("team-{}", i % 50), "name": format!("pod-{i}"),
                "uid": format!("5e1c2a9e-1b7e-4c1e-9d7a-{i:012}"),
                "serviceAccountName": format!("service-{}", i / 10), "nodeName": "n9",
                "podIP": v4, "podIPs": [v4, v6],
            })
        })
        .collect();
    std::fs::write(&cluster.api_pods, serde_json::to_vec(&pods).unwrap()).unwrap();
    let services: Vec<Value> = (0..1000u32)
        .map(|i| {
            let [_, _, hi, lo] = i.to_be_bytes();
            json!({
                "metadata": { "namespace": format!("team-{}", i % 50), "name": format!("service-{i}"), "uid": format!("svc-{i}") },
                "spec": {
                    "clusterIP": format!("10.96.{hi}.{lo}"),
                    "ports": [{ "name": "http", "port": 80, "targetPort": 8080 }],
                },
            })
        })
        .collect();
    cluster.set_api_services(&services);
    let slices: Vec<Value> = (0..1000u32)
        .map(|i| {
            let endpoints: Vec<Value> = (0..10)
                .map(|j| {
                    json!({
                        "addresses": [ip(i * 10 + j).0],
                        "conditions": { "ready": true },
                        "nodeName": "n9",
                        "targetRef": { "kind": "Pod", "name": format!("pod-{}", i * 10 + j) },
                    })
                })
                .collect();
            json!({
                "metadata": {
                    "namespace": format!("team-{}", i % 50), "name": format!("service-{i}-abcde"),
                    "uid": format!("slice-{i}"),
                    "labels": { "kubernetes.io/service-name": format!("service-{i}") },
                },
                "addressType": "IPv4",
                "endpoints": endpoints,
                "ports": [{ "name": "http", "port": 8080 }],
            })
        })
        .collect();
    cluster.set_api_slices(&slices);
    let (full_time, full_rss, line) = synced(&mut cluster);
    println!("{line}");
    assert!(
        line.contains("pods=10000")
            && line.contains("services=1000")
            && line.contains("endpoints=10000"),
        "the view holds the whole cluster: {line}"
    );
    println!(
        "a daemon's start to its first complete view: empty cluster {empty_time:.2?}, RSS {empty_rss} KiB; \
         10,000 dual-stack pods and 1,000 Services with 10,000 endpoints {full_time:.2?}, RSS {full_rss} KiB \
         (+{} KiB for the view, the watches and their buffers)",
        full_rss.saturating_sub(empty_rss)
    );
}
