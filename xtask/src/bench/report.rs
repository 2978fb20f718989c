//! The benchmark's table and JSON.

use std::fmt::Write as _;

#[derive(Debug)]
pub struct PathResult {
    pub name: &'static str,
    pub throughput_gbps: Vec<f64>,
    pub keepalive_rps: Vec<f64>,
    pub keepalive_p50_us: Vec<f64>,
    pub keepalive_p99_us: Vec<f64>,
    pub new_conn_rps: Vec<f64>,
    pub first_byte_p99_us: Vec<f64>,
    pub cpu_s_per_gb: Vec<f64>,
}

#[derive(Debug, Default)]
pub struct TunnelResult {
    /// Daemon A, daemon B.
    pub idle_rss_kib: [u64; 2],
    pub idle_connections: usize,
    pub rss_before_kib: [u64; 2],
    pub rss_after_kib: [u64; 2],
    pub connect_captured_us: Vec<f64>,
    pub connect_plain_us: Vec<f64>,
}

pub struct Report {
    pub runs: usize,
    pub paths: Vec<PathResult>,
    pub tunnel: TunnelResult,
}

impl PathResult {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            throughput_gbps: vec![],
            keepalive_rps: vec![],
            keepalive_p50_us: vec![],
            keepalive_p99_us: vec![],
            new_conn_rps: vec![],
            first_byte_p99_us: vec![],
            cpu_s_per_gb: vec![],
        }
    }

    /// The latest run's figures, for progress lines.
    pub fn last_run(&self) -> String {
        let last = |v: &Vec<f64>| v.last().map_or("-".into(), |x| number(*x));
        format!(
            "{} Gbit/s, {} req/s (p50 {} µs, p99 {} µs), {} new conn/s, first byte p99 {} µs",
            last(&self.throughput_gbps),
            last(&self.keepalive_rps),
            last(&self.keepalive_p50_us),
            last(&self.keepalive_p99_us),
            last(&self.new_conn_rps),
            last(&self.first_byte_p99_us),
        )
    }

    fn rows(&self) -> [(&'static str, &'static str, Option<f64>); 7] {
        [
            (
                "one-stream throughput",
                "Gbit/s",
                median(&self.throughput_gbps),
            ),
            (
                "keep-alive requests/s",
                "req/s",
                median(&self.keepalive_rps),
            ),
            (
                "keep-alive p50 latency",
                "µs",
                median(&self.keepalive_p50_us),
            ),
            (
                "keep-alive p99 latency",
                "µs",
                median(&self.keepalive_p99_us),
            ),
            ("new connections/s", "conn/s", median(&self.new_conn_rps)),
            (
                "p99 connect-to-first-byte",
                "µs",
                median(&self.first_byte_p99_us),
            ),
            (
                "proxy CPU per GB carried",
                "CPU-s/GB",
                median(&self.cpu_s_per_gb),
            ),
        ]
    }
}

impl Report {
    pub fn print(&self) {
        print!("{}", self.table());
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nmedian of {} runs each; ratio = value / direct\n",
            self.runs
        );
        let _ = write!(out, "| {:<28} | {:>9} |", "metric", "unit");
        for path in &self.paths {
            let _ = write!(out, " {:>22} |", path.name);
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "|{}|{}|{}",
            "-".repeat(30),
            "-".repeat(11),
            "------------------------|".repeat(self.paths.len())
        );
        let direct = self.paths.first().map(PathResult::rows);
        for row in 0..7 {
            let (label, unit, _) = self.paths[0].rows()[row];
            let _ = write!(out, "| {label:<28} | {unit:>9} |");
            for path in &self.paths {
                let value = path.rows()[row].2;
                let base = direct.as_ref().and_then(|d| d[row].2);
                let cell = match (value, base) {
                    (Some(v), Some(b)) if b > 0.0 && path.name != "direct" => {
                        format!("{} ({:.2}x)", number(v), v / b)
                    }
                    (Some(v), _) => number(v),
                    (None, _) => "-".into(),
                };
                let _ = write!(out, " {cell:>22} |");
            }
            let _ = writeln!(out);
        }
        let t = &self.tunnel;
        let per_conn = |i: usize| {
            (t.rss_after_kib[i] as f64 - t.rss_before_kib[i] as f64)
                / t.idle_connections.max(1) as f64
        };
        let _ = writeln!(out, "\ntunnel only");
        let _ = writeln!(
            out,
            "| daemon idle RSS (A / B)                 | {} KiB / {} KiB |",
            t.idle_rss_kib[0], t.idle_rss_kib[1]
        );
        let _ = writeln!(
            out,
            "| {} idle tunnelled connections: RSS A   | {} → {} KiB ({:.2} KiB per connection) |",
            t.idle_connections,
            t.rss_before_kib[0],
            t.rss_after_kib[0],
            per_conn(0)
        );
        let _ = writeln!(
            out,
            "| {} idle tunnelled connections: RSS B   | {} → {} KiB ({:.2} KiB per connection) |",
            t.idle_connections,
            t.rss_before_kib[1],
            t.rss_after_kib[1],
            per_conn(1)
        );
        let (captured, plain) = (
            median(&t.connect_captured_us).unwrap_or(0.0),
            median(&t.connect_plain_us).unwrap_or(0.0),
        );
        let _ = writeln!(
            out,
            "| connect() median: captured / not captured | {captured:.1} µs / {plain:.1} µs (hook adds {:.1} µs) |",
            captured - plain
        );
        out
    }

    pub fn json(&self) -> String {
        let mut out = String::from("{\n  \"runs\": ");
        let _ = write!(out, "{},\n  \"paths\": {{\n", self.runs);
        for (i, path) in self.paths.iter().enumerate() {
            let _ = write!(out, "    \"{}\": {{", path.name);
            let fields = [
                ("throughput_gbps", &path.throughput_gbps),
                ("keepalive_rps", &path.keepalive_rps),
                ("keepalive_p50_us", &path.keepalive_p50_us),
                ("keepalive_p99_us", &path.keepalive_p99_us),
                ("new_conn_rps", &path.new_conn_rps),
                ("first_byte_p99_us", &path.first_byte_p99_us),
                ("cpu_s_per_gb", &path.cpu_s_per_gb),
            ];
            for (j, (key, values)) in fields.iter().enumerate() {
                let _ = write!(
                    out,
                    "{}\"{key}\": {{\"median\": {}, \"runs\": {:?}}}",
                    if j > 0 { ", " } else { "" },
                    median(values).map_or("null".into(), |m| format!("{m:.3}")),
                    values
                );
            }
            let _ = writeln!(out, "}}{}", if i + 1 < self.paths.len() { "," } else { "" });
        }
        let t = &self.tunnel;
        let _ = write!(
            out,
            "  }},\n  \"tunnel\": {{\"idle_rss_kib\": {:?}, \"idle_connections\": {}, \"rss_before_kib\": {:?}, \"rss_after_kib\": {:?}, \"connect_captured_us\": {:?}, \"connect_plain_us\": {:?}}}\n}}\n",
            t.idle_rss_kib,
            t.idle_connections,
            t.rss_before_kib,
            t.rss_after_kib,
            t.connect_captured_us,
            t.connect_plain_us
        );
        out
    }
}

pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    Some(sorted[sorted.len() / 2])
}

fn number(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// The number after `prefix` in a probe's output line.
pub fn field(text: &str, prefix: &str) -> Option<f64> {
    let start = text.find(prefix)? + prefix.len();
    text[start..].split_whitespace().next()?.parse().ok()
}
