//! `cargo xtask <task>`: what cargo cannot do alone. Each task installs what it needs first
//! (a fresh machine has only Rust stable + nightly, gcc and Python), so these are the
//! commands a newcomer runs.

mod bench;
mod demo;
mod fuzz;
mod image;
mod package;
mod setup;

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (apt packages, rust-src, bpf-linker); idempotent.
    Setup,
    /// Build only the eBPF object (target/bpfel-unknown-none/release/tunnel-ebpf on a
    /// little-endian host).
    BuildEbpf,
    /// Build the DaemonSet's image (deploy/kubernetes/Dockerfile, from scratch) offline with
    /// podman, as an OCI archive: target/image/tunnel_<version>.oci.tar.
    Image,
    /// Build and run the daemon: `cargo xtask run -- --config FILE`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, then run the whole test suite (unit, in-process and end-to-end; needs root).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, then show transparent mTLS on two test hosts made of network namespaces.
    Demo,
    /// Set up, then measure direct vs tunnel vs stunnel+nginx side by side (README).
    Bench(bench::Options),
    /// Run the fuzz targets under fuzz/ (cargo-fuzz on nightly; installed if missing).
    Fuzz(fuzz::Options),
    /// Set up, then run the soak (tests/soak.rs): mixed pod traffic across two nodes for
    /// MINUTES while certificates renew, the policy reloads, pods come and go and daemons
    /// are killed -9; needs root.
    Soak {
        #[arg(long, default_value_t = 3.0)]
        minutes: f64,
    },
    /// Build the Debian package of the host service: target/package/tunnel_<version>_<arch>.deb
    /// (release binaries, the systemd unit, a conffile, man pages, completions), then lintian.
    Package(package::Options),
    /// (bench helper) median connect() latency to ADDR (or to a listener of its own on
    /// loopback: `loopback`) over N tries.
    #[command(hide = true)]
    ProbeConnect { target: String, count: usize },
    /// (bench helper) HTTP/1.1 Connection: close loop; rate and connect-to-first-byte.
    #[command(hide = true)]
    ProbeFirstByte {
        target: std::net::SocketAddr,
        connections: usize,
        seconds: u64,
    },
    /// (bench helper) N connections opened at once (one HTTP/1.1 request each); p50/p99
    /// from their release to their first byte.
    #[command(hide = true)]
    ProbeBurst {
        target: std::net::SocketAddr,
        count: usize,
    },
    /// (bench helper) N calls one after another; the first one's connect-to-first-byte and
    /// the median of the rest.
    #[command(hide = true)]
    ProbeFirstCalls {
        target: std::net::SocketAddr,
        count: usize,
    },
    /// (bench helper) keep-alive requests one at a time at RATE/s; p50/p90/p99 latency.
    #[command(hide = true)]
    ProbeRate {
        target: std::net::SocketAddr,
        rate: u32,
        seconds: u64,
    },
    /// (bench helper) hold N idle connections open.
    #[command(hide = true)]
    ProbeHold {
        target: std::net::SocketAddr,
        count: usize,
        seconds: u64,
    },
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::all(),
        Task::BuildEbpf => build_ebpf(),
        Task::Image => image::build().map(drop),
        Task::Run { args } => {
            setup::build_tools()?;
            cargo(&["build", "--package", "tunnel"])?;
            let status = Command::new(workspace().join("target/debug/tunnel"))
                .arg("run")
                .args(&args)
                .status()?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Task::Test { args } => {
            setup::all()?;
            kubeapi_selftest()?;
            // tests/image.rs runs the archive.
            image::build()?;
            let mut test = vec!["test", "--workspace", "--exclude", "tunnel-ebpf"];
            test.extend(args.iter().map(String::as_str));
            test_with_total(&test)?;
            // The FIPS build: aws-lc-rs's FIPS module for everything, no ring. Its crypto
            // tests, and that the provider calls itself FIPS.
            cargo(&[
                "test",
                "--package",
                "tunnel",
                "--lib",
                "--no-default-features",
                "--features",
                "fips",
                "--",
                "tls::",
            ])
        }
        Task::Demo => {
            setup::all()?;
            demo::run()
        }
        Task::Bench(options) => bench::run(&options),
        Task::Fuzz(options) => fuzz::run(&options),
        Task::Soak { minutes } => {
            setup::all()?;
            let status = Command::new("cargo")
                .args(["test", "--package", "tunnel", "--test", "soak"])
                .args(["--", "--ignored", "--nocapture"])
                .env("TUNNEL_SOAK_MINUTES", minutes.to_string())
                .current_dir(workspace())
                .status()
                .context("run cargo test")?;
            if !status.success() {
                bail!("the soak failed");
            }
            Ok(())
        }
        Task::Package(options) => package::run(&options),
        Task::ProbeConnect { target, count } => bench::probes::connect_latency(&target, count),
        Task::ProbeFirstByte {
            target,
            connections,
            seconds,
        } => bench::probes::connect_to_first_byte(target, connections, seconds),
        Task::ProbeFirstCalls { target, count } => bench::probes::first_calls(target, count),
        Task::ProbeBurst { target, count } => bench::probes::burst(target, count),
        Task::ProbeRate {
            target,
            rate,
            seconds,
        } => bench::probes::fixed_rate(target, rate, seconds),
        Task::ProbeHold {
            target,
            count,
            seconds,
        } => bench::probes::hold(target, count, seconds),
    }
}

/// The eBPF object alone, with the flags `tunnel/build.rs` (aya-build) uses, for the machine
/// this runs on (which is the machine it is built for: xtask does not cross-compile).
fn build_ebpf() -> Result<()> {
    setup::build_tools()?;
    let arch = bpf_target_arch(std::env::consts::ARCH)?;
    // aya-build picks the BPF target by the endianness of the target it builds the loader
    // for; so does this, for the host's.
    let target = if cfg!(target_endian = "big") {
        "bpfeb-unknown-none"
    } else {
        "bpfel-unknown-none"
    };
    let status = Command::new("cargo")
        .args([
            "+nightly",
            "build",
            "--release",
            "-Z",
            "build-std=core",
            "--target",
            target,
        ])
        .args(["--package", "tunnel-ebpf"])
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{arch}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf"),
        )
        .current_dir(workspace())
        .status()?;
    if !status.success() {
        bail!("building the eBPF object failed");
    }
    println!(
        "built {}",
        workspace()
            .join(format!("target/{target}/release/tunnel-ebpf"))
            .display()
    );
    Ok(())
}

/// The `bpf_target_arch` cfg aya-ebpf wants for a Rust `target_arch`: it picks aya-ebpf's
/// kernel bindings for that architecture (e.g. the `pt_regs` register layout its argument
/// readers use), and a kernel program built for another architecture reads the wrong
/// fields. aya-build, which `cargo build` runs through `tunnel/build.rs`, derives it the same
/// way from the target the daemon is built for (the Rust name, except that any `riscv64*`
/// is `riscv64`); this also refuses an architecture aya-ebpf has no bindings for, instead of
/// letting the eBPF crate fail to compile on a missing module.
fn bpf_target_arch(arch: &str) -> Result<&'static str> {
    Ok(match arch {
        "x86_64" => "x86_64",
        "aarch64" => "aarch64",
        "arm" => "arm",
        "loongarch64" => "loongarch64",
        "mips" => "mips",
        "mips64" => "mips64",
        "powerpc64" => "powerpc64",
        "s390x" => "s390x",
        riscv if riscv.starts_with("riscv64") => "riscv64",
        other => bail!(
            "build-ebpf: no eBPF build for host architecture {other:?} (aya-ebpf supports \
             x86_64, aarch64, arm, loongarch64, mips, mips64, powerpc64, riscv64, s390x)"
        ),
    })
}

/// Checks the Kubernetes API stand-in the pod tests talk to against the list and watch
/// protocol first (about 10 s), so a pod test failing is the daemon's failure, not the
/// stand-in's.
fn kubeapi_selftest() -> Result<()> {
    let status = Command::new("python3")
        .arg(workspace().join("tests/support/kubeapi_selftest.py"))
        .current_dir(workspace())
        .status()
        .context("run tests/support/kubeapi_selftest.py")?;
    if !status.success() {
        bail!("the Kubernetes API stand-in's self-check failed ({status})");
    }
    Ok(())
}

/// Runs `cargo test`, echoing its output, and ends with the total over every test binary
/// ("N passed, M failed"), which one test binary's own summary line does not give.
fn test_with_total(args: &[&str]) -> Result<()> {
    use std::io::{BufRead as _, BufReader};
    let mut child = Command::new("cargo")
        .args(args)
        .current_dir(workspace())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("run cargo test")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(summary) = line.strip_prefix("test result: ") {
            let count = |word: &str| {
                summary
                    .split(';')
                    .find_map(|part| {
                        part.trim()
                            .trim_start_matches("ok. ")
                            .trim_start_matches("FAILED. ")
                            .strip_suffix(word)
                    })
                    .and_then(|n| n.trim().parse::<u64>().ok())
            };
            passed += count(" passed").unwrap_or(0);
            failed += count(" failed").unwrap_or(0);
        }
    }
    let status = child.wait()?;
    println!("\ntests: {passed} passed, {failed} failed");
    if !status.success() {
        bail!("cargo test failed");
    }
    Ok(())
}

/// The release `tunnel` and `tunnel-cni` (the image and the package ship both); their
/// directory.
pub fn release_binaries() -> Result<PathBuf> {
    setup::build_tools()?;
    cargo(&[
        "build",
        "--release",
        "--locked",
        "--package",
        "tunnel",
        "--package",
        "tunnel-cni",
    ])?;
    Ok(workspace().join("target/release"))
}

pub fn cargo(args: &[&str]) -> Result<()> {
    let status = Command::new("cargo")
        .args(args)
        .current_dir(workspace())
        .status()
        .context("run cargo")?;
    if !status.success() {
        bail!("cargo {} failed", args.join(" "));
    }
    Ok(())
}

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_target_arch_follows_aya_names() {
        assert_eq!(bpf_target_arch("x86_64").unwrap(), "x86_64");
        assert_eq!(bpf_target_arch("aarch64").unwrap(), "aarch64");
        assert_eq!(bpf_target_arch("riscv64").unwrap(), "riscv64");
        let error = bpf_target_arch("x86").unwrap_err().to_string();
        assert!(error.contains("\"x86\""), "{error}");
    }
}
