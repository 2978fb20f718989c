//! `cargo xtask fuzz [--seconds N | --minutes N] [--target NAME] [--jobs N] [--sanitizer S]`:
//! runs the fuzz targets under `fuzz/` (cargo-fuzz, libFuzzer, nightly), each for the time
//! given (60 seconds unless told), as many at once as the machine has cores (libFuzzer's
//! loop is one thread), installing cargo-fuzz first if it is missing. Each target starts
//! from its seed corpus, checked in under `fuzz/corpus/<target>/`; what libFuzzer adds goes
//! to `fuzz/target/corpus/<target>/` (not checked in, kept between runs), so the seeds stay
//! the few readable cases they are; `fuzz/dict/<target>.dict`, where there is one, gives
//! libFuzzer the words of the input's grammar. An input that fails a target is left in
//! `fuzz/artifacts/<target>/`; every target runs even when one fails, and the task fails at
//! the end. Then a table: for each target, the executions libFuzzer reports, their rate, and
//! the corpus it ended with.
//!
//! What CI pays for (`.ci/run`: `--seconds 30` on a 2-core machine, from a cold
//! `fuzz/target/`, inside a 90-minute budget the test suite takes most of; the fuzz step
//! should cost at most about ten minutes). Measured cold, all ten targets, on a 2-core
//! machine shared with other builds (so in CPU time; the wall times are estimates for two
//! idle cores from cargo's per-crate timings):
//!
//! - One `cargo fuzz build` for every target: they share the daemon's library and its
//!   dependency tree (kube, aws-lc, rustls, tokio...), compiled once with the fuzzing flags,
//!   each target only linked on top.
//! - No sanitizer unless told (`--sanitizer none`): under cargo-fuzz's default address
//!   sanitizer the step took 1,430 CPU-seconds, about 1,100 of them building; without it
//!   the build took 840. The crates under test have
//!   no `unsafe` outside `tunnel`'s `sys` (`deny(unsafe_code)`), which no target reaches,
//!   and aws-lc's C is not instrumented either way, so ASan would only watch the
//!   dependencies' `unsafe` blocks; panics, overflow checks (debug assertions stay on),
//!   hangs (`-timeout`) and runaway memory (libFuzzer's RSS limit) are caught without it.
//!   `--sanitizer address` builds and runs with ASan, for a long run by hand.
//! - Crates no target reaches (the Kubernetes client, the eBPF loader, the command line,
//!   the log filter's regexes) are built without optimisation (`fuzz/Cargo.toml`'s
//!   profile): 790 CPU-seconds, about seven and a half minutes on two idle cores.
//! - The targets run side by side, one per core (libFuzzer's loop is one thread): ten
//!   targets of 30 s take under three minutes on two cores instead of five and a half.
//!   Their lines are prefixed with their name.
//!
//! So about ten minutes for the step, where ASan and one target at a time took about 16.
//! On the shared machine the figures come from: 34 minutes then, 13 to 16 now.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    num::NonZeroUsize,
    process::{Command, Stdio},
    sync::Mutex,
    thread,
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
    /// Run only this target (default: every one).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    pub target: Option<String>,
    /// How many targets run at once (default: one per core).
    #[arg(long)]
    pub jobs: Option<NonZeroUsize>,
    /// The sanitizer the targets are built with: none (the code fuzzed has no `unsafe`;
    /// faster to build and to run) or address (ASan, for a long run by hand).
    #[arg(
        long,
        default_value = "none",
        value_parser = clap::builder::PossibleValuesParser::new(["none", "address"])
    )]
    pub sanitizer: String,
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
    let sanitizer = options.sanitizer.as_str();
    let jobs = options
        .jobs
        .or_else(|| thread::available_parallelism().ok())
        .map_or(1, NonZeroUsize::get)
        .min(targets.len());
    let fuzz = workspace().join("fuzz");
    eprintln!(
        "xtask fuzz: building {} (sanitizer: {sanitizer})",
        targets.join(", ")
    );
    let started = Instant::now();
    // All of them in one build: they share everything but their own file.
    let mut build = Command::new("cargo");
    build.args(["+nightly", "fuzz", "build", "--sanitizer", sanitizer]);
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
    let built = started.elapsed().as_secs_f64();
    eprintln!("xtask fuzz: built in {built:.0} s; {jobs} target(s) at a time");

    // Workers take the next target until none is left; the table keeps TARGETS' order.
    let queue = Mutex::new(targets.iter().rev().copied().collect::<Vec<_>>());
    let outcomes = Mutex::new(Vec::new());
    thread::scope(|scope| {
        let workers: Vec<_> = (0..jobs)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let Some(target) = queue.lock().expect("queue").pop() else {
                            return Ok(());
                        };
                        let outcome = run_target(target, seconds, sanitizer, jobs > 1)?;
                        outcomes.lock().expect("outcomes").push(outcome);
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("a fuzz worker panicked"))
    })?;
    let mut outcomes = outcomes.into_inner().expect("outcomes");
    outcomes.sort_by_key(|o| targets.iter().position(|t| *t == o.target));
    eprintln!();
    eprintln!(
        "xtask fuzz: {seconds} s per target, {jobs} at a time; built in {built:.0} s, all in {:.0} s",
        started.elapsed().as_secs_f64()
    );
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

/// One target's run; with `prefixed`, each line of its output starts with its name (other
/// targets run beside it).
fn run_target(
    target: &'static str,
    seconds: u64,
    sanitizer: &str,
    prefixed: bool,
) -> Result<Outcome> {
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
        // The build's flags, or cargo fuzz would build the target again with its defaults.
        .args(["+nightly", "fuzz", "run", "--sanitizer", sanitizer, target])
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
        if prefixed {
            eprintln!("{target}: {line}");
        } else {
            eprintln!("{line}");
        }
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
