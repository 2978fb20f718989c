//! `cargo xtask bench`: one run that measures, side by side on two test hosts,
//!
//! | path | what |
//! |---|---|
//! | direct | client on A straight to the server on B |
//! | tunnel | captured client on A, through both daemons |
//! | stunnel+nginx | stunnel client on A → nginx stream (`ssl_verify_client on`) on B |
//!
//! Every figure is the median of [`Options::runs`] runs (3 unless told). Within a run each
//! measurement goes through every path before the next measurement starts, and a ratio to
//! direct is the median of each run's own ratio, so slow drifts in the machine's load
//! (these VMs share their host) fall on both sides of a ratio. Results are
//! printed as a table and written to `target/bench/latest.json`. `--perf` also records a
//! call-graph profile of both daemons during each tunnel measurement, unwound through their
//! user-space frames too (`target/bench/perf-<measurement>-<run>.data`, tens of MB each;
//! read with `perf report -i FILE`, `--children` for inclusive costs); `--syscalls`
//! writes each daemon's system-call counts instead (`target/bench/syscalls-<measurement>-
//! <run>-<a|b>.txt`, from `perf trace -s`). Both slow the daemons down: read their figures
//! as a profile, not as a result.

mod baseline;
pub mod probes;
mod profiler;
mod report;
mod tools;

use std::{fs, path::PathBuf, time::Duration};

use anyhow::{Context as _, Result};
use testbed::{Host, HostCommand, Proc, Testbed};

use crate::{cargo, setup, workspace};
use profiler::Profiler;

/// What `cargo xtask bench` was asked for.
#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// Runs of each measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Paths to measure besides `direct` (which every ratio needs): tunnel, stunnel+nginx.
    #[arg(long, value_delimiter = ',', default_values_t = [String::from("tunnel"), String::from("stunnel+nginx")])]
    pub paths: Vec<String>,
    /// Record perf profiles of both daemons during the tunnel's measurements.
    #[arg(long)]
    pub perf: bool,
    /// Count each daemon's system calls during the tunnel's measurements.
    #[arg(long)]
    pub syscalls: bool,
    /// Benchmark this tunnel binary instead of building the workspace's (to compare two
    /// builds on the same machine, alternating: run-to-run noise here is ±15%).
    #[arg(long, value_name = "PATH")]
    pub daemon: Option<PathBuf>,
    /// Run both daemons with `--no-access-log`, to measure what the access log costs.
    #[arg(long)]
    pub no_access_log: bool,
    /// The daemons' record cipher (`[crypto] aead`): auto (chosen at start), aws-lc or ring.
    #[arg(long, default_value = "auto")]
    pub aead: String,
    /// `[capture] sockmap` for both daemons: true or false (unset: the config's default).
    #[arg(long)]
    pub sockmap: Option<bool>,
    /// `[runtime] threads` for both daemons: their data-plane runtimes (unset: the default).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Only these measurements (unset: all of them, and the tunnel-only figures: connect()
    /// with the hook, RSS per idle connection). Idle RSS and the first call are always
    /// measured: they cost a second. For quick A/B of one lever.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Measurement>,
}

/// One of the measurements each run makes on every path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Measurement {
    Throughput,
    Keepalive,
    Latency,
    Newconn,
    FirstByte,
    Burst,
}

impl Options {
    fn measures(&self, what: Measurement) -> bool {
        self.only.is_empty() || self.only.contains(&what)
    }
}
const IPERF_SECONDS: u32 = 10;
const WRK_SECONDS: u32 = 5;
const IDLE_CONNECTIONS: usize = 10_000;
const CONNECT_SAMPLES: usize = 2_000;
/// Connections opened at once by the burst probe.
const BURST: usize = 3_000;
/// Requests per second of the fixed-rate latency probe (ztunnel publishes its figures at 1k).
const FIXED_RATE: u32 = 1_000;
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

pub fn run(options: &Options) -> Result<()> {
    if let Some(unknown) = options
        .paths
        .iter()
        .find(|p| !["direct", "tunnel", "stunnel+nginx"].contains(&p.as_str()))
    {
        anyhow::bail!("--paths: unknown path {unknown:?} (known: tunnel, stunnel+nginx)");
    }
    setup::all()?;
    setup::apt(&BENCH_PACKAGES)?;
    if options.perf || options.syscalls {
        setup::apt(&["linux-perf"])?;
    }
    let tunnel = match &options.daemon {
        Some(path) => fs::canonicalize(path)
            .with_context(|| format!("--daemon {}: no such binary", path.display()))?,
        None => {
            eprintln!("bench: building the daemon (release)");
            cargo(&["build", "--quiet", "--release", "--package", "tunnel"])?;
            workspace().join("target/release/tunnel")
        }
    };
    cargo(&["build", "--quiet", "--release", "--package", "xtask"])?;
    let xtask = workspace().join("target/release/xtask");

    eprintln!("bench: making the test hosts, certificates and servers");
    let mut testbed = Testbed::new("bench");
    let a = testbed.add_host("host-a");
    let b = testbed.add_host("host-b");
    let certs = baseline::certificates(&testbed, &tunnel)?;
    let daemons = start_daemons(&testbed, &a, &b, &tunnel, &certs, options)?;
    let record_cipher = [record_cipher(&daemons[0]), record_cipher(&daemons[1])];
    std::thread::sleep(Duration::from_millis(500));
    let idle_rss = [
        tools::rss_kib(daemons[0].pid())?,
        tools::rss_kib(daemons[1].pid())?,
    ];

    let _servers = baseline::servers(&testbed, &b, &certs)?;
    // Before anything else has gone through the daemons: what the first caller waits.
    let first_calls = Probe::run(
        &a,
        &xtask,
        &testbed.cgroup("a/workloads/frontend"),
        &["probe-first-calls", "10.0.0.2:8080", "50"],
    );
    let first_call_us = [
        first_calls.field("first_us=")?,
        first_calls.field("warm_p50_us=")?,
    ];
    let _stunnel = baseline::stunnel(&testbed, &a, &certs)?;
    let plain = testbed.cgroup("clients");
    let paths = [
        Path {
            name: "direct",
            cgroup: plain.clone(),
            http: format!("http://10.0.0.2:{}/", baseline::DIRECT_HTTP_PORT),
            iperf: ("10.0.0.2".into(), baseline::DIRECT_IPERF_PORT),
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
            proxies: vec![
                testbed.cgroup("stunnel"),
                testbed.cgroup(baseline::NGINX_CGROUP),
            ],
        },
    ];

    let dir = workspace().join("target/bench");
    fs::create_dir_all(&dir)?;
    let profiler = (options.perf || options.syscalls).then(|| Profiler {
        pids: [daemons[0].pid(), daemons[1].pid()],
        dir: dir.clone(),
        syscalls: options.syscalls,
    });
    let paths: Vec<&Path> = paths
        .iter()
        .filter(|p| p.name == "direct" || options.paths.iter().any(|n| n == p.name))
        .collect();
    let mut results: Vec<report::PathResult> = paths
        .iter()
        .map(|p| report::PathResult::new(p.name))
        .collect();
    for run in 1..=options.runs {
        measure_run(
            &a,
            &paths,
            &mut results,
            &xtask,
            run,
            profiler.as_ref(),
            options,
        )?;
        for result in &results {
            eprintln!("bench: {} run {run}: {}", result.name, result.last_run());
        }
    }
    let mut extra = if options.only.is_empty() {
        tunnel_only(&testbed, &a, &xtask, &daemons, idle_rss, options.runs)?
    } else {
        report::TunnelResult {
            idle_rss_kib: idle_rss,
            ..Default::default()
        }
    };
    extra.first_call_us = first_call_us;
    extra.record_cipher = record_cipher;
    let report = report::Report {
        runs: options.runs,
        paths: results,
        tunnel: extra,
    };
    report.print();
    let json = report.json().context("write the report as JSON")?;
    fs::write(dir.join("latest.json"), json)?;
    eprintln!("bench: written to {}", dir.join("latest.json").display());
    Ok(())
}

/// One run of every measurement. Each measurement goes through all paths before the next
/// starts, so a path and its direct baseline are measured seconds apart: the machine's
/// load drifts over minutes, and each run's ratio to direct should not see that drift.
fn measure_run(
    a: &Host,
    paths: &[&Path],
    results: &mut [report::PathResult],
    xtask: &std::path::Path,
    run: usize,
    profiler: Option<&Profiler>,
    options: &Options,
) -> Result<()> {
    use Measurement::*;
    use report::Metric;
    let seconds = WRK_SECONDS.to_string();
    // wrk from A's path cgroup for WRK_SECONDS, the proxies' CPU metered: keep-alive, or a
    // new connection per request (`close`).
    let wrk = |path: &Path, measurement: &str, close: bool| {
        under_load(path, profiler, measurement, run, || {
            tools::wrk(
                tools::tool(a, "wrk", &path.cgroup),
                &path.http,
                close,
                WRK_SECONDS,
            )
        })
    };
    if options.measures(Throughput) {
        for (path, result) in paths.iter().zip(results.iter_mut()) {
            let ((gbps, bytes), cpu) = under_load(path, profiler, "throughput", run, || {
                tools::iperf3(
                    tools::tool(a, "iperf3", &path.cgroup),
                    &path.iperf.0,
                    path.iperf.1,
                    IPERF_SECONDS,
                )
            })?;
            result.push(Metric::Throughput, gbps);
            if let Some(cpu) = cpu {
                result.push(Metric::CpuPerGb, cpu / (bytes as f64 / 1e9));
            }
        }
    }
    if options.measures(Keepalive) {
        for (path, result) in paths.iter().zip(results.iter_mut()) {
            let ((rps, p50, p99), cpu) = wrk(path, "keepalive", false)?;
            result.push(Metric::KeepaliveRps, rps);
            result.push(Metric::KeepaliveP50, p50);
            result.push(Metric::KeepaliveP99, p99);
            if let Some(cpu) = cpu {
                let requests = rps * f64::from(WRK_SECONDS);
                result.push(Metric::CpuPer1kRequests, cpu * 1e6 / requests);
            }
        }
    }
    // Latency without saturation, as published for ztunnel: one request at a time at a
    // fixed rate.
    let rate = FIXED_RATE.to_string();
    if options.measures(Latency) {
        for (path, result) in paths.iter().zip(results.iter_mut()) {
            let target = path.target();
            eprintln!("bench: run {run}, {}: latency at {rate} req/s", path.name);
            let args = ["probe-rate", &target, &rate, &seconds];
            let fixed = Probe::run(a, xtask, &path.cgroup, &args);
            result.push(Metric::FixedRateP50, fixed.field("p50_us=")?);
            result.push(Metric::FixedRateP99, fixed.field("p99_us=")?);
        }
    }
    if options.measures(Newconn) {
        for (path, result) in paths.iter().zip(results.iter_mut()) {
            let ((conn_rps, _, _), cpu) = wrk(path, "newconn", true)?;
            result.push(Metric::NewConnRps, conn_rps);
            if let Some(cpu) = cpu {
                let connections = conn_rps * f64::from(WRK_SECONDS);
                result.push(Metric::CpuPer1kConnections, cpu * 1e6 / connections);
            }
        }
    }
    if options.measures(FirstByte) {
        for (path, result) in paths.iter().zip(results.iter_mut()) {
            let target = path.target();
            eprintln!("bench: run {run}, {}: connect to first byte", path.name);
            let args = ["probe-first-byte", &target, "16", &seconds];
            let first_byte = Probe::run(a, xtask, &path.cgroup, &args);
            result.push(Metric::FirstByteP99, first_byte.field("p99_us=")?);
        }
    }
    if options.measures(Burst) {
        for (path, result) in paths.iter().zip(results.iter_mut()) {
            let target = path.target();
            eprintln!(
                "bench: run {run}, {}: a burst of {BURST} connects",
                path.name
            );
            let count = BURST.to_string();
            let burst =
                Probe::run_with_files(a, xtask, &path.cgroup, &["probe-burst", &target, &count]);
            result.push(Metric::BurstP50, burst.field("p50_us=")?);
            result.push(Metric::BurstP99, burst.field("p99_us=")?);
            let errors = burst.field("errors=")?;
            if errors > 0.0 {
                eprintln!(
                    "bench: run {run}, {}: {errors} of the burst's {BURST} connections failed",
                    path.name
                );
            }
        }
    }
    Ok(())
}

/// Runs one load on a path, profiling the daemons if asked (tunnel path only), and returns
/// its result with the CPU seconds the path's proxies spent meanwhile (`None` for a path
/// without proxies).
fn under_load<T>(
    path: &Path,
    profiler: Option<&Profiler>,
    measurement: &str,
    run: usize,
    load: impl FnOnce() -> Result<T>,
) -> Result<(T, Option<f64>)> {
    let proxy_cpu = || -> f64 {
        path.proxies
            .iter()
            .map(|c| tools::cgroup_cpu_seconds(c).unwrap_or(0.0))
            .sum()
    };
    // Each measurement takes seconds: say what is being measured, so a long run shows it is
    // moving.
    eprintln!("bench: run {run}, {}: {measurement}", path.name);
    let before = proxy_cpu();
    let profile = profiler
        .filter(|_| path.name == "tunnel")
        .map(|p| p.record(measurement, run));
    let result = load()?;
    drop(profile);
    let cpu = (!path.proxies.is_empty()).then(|| proxy_cpu() - before);
    Ok((result, cpu))
}

impl Path {
    /// `host:port` of the HTTP server, as the probes take it.
    fn target(&self) -> String {
        self.http
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string()
    }
}

/// What only the tunnel has: idle connections' memory, idle RSS, the connect() hook cost.
fn tunnel_only(
    testbed: &Testbed,
    a: &Host,
    xtask: &std::path::Path,
    daemons: &[Proc; 2],
    idle_rss: [u64; 2],
    runs: usize,
) -> Result<report::TunnelResult> {
    let frontend = testbed.cgroup("a/workloads/frontend");
    let plain = testbed.cgroup("clients");
    let mut result = report::TunnelResult {
        idle_rss_kib: idle_rss,
        ..Default::default()
    };
    let samples = CONNECT_SAMPLES.to_string();
    for _ in 0..runs {
        let args = ["probe-connect", "10.0.0.2:8080", &samples];
        let captured = Probe::run(a, xtask, &frontend, &args);
        // The same loopback handshake without the hook: the probe's own listener.
        let uncaptured = Probe::run(a, xtask, &plain, &["probe-connect", "loopback", &samples]);
        result
            .connect_captured_us
            .push(captured.field("median_us=")?);
        result
            .connect_plain_us
            .push(uncaptured.field("median_us=")?);
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
            &with_files(
                xtask,
                &[
                    "probe-hold",
                    "10.0.0.2:8080",
                    &IDLE_CONNECTIONS.to_string(),
                    "30",
                ],
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
    options: &Options,
) -> Result<[Proc; 2]> {
    // Only when asked: a build from before `[crypto]` refuses the section.
    let crypto = match options.aead.as_str() {
        "auto" => String::new(),
        aead => format!("\n[crypto]\naead = {aead:?}\n"),
    };
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
    // The options that set the daemons' config (`--sockmap`, `--threads`).
    let settings = |text: String| {
        let text = match options.sockmap {
            Some(on) => testbed::with_sockmap(&text, on),
            None => text,
        };
        match options.threads {
            Some(threads) => testbed::with_runtime_threads(&text, threads),
            None => text,
        }
    };
    let config_a = render("host-a.toml", "a", &certs.a, &|t| settings(t) + &crypto)?;
    // B's servers run in its capture cgroup (see `baseline::servers`), and nginx there also
    // terminates the stunnel+nginx path and connects on to 8080 and 5201 on B's own address,
    // which B must not capture: it is excluded (nothing the bench sends leaves B otherwise).
    let config_b = render("host-b.toml", "b", &certs.b, &|t| {
        let t = t.replace("ports = [8080]", "ports = [8080, 5201]");
        let t = t.replacen("[capture]\n", "[capture]\nexclude = [\"10.0.0.2/32\"]\n", 1);
        settings(t) + &crypto
    })?;
    let start = |host: &Host, label: &str, config: &PathBuf| {
        let mut daemon = host
            .command(&tunnel.display().to_string())
            .args(["run", "--config"])
            .arg(config)
            .args(options.no_access_log.then_some("--no-access-log"))
            .in_cgroup(&testbed.cgroup(&format!("{label}/daemon")))
            .spawn();
        daemon.wait_for("tunnel ready", Duration::from_secs(15));
        daemon
    };
    let daemon_b = start(b, "b", &config_b);
    let daemon_a = start(a, "a", &config_a);
    Ok([daemon_a, daemon_b])
}

/// What the daemon said it chose for its record cipher, and why.
fn record_cipher(daemon: &Proc) -> String {
    daemon
        .logs()
        .lines()
        .find(|line| line.contains("record cipher chosen"))
        .and_then(|line| line.split_once("aead=").map(|(_, rest)| rest))
        .map_or_else(
            || "not logged".into(),
            |rest| rest.trim().trim_matches('"').to_string(),
        )
}

/// A finished run of one of the hidden `cargo xtask probe-*` helpers in a test host.
struct Probe {
    what: String,
    out: testbed::Output,
}

impl Probe {
    fn run(a: &Host, xtask: &std::path::Path, cgroup: &std::path::Path, args: &[&str]) -> Self {
        let command = a.command(&xtask.display().to_string()).args(args);
        Self::output(command, cgroup, args)
    }

    /// [`Probe::run`] for a probe that holds more sockets than the default limit of open
    /// files allows.
    fn run_with_files(
        a: &Host,
        xtask: &std::path::Path,
        cgroup: &std::path::Path,
        args: &[&str],
    ) -> Self {
        let command = a.command("sh").args(["-c", &with_files(xtask, args)]);
        Self::output(command, cgroup, args)
    }

    fn output(command: HostCommand, cgroup: &std::path::Path, args: &[&str]) -> Self {
        Self {
            what: format!("{} in {}", args.join(" "), cgroup.display()),
            out: command.in_cgroup(cgroup).output(Duration::from_secs(60)),
        }
    }

    /// The number the probe printed after `name` (e.g. `p99_us=`).
    fn field(&self, name: &str) -> Result<f64> {
        report::field(&self.out.stdout, name).with_context(|| {
            format!(
                "{}: no {name}: {}{}",
                self.what, self.out.stdout, self.out.stderr
            )
        })
    }
}

/// A shell command that runs `xtask args` with room for 20,000 open files (a probe that
/// holds thousands of sockets).
fn with_files(xtask: &std::path::Path, args: &[&str]) -> String {
    format!(
        "ulimit -n 20000 && exec {} {}",
        xtask.display(),
        args.join(" ")
    )
}
