//! The benchmark's table and JSON.

use std::fmt::Write as _;

/// One row of the side-by-side table, in table order (also the index into
/// [`PathResult`]'s runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    Throughput,
    KeepaliveRps,
    KeepaliveP50,
    KeepaliveP99,
    FixedRateP50,
    FixedRateP99,
    NewConnRps,
    FirstByteP99,
    BurstP50,
    BurstP99,
    CpuPerGb,
    CpuPer1kRequests,
    CpuPer1kConnections,
}

impl Metric {
    pub const ALL: [Metric; 13] = [
        Metric::Throughput,
        Metric::KeepaliveRps,
        Metric::KeepaliveP50,
        Metric::KeepaliveP99,
        Metric::FixedRateP50,
        Metric::FixedRateP99,
        Metric::NewConnRps,
        Metric::FirstByteP99,
        Metric::BurstP50,
        Metric::BurstP99,
        Metric::CpuPerGb,
        Metric::CpuPer1kRequests,
        Metric::CpuPer1kConnections,
    ];

    /// (JSON key, table label, unit)
    fn describe(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Metric::Throughput => ("throughput_gbps", "one-stream throughput", "Gbit/s"),
            Metric::KeepaliveRps => ("keepalive_rps", "keep-alive requests/s", "req/s"),
            Metric::KeepaliveP50 => ("keepalive_p50_us", "keep-alive p50 (saturated)", "µs"),
            Metric::KeepaliveP99 => ("keepalive_p99_us", "keep-alive p99 (saturated)", "µs"),
            Metric::FixedRateP50 => ("fixed_rate_p50_us", "p50 at 1000 req/s", "µs"),
            Metric::FixedRateP99 => ("fixed_rate_p99_us", "p99 at 1000 req/s", "µs"),
            Metric::NewConnRps => ("new_conn_rps", "new connections/s", "conn/s"),
            Metric::FirstByteP99 => ("first_byte_p99_us", "p99 connect-to-first-byte", "µs"),
            Metric::BurstP50 => ("burst_p50_us", "burst of 3000 connects p50", "µs"),
            Metric::BurstP99 => ("burst_p99_us", "burst of 3000 connects p99", "µs"),
            Metric::CpuPerGb => ("cpu_s_per_gb", "proxy CPU per GB carried", "CPU-s/GB"),
            Metric::CpuPer1kRequests => {
                ("cpu_ms_per_1k_req", "proxy CPU per 1k requests", "CPU-ms")
            }
            Metric::CpuPer1kConnections => {
                ("cpu_ms_per_1k_conn", "proxy CPU per 1k new conns", "CPU-ms")
            }
        }
    }
}

/// Every run's figures for one path.
#[derive(Debug)]
pub struct PathResult {
    pub name: &'static str,
    /// Indexed by `Metric as usize`.
    values: [Vec<f64>; Metric::ALL.len()],
}

impl PathResult {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            values: Default::default(),
        }
    }

    pub fn push(&mut self, metric: Metric, value: f64) {
        self.values[metric as usize].push(value);
    }

    fn runs(&self, metric: Metric) -> &[f64] {
        &self.values[metric as usize]
    }

    pub fn median(&self, metric: Metric) -> Option<f64> {
        median(self.runs(metric))
    }

    /// The median of each run's value over the same run's value on `base`. Runs are paired
    /// because the two were measured seconds apart; a ratio of medians would mix runs taken
    /// minutes apart, under whatever else the machine was doing then.
    pub fn paired_ratio(&self, base: &PathResult, metric: Metric) -> Option<f64> {
        let ratios: Vec<f64> = self
            .runs(metric)
            .iter()
            .zip(base.runs(metric))
            .filter(|(_, b)| **b > 0.0)
            .map(|(v, b)| v / b)
            .collect();
        median(&ratios)
    }

    /// The latest run's figures, for progress lines.
    pub fn last_run(&self) -> String {
        Metric::ALL
            .iter()
            .filter_map(|metric| {
                let (_, label, unit) = metric.describe();
                self.runs(*metric)
                    .last()
                    .map(|v| format!("{label} {} {unit}", number(*v)))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[derive(Debug, Default, serde::Serialize)]
pub struct TunnelResult {
    /// Daemon A, daemon B.
    pub idle_rss_kib: [u64; 2],
    pub idle_connections: usize,
    pub rss_before_kib: [u64; 2],
    pub rss_after_kib: [u64; 2],
    pub connect_captured_us: Vec<f64>,
    pub connect_plain_us: Vec<f64>,
    /// The first call through daemons that just started, and the median of the next 49.
    pub first_call_us: [f64; 2],
    /// What each daemon chose for its record cipher, as it logged it (A, B).
    pub record_cipher: [String; 2],
}

pub struct Report {
    pub runs: usize,
    pub paths: Vec<PathResult>,
    pub tunnel: TunnelResult,
}

impl Report {
    /// `path`'s paired ratio to the direct path (none for direct itself).
    fn ratio_to_direct(&self, path: &PathResult, metric: Metric) -> Option<f64> {
        self.paths
            .iter()
            .find(|p| p.name == "direct" && p.name != path.name)
            .and_then(|direct| path.paired_ratio(direct, metric))
    }

    pub fn print(&self) {
        print!("{}", self.table());
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nmedian of {} runs each; (ratio) = median over runs of value / that run's direct value\n",
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
        for metric in Metric::ALL {
            let (_, label, unit) = metric.describe();
            let _ = write!(out, "| {label:<28} | {unit:>9} |");
            for path in &self.paths {
                let ratio = self.ratio_to_direct(path, metric);
                let cell = match (path.median(metric), ratio) {
                    (Some(v), Some(r)) => format!("{} ({r:.2}x)", number(v)),
                    (Some(v), None) => number(v),
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
        let _ = writeln!(out, "\ntunnel only:\n\n| measure | value |\n|---|---|");
        let _ = writeln!(
            out,
            "| daemon idle RSS (A / B)                 | {} KiB / {} KiB |",
            t.idle_rss_kib[0], t.idle_rss_kib[1]
        );
        // Not measured under `--only`: no rows rather than rows of zeros.
        if t.idle_connections > 0 {
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
        }
        let _ = writeln!(
            out,
            "| first call after start / warm call (connect to first byte) | {:.0} µs / {:.0} µs |",
            t.first_call_us[0], t.first_call_us[1]
        );
        let _ = writeln!(
            out,
            "| record cipher A / B | {} / {} |",
            t.record_cipher[0], t.record_cipher[1]
        );
        out
    }

    /// The report as JSON: every path's medians, ratios and runs, and the tunnel-only
    /// figures. Paths and metrics keep the table's order (a JSON object's order carries no
    /// meaning, but a reader comparing two files by eye expects it).
    pub fn json(&self) -> serde_json::Result<String> {
        let paths = OrderedMap(
            self.paths
                .iter()
                .map(|path| (path.name, PathJson { report: self, path }))
                .collect(),
        );
        let mut out = serde_json::to_string_pretty(&ReportJson {
            runs: self.runs,
            paths,
            tunnel: &self.tunnel,
        })?;
        out.push('\n');
        Ok(out)
    }
}

/// A struct rather than `json!`, which would build a sorted map and lose the order.
#[derive(serde::Serialize)]
struct ReportJson<'a> {
    runs: usize,
    paths: OrderedMap<&'static str, PathJson<'a>>,
    tunnel: &'a TunnelResult,
}

/// Serializes as a JSON object with its entries in this order (serde_json's own map sorts
/// its keys unless built with `preserve_order`).
struct OrderedMap<K, V>(Vec<(K, V)>);

impl<K: serde::Serialize, V: serde::Serialize> serde::Serialize for OrderedMap<K, V> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// One path's figures: `{"<metric key>": {"median", "ratio_to_direct", "runs"}, ...}`.
struct PathJson<'a> {
    report: &'a Report,
    path: &'a PathResult,
}

/// `median` and `ratio_to_direct` are rounded to 3 decimals (more would be noise); `runs`
/// are as measured. A missing figure is `null`.
#[derive(serde::Serialize)]
struct MetricJson<'a> {
    median: Option<f64>,
    ratio_to_direct: Option<f64>,
    runs: &'a [f64],
}

impl serde::Serialize for PathJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let round = |v: f64| (v * 1000.0).round() / 1000.0;
        serializer.collect_map(Metric::ALL.iter().map(|metric| {
            let (key, _, _) = metric.describe();
            let runs = self.path.runs(*metric);
            let figures = MetricJson {
                median: median(runs).map(round),
                ratio_to_direct: self.report.ratio_to_direct(self.path, *metric).map(round),
                runs,
            };
            (key, figures)
        }))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_pair_each_run_with_its_own_baseline() {
        let mut direct = PathResult::new("direct");
        let mut tunnel = PathResult::new("tunnel");
        for (d, t) in [(1.0, 2.0), (1.0, 4.0), (3.0, 6.0)] {
            direct.push(Metric::Throughput, d);
            tunnel.push(Metric::Throughput, t);
        }
        // Per run: 2, 4, 2 → 2. The ratio of medians (4 / 1) would say 4.
        assert_eq!(tunnel.paired_ratio(&direct, Metric::Throughput), Some(2.0));
        assert_eq!(tunnel.paired_ratio(&direct, Metric::CpuPerGb), None);
    }

    #[test]
    fn json_keeps_table_order_and_writes_missing_figures_as_null() {
        let mut direct = PathResult::new("direct");
        let mut tunnel = PathResult::new("tunnel");
        direct.push(Metric::Throughput, 3.0);
        tunnel.push(Metric::Throughput, 1.0);
        let report = Report {
            runs: 1,
            paths: vec![tunnel, direct],
            tunnel: TunnelResult::default(),
        };
        let text = report.json().unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let throughput = &json["paths"]["tunnel"]["throughput_gbps"];
        assert_eq!(throughput["median"], 1.0);
        assert_eq!(throughput["ratio_to_direct"], 0.333);
        assert_eq!(throughput["runs"], serde_json::json!([1.0]));
        assert!(json["paths"]["tunnel"]["cpu_s_per_gb"]["median"].is_null());
        assert_eq!(json["tunnel"]["idle_connections"], 0);
        // Paths as given (not sorted), metrics in table order.
        assert!(text.find("\"tunnel\": {").unwrap() < text.find("\"direct\": {").unwrap());
        assert!(text.find("throughput_gbps").unwrap() < text.find("keepalive_rps").unwrap());
    }

    #[test]
    fn metrics_are_listed_in_declaration_order() {
        for (index, metric) in Metric::ALL.iter().enumerate() {
            assert_eq!(*metric as usize, index, "{metric:?}");
        }
    }
}
