//! The soak: the two-node pod cluster of `tests/support/cluster.rs` under mixed traffic for
//! `TUNNEL_SOAK_MINUTES` (default 3), while certificates renew every 10 s, the policy is
//! reloaded, pods come and go, and either node's daemon is killed -9 and started again.
//! Asserts no corrupted byte, nothing but HBONE on the node link, and each node's
//! footprint (RSS, fds, runtime tasks, capture map entries, pooled connections) back where
//! it was once the traffic stops. Run by `cargo xtask soak --minutes N` (ignored by the
//! normal suite: it runs for minutes).

#[path = "support/cluster.rs"]
#[allow(
    dead_code,
    reason = "the cluster's helpers are shared with tests/pods.rs"
)]
mod cluster;
mod support;

use std::{
    fs,
    time::{Duration, Instant},
};

use cluster::{Cluster, Node, add, alive_tasks, map_entries, process_figures};
use support::{LONG, NETPROBE, SHORT, admin_get};

/// frontend (n1) may call orders (n2), and reports (n2) may call ledger (n1): traffic both
/// ways across the node link.
const POLICY: &str = r#"
[[policy]]
action = "allow"
to = "spiffe://example.org/ns/shop/sa/orders"
from = ["spiffe://example.org/ns/shop/sa/frontend"]

[[policy]]
action = "allow"
to = "spiffe://example.org/ns/shop/sa/ledger"
from = ["spiffe://example.org/ns/shop/sa/reports"]
"#;

/// A rule the reloads add and take away again: it names nobody the traffic uses.
const EXTRA_RULE: &str = r#"
[[policy]]
action = "allow"
to = "spiffe://example.org/ns/shop/sa/audit"
from = ["spiffe://example.org/ns/shop/sa/frontend"]
"#;

/// One node's footprint.
#[derive(Debug)]
struct Footprint {
    rss_kib: u64,
    fds: usize,
    tasks: u64,
    maps: String,
    pooled: u64,
}

fn footprint(node: &Node) -> Footprint {
    let pid = node.daemon.as_ref().expect("running").pid();
    let (fds, _threads, rss_kib) = process_figures(pid);
    let pooled = admin_get(&node.host, "/metrics")
        .lines()
        .filter(|l| l.starts_with("tunnel_pool_connections{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64;
    Footprint {
        rss_kib,
        fds,
        tasks: alive_tasks(node),
        maps: map_entries(node),
        pooled,
    }
}

/// How long after a daemon's kill -9 its node's calls may fail: until the new daemon has
/// started and taken its pods back.
const KILL_WINDOW: f64 = 5.0;

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// `map_entries`' "NAME=N ..." as pairs.
fn map_counts(maps: &str) -> Vec<(String, u64)> {
    maps.split_whitespace()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The counts of `netprobe load`'s last line.
fn load_counts(out: &str) -> Vec<(String, u64)> {
    out.lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn count(counts: &[(String, u64)], key: &str) -> u64 {
    counts
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no {key} in {counts:?}"))
}

#[test]
#[ignore = "minutes long: run by `cargo xtask soak`"]
fn soak_under_rotation_reloads_pod_churn_and_kills() {
    let minutes: f64 = std::env::var("TUNNEL_SOAK_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(3.0);
    let duration = Duration::from_secs_f64(minutes * 60.0);
    let mut cluster = Cluster::new("soak", POLICY);
    // Certificates (the nodes' and the pods') live 20 s, so each is renewed every 10 s.
    for index in 0..cluster.nodes.len() {
        let path = cluster.nodes[index].config.clone();
        let text = fs::read_to_string(&path)
            .unwrap()
            .replace("ttl = \"1h\"", "ttl = \"20s\"");
        fs::write(&path, text).unwrap();
        cluster.start(index);
    }
    let frontend = add(&cluster, 0, "frontend");
    let ledger = add(&cluster, 0, "ledger");
    let orders = add(&cluster, 1, "orders");
    let reports = add(&cluster, 1, "reports");
    let _orders = orders.serve(&["serve-tagged", "8080"]);
    let _ledger = ledger.serve(&["serve-tagged", "8080"]);

    // Nothing but the tunnel port on the node link, for the whole soak.
    let link = cluster.nodes[1].host.capture(
        "eth0",
        "tcp and not port 15008",
        cluster.testbed.dir().join("soak-link.pcap"),
    );
    let seconds = duration.as_secs().to_string();
    let loads = [(&frontend, &orders), (&reports, &ledger)].map(|(from, to)| {
        let mut load = from
            .command("python3")
            .arg(NETPROBE)
            .args(["load", &to.ip, "8080", &seconds, "4", "5"])
            .spawn();
        load.wait_for("started", SHORT);
        load
    });
    std::thread::sleep(Duration::from_secs(5));
    let baseline = [footprint(&cluster.nodes[0]), footprint(&cluster.nodes[1])];
    println!(
        "baseline under load: n1 {:?}\n                     n2 {:?}",
        baseline[0], baseline[1]
    );

    // The chaos, one action every 10 s until 20 s before the end (the traffic then runs on
    // undisturbed, so what a kill cut short has recovered when the loads count).
    let started = Instant::now();
    let start_unix = unix_now();
    let mut actions = Vec::new();
    // When each kill happened (unix seconds): the only failures allowed follow one.
    let mut kills = Vec::new();
    let mut round = 0u32;
    while started.elapsed() + Duration::from_secs(30) < duration {
        std::thread::sleep(Duration::from_secs(10));
        round += 1;
        let action = match round % 4 {
            1 => {
                // Policy reload: a rule added, then taken away again at the next reload.
                for node in &cluster.nodes {
                    let text = fs::read_to_string(&node.config).unwrap();
                    let text = match text.strip_suffix(EXTRA_RULE) {
                        Some(without) => without.to_string(),
                        None => format!("{text}{EXTRA_RULE}"),
                    };
                    fs::write(&node.config, text).unwrap();
                }
                "policy reloaded on both nodes".to_string()
            }
            2 | 0 => {
                // A pod comes, is called across the link, and goes. It runs as the service
                // account the other node's caller may call.
                let node = (round as usize / 2) % 2;
                let account = if node == 0 { "ledger" } else { "orders" };
                let (pod, added) =
                    cluster.add_pod(node, "shop", &format!("churn-{round}"), Some(account));
                added.unwrap_or_else(|e| panic!("ADD of churn-{round}: {e}"));
                let _served = pod.serve(&["serve-tagged", "9090"]);
                let caller = if node == 0 { &reports } else { &frontend };
                let out = caller.netprobe(&["fan-out", &pod.ip, "9090", "4"]);
                assert_eq!(
                    out.stdout.trim(),
                    "ok=4 bad=0",
                    "a call to churn-{round}: {out:?}"
                );
                cluster.del_pod(&pod);
                format!(
                    "pod churn-{round} on n{}: called ({}), deleted",
                    node + 1,
                    out.stdout.trim()
                )
            }
            _ => {
                // kill -9 of one node's daemon, and a new one (its pods taken back from the
                // records).
                let node = (round as usize / 4) % 2;
                kills.push(unix_now());
                cluster.nodes[node].daemon.as_ref().unwrap().signal("KILL");
                cluster.start(node);
                format!("n{}'s daemon killed -9 and started again", node + 1)
            }
        };
        println!("{:>5.1}s {action}", started.elapsed().as_secs_f64());
        actions.push(action);
    }

    let results = loads.map(|mut load| {
        load.wait_timeout(duration + LONG).expect("the load ends");
        (load.stdout(), load.stderr())
    });
    let packets = link.stop();
    std::thread::sleep(Duration::from_secs(3));
    let after = [footprint(&cluster.nodes[0]), footprint(&cluster.nodes[1])];
    let renewals: Vec<u64> = cluster
        .nodes
        .iter()
        .map(|node| {
            admin_get(&node.host, "/metrics")
                .lines()
                .find_map(|l| l.strip_prefix("tunnel_certificate_reloads_total{outcome=\"ok\"} "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0) as u64
        })
        .collect();
    println!(
        "{} chaos actions; certificate renewals and reloads by the current daemons: n1 {}, n2 {}",
        actions.len(),
        renewals[0],
        renewals[1]
    );
    for ((from, to), (result, failures)) in [("frontend", "orders"), ("reports", "ledger")]
        .iter()
        .zip(&results)
    {
        println!(
            "load {from} → {to}: {}",
            result.lines().last().unwrap_or_default()
        );
        let at = |line: &str| -> f64 {
            line.split_whitespace()
                .next()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0.0)
        };
        for kill in &kills {
            let after: Vec<f64> = failures
                .lines()
                .map(at)
                .filter(|t| *t >= *kill && *t < kill + KILL_WINDOW)
                .map(|t| t - kill)
                .collect();
            let last = after.iter().copied().fold(0.0, f64::max);
            println!(
                "  after the kill at +{:.1}s: {} failed, the last {last:.2} s after it",
                kill - start_unix,
                after.len()
            );
        }
        let outside: Vec<&str> = failures
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter(|l| !kills.iter().any(|k| at(l) >= *k && at(l) < k + KILL_WINDOW))
            .collect();
        assert!(
            outside.is_empty(),
            "{from} → {to}: {} failures outside the kills' windows (renewals, reloads and pod \
             churn must cost nothing), e.g. {:?}",
            outside.len(),
            &outside[..outside.len().min(5)]
        );
    }
    println!(
        "after (loads ended, 3 s later): n1 {:?}\n                               n2 {:?}",
        after[0], after[1]
    );

    for (result, _) in &results {
        let counts = load_counts(result);
        assert_eq!(count(&counts, "corrupted_bytes"), 0, "{result}");
        assert!(count(&counts, "short_ok") > 100, "{result}");
        assert!(count(&counts, "long_ok") > 0, "{result}");
    }
    assert_eq!(
        packets.packet_count(),
        0,
        "only HBONE crossed the node link ({})",
        packets.path().display()
    );
    for (node, (before, after)) in baseline.iter().zip(&after).enumerate() {
        let n = node + 1;
        assert!(
            after.rss_kib <= before.rss_kib + 32 * 1024,
            "n{n} RSS {} → {} KiB",
            before.rss_kib,
            after.rss_kib
        );
        assert!(
            after.fds <= before.fds + 8,
            "n{n} fds {} → {}",
            before.fds,
            after.fds
        );
        assert!(
            after.tasks <= before.tasks + 8,
            "n{n} tasks {} → {}",
            before.tasks,
            after.tasks
        );
        assert!(
            after.pooled <= before.pooled + 2,
            "n{n} pooled {} → {}",
            before.pooled,
            after.pooled
        );
        for (map, entries) in map_counts(&after.maps) {
            let was = map_counts(&before.maps)
                .into_iter()
                .find(|(m, _)| *m == map)
                .map_or(0, |(_, e)| e);
            assert!(entries <= was, "n{n} {map}: {was} → {entries} entries");
        }
    }
}
