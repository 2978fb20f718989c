//! `cargo xtask fuzz [--seconds N]`: runs each fuzz target under `fuzz/` (cargo-fuzz,
//! libFuzzer, nightly) for N seconds, installing cargo-fuzz first if it is missing. Each
//! target starts from its seed corpus, checked in under `fuzz/corpus/<target>/`; what
//! libFuzzer adds goes to `fuzz/target/corpus/<target>/` (not checked in, kept between runs),
//! so the seeds stay the few readable cases they are. An input that fails a target is left in
//! `fuzz/artifacts/<target>/`.

use std::{fs, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::workspace;

/// The targets, in `fuzz/Cargo.toml`.
const TARGETS: [&str; 1] = ["xfcc_rewriter"];

/// What `cargo xtask fuzz` was asked for.
#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// How long each target runs.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
}

pub fn run(options: &Options) -> Result<()> {
    install_cargo_fuzz()?;
    let fuzz = workspace().join("fuzz");
    for target in TARGETS {
        let found = fuzz.join("target/corpus").join(target);
        fs::create_dir_all(&found).with_context(|| format!("create {}", found.display()))?;
        let seeds = fuzz.join("corpus").join(target);
        eprintln!(
            "xtask fuzz: {target} for {} s, from {}",
            options.seconds,
            seeds.display()
        );
        let status = Command::new("cargo")
            .args(["+nightly", "fuzz", "run", target])
            .arg(&found)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={}", options.seconds))
            .current_dir(workspace())
            .status()
            .context("run cargo fuzz")?;
        if !status.success() {
            bail!(
                "fuzz target {target} failed ({status}); the input is under {}",
                fuzz.join("artifacts").join(target).display()
            );
        }
    }
    Ok(())
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
