//! `cargo xtask fuzz [--seconds N | --minutes N] [--target NAME]`: runs the fuzz targets under
//! `fuzz/` (cargo-fuzz, libFuzzer, nightly) one after the other, each for the time given (60
//! seconds unless told), installing cargo-fuzz first if it is missing. Each target starts
//! from its seed corpus, checked in under `fuzz/corpus/<target>/`; what libFuzzer adds goes
//! to `fuzz/target/corpus/<target>/` (not checked in, kept between runs), so the seeds stay
//! the few readable cases they are; `fuzz/dict/<target>.dict`, where there is one, gives
//! libFuzzer the words of the input's grammar. An input that fails a target is left in
//! `fuzz/artifacts/<target>/`; every target runs even when one fails, and the task fails at
//! the end. Then a table: for each target, the executions libFuzzer reports, their rate, and
//! the corpus it ended with.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::{setup, workspace};

/// The targets, in `fuzz/Cargo.toml`.
pub const TARGETS: [&str; 10] = [
    "xfcc_rewriter",
    "config",
    "hbone_connect",
    "spiffe_id",
    "certificate",
    "crl",
    "proxy_protocol",
    "pod_api",
    "cni_stdin",
    "cni_args",
];

/// One input that takes longer than this is a hang: libFuzzer stops and keeps it.
const INPUT_TIMEOUT_SECONDS: u64 = 10;

/// What `cargo xtask fuzz` was asked for.
#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// How long each target runs, in seconds (60 unless told).
    #[arg(long, conflicts_with = "minutes")]
    pub seconds: Option<u64>,
    /// How long each target runs, in minutes.
    #[arg(long)]
    pub minutes: Option<u64>,
    /// Run only this target (default: every one, in turn).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    pub target: Option<String>,
}

impl Options {
    fn seconds(&self) -> u64 {
        match (self.seconds, self.minutes) {
            (Some(seconds), _) => seconds,
            (None, Some(minutes)) => minutes.saturating_mul(60),
            (None, None) => 60,
        }
    }
}

/// What libFuzzer said about one run.
#[derive(Debug, Default, PartialEq, Eq)]
struct Stats {
    executions: Option<u64>,
    corpus: Option<u64>,
}

impl Stats {
    /// Reads one line of libFuzzer's output: the final statistics
    /// (`stat::number_of_executed_units: N`, with `-print_final_stats=1`), and the status
    /// lines (`#N  DONE  cov: ... corp: C/...`, `#N  NEW ...`), the last of which counts when
    /// the final statistics are missing (a run that failed).
    fn read(&mut self, line: &str) {
        if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
            self.executions = n.trim().parse().ok().or(self.executions);
            return;
        }
        let Some(status) = line.strip_prefix('#') else {
            return;
        };
        let mut words = status.split_whitespace();
        let Some(Ok(runs)) = words.next().map(str::parse::<u64>) else {
            return;
        };
        let done = status.contains("DONE");
        if done || self.executions.is_none_or(|n| n < runs) {
            self.executions = Some(runs);
        }
        if let Some(corpus) = status
            .split_whitespace()
            .skip_while(|w| *w != "corp:")
            .nth(1)
            .and_then(|c| c.split('/').next())
            .and_then(|c| c.parse().ok())
        {
            self.corpus = Some(corpus);
        }
    }
}

struct Outcome {
    target: &'static str,
    seconds: f64,
    stats: Stats,
    passed: bool,
}

pub fn run(options: &Options) -> Result<()> {
    // The targets fuzz the daemon's library, whose build script builds the eBPF object.
    setup::build_tools()?;
    install_cargo_fuzz()?;
    let targets: Vec<&'static str> = match &options.target {
        Some(name) => TARGETS.iter().copied().filter(|t| t == name).collect(),
        None => TARGETS.to_vec(),
    };
    let seconds = options.seconds();
    let fuzz = workspace().join("fuzz");
    eprintln!("xtask fuzz: building {}", targets.join(", "));
    let mut build = Command::new("cargo");
    build.args(["+nightly", "fuzz", "build"]);
    if let [one] = targets[..] {
        build.arg(one);
    }
    let status = build
        .current_dir(workspace())
        .status()
        .context("run cargo fuzz build")?;
    if !status.success() {
        bail!("cargo fuzz build failed with {status}");
    }
    let mut outcomes = Vec::new();
    for target in targets {
        outcomes.push(run_target(target, seconds)?);
    }
    eprintln!();
    eprintln!("xtask fuzz: {seconds} s per target");
    eprint!("{}", table(&outcomes));
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.passed)
        .map(|o| o.target)
        .collect();
    if !failed.is_empty() {
        bail!(
            "fuzz target(s) {} failed; the inputs are under {}",
            failed.join(", "),
            fuzz.join("artifacts").display()
        );
    }
    Ok(())
}

fn run_target(target: &'static str, seconds: u64) -> Result<Outcome> {
    let fuzz = workspace().join("fuzz");
    let found = fuzz.join("target/corpus").join(target);
    fs::create_dir_all(&found).with_context(|| format!("create {}", found.display()))?;
    let seeds = fuzz.join("corpus").join(target);
    eprintln!(
        "xtask fuzz: {target} for {seconds} s, from {}",
        seeds.display()
    );
    let started = Instant::now();
    let mut command = Command::new("cargo");
    command
        .args(["+nightly", "fuzz", "run", target])
        .arg(&found)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECONDS}"))
        .arg("-print_final_stats=1");
    // The words of the input's grammar (keys, placeholders), which mutations splice in.
    let dictionary = fuzz.join("dict").join(format!("{target}.dict"));
    if dictionary.exists() {
        command.arg(format!("-dict={}", dictionary.display()));
    }
    let mut child = command
        .current_dir(workspace())
        .stderr(Stdio::piped())
        .spawn()
        .context("run cargo fuzz")?;
    // libFuzzer reports on stderr: passed on as it comes, and read for the statistics.
    let mut stats = Stats::default();
    let stderr = child.stderr.take().expect("piped");
    for line in BufReader::new(stderr).lines() {
        let line = line.context("read cargo fuzz's output")?;
        eprintln!("{line}");
        stats.read(&line);
    }
    let status = child.wait().context("wait for cargo fuzz")?;
    if !status.success() {
        eprintln!(
            "xtask fuzz: {target} failed ({status}); the input is under {}",
            fuzz.join("artifacts").join(target).display()
        );
    }
    Ok(Outcome {
        target,
        seconds: started.elapsed().as_secs_f64(),
        stats,
        passed: status.success(),
    })
}

/// One line per target: executions, their rate over the whole run, the corpus at the end.
fn table(outcomes: &[Outcome]) -> String {
    let mut out = format!(
        "{:<16} {:>8} {:>12} {:>10} {:>8}  {}\n",
        "target", "seconds", "executions", "per second", "corpus", "result"
    );
    let known = |n: Option<u64>| n.map_or_else(|| "?".to_string(), |n| n.to_string());
    for o in outcomes {
        let rate = o
            .stats
            .executions
            .map_or_else(|| "?".into(), |n| format!("{:.0}", n as f64 / o.seconds));
        out.push_str(&format!(
            "{:<16} {:>8.0} {:>12} {:>10} {:>8}  {}\n",
            o.target,
            o.seconds,
            known(o.stats.executions),
            rate,
            known(o.stats.corpus),
            if o.passed { "ok" } else { "FAILED" }
        ));
    }
    out
}

fn install_cargo_fuzz() -> Result<()> {
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if installed {
        return Ok(());
    }
    eprintln!("xtask fuzz: installing cargo-fuzz");
    let status = Command::new("cargo")
        .args(["install", "cargo-fuzz", "--locked"])
        .status()
        .context("run cargo install")?;
    if !status.success() {
        bail!("cargo install cargo-fuzz --locked failed with {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executions_come_from_the_final_statistics_or_the_last_status_line() {
        let mut stats = Stats::default();
        for line in [
            "INFO: Seed: 1234",
            "#2\tINITED cov: 512 ft: 600 corp: 16/1411b exec/s: 0 rss: 40Mb",
            "#4096\tpulse  cov: 520 ft: 640 corp: 20/2Kb lim: 4096 exec/s: 2048 rss: 45Mb",
            "#70123\tDONE   cov: 700 ft: 900 corp: 41/5Kb lim: 4096 exec/s: 2337 rss: 60Mb",
            "Done 70123 runs in 31 second(s)",
            "stat::number_of_executed_units: 70124",
            "stat::average_exec_per_sec:     2262",
        ] {
            stats.read(line);
        }
        assert_eq!(
            stats,
            Stats {
                executions: Some(70124),
                corpus: Some(41)
            }
        );

        // A run cut short by a crash: the last status line.
        let mut crashed = Stats::default();
        for line in [
            "#1000\tNEW    cov: 10 ft: 10 corp: 3/30b lim: 4 exec/s: 0 rss: 30Mb L: 2/4 MS: 1",
            "==1== ERROR: libFuzzer: deadly signal",
        ] {
            crashed.read(line);
        }
        assert_eq!(crashed.executions, Some(1000));
        assert_eq!(crashed.corpus, Some(3));
    }
}
