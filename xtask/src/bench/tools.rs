//! Running iperf3 and wrk in a test host and reading their numbers.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use testbed::{Host, HostCommand};

const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// One-stream throughput in Gbit/s and bytes carried.
pub fn iperf3(command: HostCommand, target: &str, port: u16, seconds: u32) -> Result<(f64, u64)> {
    let out = command
        .args([
            "-c",
            target,
            "-p",
            &port.to_string(),
            "-t",
            &seconds.to_string(),
            "-J",
        ])
        .output(TOOL_TIMEOUT);
    if !out.status.success() {
        bail!(
            "iperf3 to {target}:{port} failed: {}{}",
            out.stdout,
            out.stderr
        );
    }
    let received = out
        .stdout
        .find("\"sum_received\"")
        .context("iperf3 JSON without sum_received")?;
    let tail = &out.stdout[received..];
    let bps = json_number(tail, "bits_per_second")?;
    let bytes = json_number(tail, "bytes")? as u64;
    Ok((bps / 1e9, bytes))
}

/// wrk: requests/s, p50 and p99 latency in microseconds.
pub fn wrk(command: HostCommand, url: &str, close: bool, seconds: u32) -> Result<(f64, f64, f64)> {
    let mut command = command.args([
        "-t",
        "2",
        "-c",
        "16",
        "-d",
        &format!("{seconds}s"),
        "--latency",
    ]);
    if close {
        command = command.args(["-H", "Connection: close"]);
    }
    let out = command.arg(url).output(TOOL_TIMEOUT);
    if !out.status.success()
        || out.stdout.contains("Socket errors") && close && !out.stdout.contains("Requests/sec")
    {
        bail!("wrk {url} failed: {}{}", out.stdout, out.stderr);
    }
    let rps = out
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .context("wrk printed no Requests/sec")?
        .trim()
        .parse()?;
    let latency = |quantile: &str| -> Result<f64> {
        let line = out
            .stdout
            .lines()
            .find(|l| l.trim().starts_with(quantile))
            .context("no latency line")?;
        duration_us(line.split_whitespace().nth(1).context("latency value")?)
    };
    Ok((rps, latency("50%")?, latency("99%")?))
}

/// RSS of a process in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

/// CPU seconds (user + system) used so far by every process in a cgroup.
pub fn cgroup_cpu_seconds(cgroup: &std::path::Path) -> Result<f64> {
    let stat = std::fs::read_to_string(cgroup.join("cpu.stat")).unwrap_or_default();
    if let Some(usec) = stat.lines().find_map(|l| l.strip_prefix("usage_usec ")) {
        return Ok(usec.trim().parse::<f64>()? / 1e6);
    }
    // Hybrid hosts: no cpu controller in cgroup v2; add up /proc/<pid>/stat of its members.
    let ticks = 100.0; // USER_HZ
    let mut total = 0.0;
    for pid in std::fs::read_to_string(cgroup.join("cgroup.procs"))?.lines() {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if fields.len() > 13 {
            total += (fields[11].parse::<f64>()? + fields[12].parse::<f64>()?) / ticks;
        }
    }
    Ok(total)
}

fn json_number(text: &str, key: &str) -> Result<f64> {
    let at = text
        .find(&format!("\"{key}\""))
        .with_context(|| format!("no {key}"))?;
    let value = text[at..].split(':').nth(1).context("value")?;
    Ok(value
        .trim()
        .split([',', '\n', '}'])
        .next()
        .context("number")?
        .trim()
        .parse()?)
}

fn duration_us(text: &str) -> Result<f64> {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e6)
    } else {
        bail!("unknown duration {text}")
    };
    Ok(number.parse::<f64>()? * factor)
}

/// A command for a tool in a host, in a cgroup.
pub fn tool(host: &Host, program: &str, cgroup: &std::path::Path) -> HostCommand {
    host.command(program).in_cgroup(cgroup)
}
