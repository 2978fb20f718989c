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
    let received = parse_iperf3(&out.stdout)
        .with_context(|| format!("iperf3 -J to {target}:{port}: unexpected output"))?;
    Ok((received.bits_per_second / 1e9, received.bytes))
}

/// The part of `iperf3 -J`'s report the bench reads.
#[derive(Debug, serde::Deserialize)]
struct Iperf3Report {
    /// Set, with `end` left empty, when iperf3 gave up (e.g. connection refused); iperf3
    /// usually exits non-zero then too, but not always.
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    end: Iperf3End,
}

#[derive(Debug, Default, serde::Deserialize)]
struct Iperf3End {
    /// What the server received over the whole test: unlike the sender's sum, it leaves out
    /// what was still buffered or in flight when the sender stopped. Optional here only so
    /// that its absence gets its own error message, after `error`.
    #[serde(default)]
    sum_received: Option<Iperf3Sum>,
}

#[derive(Debug, serde::Deserialize)]
struct Iperf3Sum {
    bytes: u64,
    bits_per_second: f64,
}

/// `end.sum_received` of `iperf3 -J` output. A parse error names the JSON path of what was
/// missing or malformed (e.g. "at end.sum_received: missing field `bytes`").
fn parse_iperf3(json: &str) -> Result<Iperf3Sum> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let report: Iperf3Report =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
            let path = error.path().to_string();
            anyhow::anyhow!("at {path}: {}", error.into_inner())
        })?;
    if let Some(error) = report.error {
        bail!("iperf3 reported an error: {error}");
    }
    report
        .end
        .sum_received
        .context("no end.sum_received in the report")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iperf3_report_gives_what_the_server_received() {
        // Trimmed from a real `iperf3 -c ... -J`: the sender's sum comes first and must not
        // be taken for the receiver's.
        let json = r#"{"start": {"version": "iperf 3.12"}, "intervals": [],
            "end": {"sum_sent": {"start": 0, "end": 10.0, "bytes": 9000, "bits_per_second": 7200.5},
                    "sum_received": {"start": 0, "end": 10.0, "bytes": 8000, "bits_per_second": 6400.25}}}"#;
        let sum = parse_iperf3(json).unwrap();
        assert_eq!(sum.bytes, 8000);
        assert_eq!(sum.bits_per_second, 6400.25);
    }

    #[test]
    fn iperf3_errors_name_what_was_missing() {
        let missing = r#"{"end": {"sum_received": {"bits_per_second": 1.0}}}"#;
        let error = format!("{:#}", parse_iperf3(missing).unwrap_err());
        assert!(
            error.contains("end.sum_received") && error.contains("bytes"),
            "{error}"
        );

        let failed = r#"{"start": {}, "intervals": [], "end": {}, "error": "unable to connect"}"#;
        let error = format!("{:#}", parse_iperf3(failed).unwrap_err());
        assert!(error.contains("unable to connect"), "{error}");

        let error = format!("{:#}", parse_iperf3(r#"{"end": {}}"#).unwrap_err());
        assert!(error.contains("no end.sum_received"), "{error}");

        assert!(parse_iperf3("iperf3: error - unable to connect").is_err());
    }
}
