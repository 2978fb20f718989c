//! Installs what the project needs, skipping what is already there: Debian packages, the
//! nightly `rust-src` component (`bpfel-unknown-none` has no prebuilt `core`, so the eBPF
//! crate builds it with `-Z build-std=core`), and `bpf-linker` built against LLVM 22: it
//! links the LLVM bitcode nightly's rustc emits, so its LLVM must have the same major
//! version, and building it against the system's LLVM needs that LLVM's development
//! packages (with Polly and zstd, which Debian's LLVM libraries link to). Also the Python
//! tools tests run, from PyPI, each in a venv: the validator of the Kubernetes manifests'
//! test (`kubernetes-validate`) and the TLS scanner of the tunnel port's test (`sslyze`).

use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// LLVM that bpf-linker links against; matches nightly's LLVM major version.
const LLVM: &str = "22";
const BUILD_PACKAGES: [&str; 3] = ["llvm-22-dev", "libpolly-22-dev", "libzstd-dev"];
/// What the end-to-end tests and the demo run inside test hosts.
const TEST_PACKAGES: [&str; 11] = [
    "iproute2",
    "util-linux",
    "curl",
    "tcpdump",
    "openssl",
    "procps",
    // The certificate tests make their faulty certificates with another toolkit than the
    // daemon's own CA code (tests/support/mkpki.py, run by Debian's /usr/bin/python3).
    "python3-cryptography",
    // `python3 -m venv` of Debian's Python needs it (ensurepip), for the PyPI tools.
    "python3-venv",
    // tunnel-cni's end-to-end tests chain it after the reference bridge and host-local
    // plugins (/usr/lib/cni), driven as a container runtime drives them.
    "containernetworking-plugins",
    // tests/image.rs runs the DaemonSet's image (`cargo xtask image` builds it with podman
    // too) under runc, the runtime containerd uses by default: Debian's podman prefers crun,
    // which refuses a host whose cgroup v2 hierarchy beside v1 ones has controllers.
    "podman",
    "runc",
];
/// The Kubernetes manifests' schema validator (tests/manifests.rs), pinned: its release
/// fixes which Kubernetes versions' schemas it carries (up to 1.37 for this one).
const KUBERNETES_VALIDATE: &str = "1.37.0";
/// Its venv, relative to the workspace; tests/manifests.rs runs it from there.
const KUBERNETES_VALIDATE_VENV: &str = "target/tools/kubernetes-validate";
/// The TLS scanner tests/mtls.rs points at the tunnel port, pinned, and its venv.
const SSLYZE: &str = "6.3.1";
const SSLYZE_VENV: &str = "target/tools/sslyze";

/// Everything for building and testing.
pub fn all() -> Result<()> {
    apt(&TEST_PACKAGES)?;
    python_tool(
        "kubernetes-validate",
        KUBERNETES_VALIDATE,
        KUBERNETES_VALIDATE_VENV,
    )?;
    python_tool("sslyze", SSLYZE, SSLYZE_VENV)?;
    build_tools()
}

/// A PyPI package, pinned, in a venv of the project's own made by Debian's Python. Not pip
/// into the system: Debian's Python is externally managed (PEP 668: pip refuses without
/// `--break-system-packages`), and PyPI packages there would shadow the Debian ones other
/// tests use. Nor the `python3` first on PATH, which may be another installation that the
/// next machine lacks. Under target/, so `cargo clean` removes it and the next setup makes
/// it again; a venv without the pinned version is made anew.
fn python_tool(package: &str, version: &str, venv: &str) -> Result<()> {
    let venv = crate::workspace().join(venv);
    let installed = Command::new(venv.join("bin/pip"))
        .args(["show", "--disable-pip-version-check", package])
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| l.trim() == format!("Version: {version}"))
        });
    if installed {
        return Ok(());
    }
    say(&format!(
        "installing {package} {version} in {}",
        venv.display()
    ));
    run(Command::new("/usr/bin/python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv))?;
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        &format!("{package}=={version}"),
    ]))
}

/// What `cargo build` of the daemon needs (its build script compiles the eBPF object).
pub fn build_tools() -> Result<()> {
    if !has_rust_src()? {
        say("adding rust-src to the nightly toolchain");
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    if !has_bpf_linker() {
        apt(&BUILD_PACKAGES)?;
        say("building bpf-linker against LLVM 22 (about two minutes, once)");
        let prefix = format!("/usr/lib/llvm-{LLVM}");
        let path = format!("{prefix}/bin:{}", std::env::var("PATH").unwrap_or_default());
        run(Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--no-default-features",
                "--features",
                &format!("llvm-{LLVM}"),
            ])
            .env(format!("LLVM_SYS_{LLVM}1_PREFIX"), &prefix)
            .env("PATH", path))?;
    }
    Ok(())
}

/// Installs the packages that are missing (one `apt-get update` first, only if needed).
pub fn apt(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    say(&format!("installing {}", missing.join(" ")));
    let sudo = if is_root() { None } else { Some("sudo") };
    let apt_get = |args: &[&str]| {
        let mut command = Command::new(sudo.unwrap_or("apt-get"));
        if sudo.is_some() {
            command.arg("apt-get");
        }
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        command
    };
    run(&mut apt_get(&["update", "-qq"]))?;
    let mut install = apt_get(&["install", "-y", "-qq", "--no-install-recommends"]);
    install.args(&missing);
    run(&mut install)
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn has_rust_src() -> Result<bool> {
    let output = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .context("run rustup (is the nightly toolchain installed?)")?;
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src")))
}

fn has_bpf_linker() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    })
}

fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

fn say(message: &str) {
    eprintln!("xtask setup: {message}");
}
