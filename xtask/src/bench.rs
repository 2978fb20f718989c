//! `cargo xtask bench`: one run that measures, side by side on two test hosts,
//!
//! | path | what |
//! |---|---|
//! | direct | client on A straight to the server on B |
//! | tunnel | captured client on A, through both daemons |
//! | stunnel+nginx | stunnel client on A → nginx stream (`ssl_verify_client on`) on B |
//!
//! Every figure is the median of [`RUNS`] runs. Results are printed as a table and written
//! to `target/bench/latest.json`.

mod baseline;
pub mod probes;
mod report;
mod tools;

use std::{fs, path::PathBuf, time::Duration};

use anyhow::{Context as _, Result};
use testbed::{Host, Proc, Testbed};

use crate::{cargo, setup, workspace};

/// Runs of each measurement; the median is reported.
pub const RUNS: usize = 3;
const IPERF_SECONDS: u32 = 10;
const WRK_SECONDS: u32 = 5;
const IDLE_CONNECTIONS: usize = 10_000;
const CONNECT_SAMPLES: usize = 2_000;
const BENCH_PACKAGES: [&str; 5] = ["iperf3", "wrk", "nginx", "libnginx-mod-stream", "stunnel4"];

/// One way from a client on A to the servers on B.
struct Path {
    name: &'static str,
    /// The cgroup the client runs in (captured or not).
    cgroup: PathBuf,
    http: String,
    iperf: (String, u16),
    /// cgroups of the proxy processes on this path, for CPU accounting.
    proxies: Vec<PathBuf>,
}

pub fn run() -> Result<()> {
    setup::all()?;
    setup::apt(&BENCH_PACKAGES)?;
    cargo(&["build", "--quiet", "--release", "--package", "tunnel"])?;
    cargo(&["build", "--quiet", "--release", "--package", "xtask"])?;
    let tunnel = workspace().join("target/release/tunnel");
    let xtask = workspace().join("target/release/xtask");

    let mut testbed = Testbed::new("bench");
    let a = testbed.add_host("host-a");
    let b = testbed.add_host("host-b");
    let certs = baseline::certificates(&testbed, &tunnel)?;
    let daemons = start_daemons(&testbed, &a, &b, &tunnel, &certs)?;
    std::thread::sleep(Duration::from_millis(500));
    let idle_rss = [
        tools::rss_kib(daemons[0].pid())?,
        tools::rss_kib(daemons[1].pid())?,
    ];

    let _servers = baseline::servers(&testbed, &b, &certs)?;
    let _stunnel = baseline::stunnel(&testbed, &a, &certs)?;
    let plain = testbed.cgroup("clients");
    let paths = [
        Path {
            name: "direct",
            cgroup: plain.clone(),
            http: "http://10.0.0.2:8080/".into(),
            iperf: ("10.0.0.2".into(), 5201),
            proxies: vec![],
        },
        Path {
            name: "tunnel",
            cgroup: testbed.cgroup("a/workloads/frontend"),
            http: "http://10.0.0.2:8080/".into(),
            iperf: ("10.0.0.2".into(), 5201),
            proxies: vec![testbed.cgroup("a/daemon"), testbed.cgroup("b/daemon")],
        },
        Path {
            name: "stunnel+nginx",
            cgroup: plain.clone(),
            http: "http://127.0.0.1:9080/".into(),
            iperf: ("127.0.0.1".into(), 9201),
            proxies: vec![testbed.cgroup("stunnel"), testbed.cgroup("nginx")],
        },
    ];

    let mut results = Vec::new();
    for path in &paths {
        eprintln!("bench: {} ...", path.name);
        results.push(measure(&a, path, &xtask)?);
    }
    let extra = tunnel_only(&testbed, &a, &xtask, &daemons, idle_rss)?;
    let report = report::Report {
        paths: results,
        tunnel: extra,
    };
    report.print();
    let dir = workspace().join("target/bench");
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("latest.json"), report.json())?;
    eprintln!("bench: written to {}", dir.join("latest.json").display());
    Ok(())
}

fn measure(a: &Host, path: &Path, xtask: &std::path::Path) -> Result<report::PathResult> {
    let mut result = report::PathResult::new(path.name);
    for _ in 0..RUNS {
        let cpu_before: f64 = path
            .proxies
            .iter()
            .map(|c| tools::cgroup_cpu_seconds(c).unwrap_or(0.0))
            .sum();
        let (gbps, bytes) = tools::iperf3(
            tools::tool(a, "iperf3", &path.cgroup),
            &path.iperf.0,
            path.iperf.1,
            IPERF_SECONDS,
        )?;
        let cpu_after: f64 = path
            .proxies
            .iter()
            .map(|c| tools::cgroup_cpu_seconds(c).unwrap_or(0.0))
            .sum();
        result.throughput_gbps.push(gbps);
        if !path.proxies.is_empty() {
            result
                .cpu_s_per_gb
                .push((cpu_after - cpu_before) / (bytes as f64 / 1e9));
        }
        let (rps, p50, p99) = tools::wrk(
            tools::tool(a, "wrk", &path.cgroup),
            &path.http,
            false,
            WRK_SECONDS,
        )?;
        result.keepalive_rps.push(rps);
        result.keepalive_p50_us.push(p50);
        result.keepalive_p99_us.push(p99);
        let (conn_rps, _, _) = tools::wrk(
            tools::tool(a, "wrk", &path.cgroup),
            &path.http,
            true,
            WRK_SECONDS,
        )?;
        result.new_conn_rps.push(conn_rps);
        let target = path
            .http
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let out = a
            .command(&xtask.display().to_string())
            .args(["probe-first-byte", &target, "16", &WRK_SECONDS.to_string()])
            .in_cgroup(&path.cgroup)
            .output(Duration::from_secs(60));
        result.first_byte_p99_us.push(
            report::field(&out.stdout, "p99_us=")
                .with_context(|| format!("probe-first-byte: {}{}", out.stdout, out.stderr))?,
        );
    }
    Ok(result)
}

/// What only the tunnel has: idle connections' memory, idle RSS, the connect() hook cost.
fn tunnel_only(
    testbed: &Testbed,
    a: &Host,
    xtask: &std::path::Path,
    daemons: &[Proc; 2],
    idle_rss: [u64; 2],
) -> Result<report::TunnelResult> {
    let frontend = testbed.cgroup("a/workloads/frontend");
    let plain = testbed.cgroup("clients");
    let mut result = report::TunnelResult {
        idle_rss_kib: idle_rss,
        ..Default::default()
    };
    for _ in 0..RUNS {
        let captured = a
            .command(&xtask.display().to_string())
            .args([
                "probe-connect",
                "10.0.0.2:8080",
                &CONNECT_SAMPLES.to_string(),
            ])
            .in_cgroup(&frontend)
            .output(Duration::from_secs(60));
        let uncaptured = a
            .command(&xtask.display().to_string())
            .args([
                "probe-connect",
                "127.0.0.1:15001",
                &CONNECT_SAMPLES.to_string(),
            ])
            .in_cgroup(&plain)
            .output(Duration::from_secs(60));
        result.connect_captured_us.push(
            report::field(&captured.stdout, "median_us=").context("probe-connect (captured)")?,
        );
        result.connect_plain_us.push(
            report::field(&uncaptured.stdout, "median_us=").context("probe-connect (plain)")?,
        );
    }
    // Let connections from the runs above finish and pools idle out of the picture.
    std::thread::sleep(Duration::from_secs(2));
    let before = [
        tools::rss_kib(daemons[0].pid())?,
        tools::rss_kib(daemons[1].pid())?,
    ];
    let mut holder = a
        .command("sh")
        .args([
            "-c",
            &format!(
                "ulimit -n 20000 && exec {} probe-hold 10.0.0.2:8080 {IDLE_CONNECTIONS} 30",
                xtask.display()
            ),
        ])
        .in_cgroup(&frontend)
        .spawn();
    holder.wait_for(
        &format!("holding={IDLE_CONNECTIONS}"),
        Duration::from_secs(120),
    );
    std::thread::sleep(Duration::from_secs(2));
    let after = [
        tools::rss_kib(daemons[0].pid())?,
        tools::rss_kib(daemons[1].pid())?,
    ];
    result.idle_connections = IDLE_CONNECTIONS;
    result.rss_before_kib = before;
    result.rss_after_kib = after;
    Ok(result)
}

fn start_daemons(
    testbed: &Testbed,
    a: &Host,
    b: &Host,
    tunnel: &std::path::Path,
    certs: &baseline::Certs,
) -> Result<[Proc; 2]> {
    let render = |example: &str,
                  label: &str,
                  dir: &std::path::Path,
                  edit: &dyn Fn(String) -> String|
     -> Result<PathBuf> {
        let text = fs::read_to_string(workspace().join("config").join(example))?;
        let path = testbed.dir().join(example);
        fs::write(
            &path,
            edit(testbed::render_config(testbed, &text, label, dir)),
        )?;
        Ok(path)
    };
    testbed.cgroup("a/workloads/frontend");
    testbed.cgroup("b/workloads");
    let config_a = render("host-a.toml", "a", &certs.a, &|t| t)?;
    let config_b = render("host-b.toml", "b", &certs.b, &|t| {
        t.replace("ports = [8080]", "ports = [8080, 5201]")
    })?;
    let start = |host: &Host, label: &str, config: &PathBuf| {
        let mut daemon = host
            .command(&tunnel.display().to_string())
            .args(["run", "--config"])
            .arg(config)
            .in_cgroup(&testbed.cgroup(&format!("{label}/daemon")))
            .spawn();
        daemon.wait_for("tunnel ready", Duration::from_secs(15));
        daemon
    };
    let daemon_b = start(b, "b", &config_b);
    let daemon_a = start(a, "a", &config_a);
    Ok([daemon_a, daemon_b])
}
