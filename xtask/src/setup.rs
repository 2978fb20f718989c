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
/// What `cargo xtask package` runs: dpkg-shlibdeps (dpkg-dev), strip (binutils), lintian.
pub const PACKAGE_TOOLS: [&str; 3] = ["dpkg-dev", "binutils", "lintian"];
/// What building aws-lc-rs's FIPS module needs (the FIPS build of the daemon, which
/// `cargo xtask test` builds and tests: `--no-default-features --features fips`).
const FIPS_BUILD_PACKAGES: [&str; 2] = ["golang-go", "cmake"];
/// What the package's test runs besides those: debootstrap makes a Debian root once
/// (`DEBIAN_ROOT`), systemd-nspawn boots it, systemd-analyze scores the unit.
const PACKAGE_TEST_PACKAGES: [&str; 3] = ["debootstrap", "systemd-container", "systemd"];
/// The booted root's packages beyond debootstrap's minimal base: systemd as init, and what
/// the test runs inside (procps for the unit's ExecReload, curl as a workload).
const DEBIAN_ROOT_PACKAGES: &str = "systemd,systemd-sysv,dbus,procps,curl";
/// The Debian root the package test boots, relative to the workspace: made once, used
/// read-only under an overlay by each run.
pub const DEBIAN_ROOT: &str = "target/tools/debian-root";

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
    apt(&PACKAGE_TOOLS)?;
    apt(&PACKAGE_TEST_PACKAGES)?;
    apt(&FIPS_BUILD_PACKAGES)?;
    python_tool(
        "kubernetes-validate",
        KUBERNETES_VALIDATE,
        KUBERNETES_VALIDATE_VENV,
    )?;
    python_tool("sslyze", SSLYZE, SSLYZE_VENV)?;
    debian_root()?;
    build_tools()
}

/// A Debian root for the package test to boot with systemd-nspawn: debootstrap's minimal
/// base of this machine's release with systemd, from the mirror apt uses here (about two
/// minutes and 270 MB, once). A root whose last step did not finish is made anew.
fn debian_root() -> Result<()> {
    let root = crate::workspace().join(DEBIAN_ROOT);
    let done = root.with_extension("done");
    if done.exists() {
        return Ok(());
    }
    let (codename, mirror) = debian_release_and_mirror()?;
    say(&format!(
        "making a Debian {codename} root for the package test in {}",
        root.display()
    ));
    if root.exists() {
        std::fs::remove_dir_all(&root).with_context(|| format!("remove {}", root.display()))?;
    }
    run(Command::new("debootstrap")
        .args([
            "--variant=minbase",
            &format!("--include={DEBIAN_ROOT_PACKAGES}"),
            &codename,
        ])
        .arg(&root)
        .arg(&mirror))?;
    std::fs::write(&done, "")?;
    Ok(())
}

/// This machine's Debian codename (os-release) and the first mirror apt has for it.
fn debian_release_and_mirror() -> Result<(String, String)> {
    let os_release = std::fs::read_to_string("/etc/os-release").context("read /etc/os-release")?;
    let codename = os_release
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|c| c.trim_matches('"').to_string())
        .context("no VERSION_CODENAME in /etc/os-release")?;
    let mut sources = Vec::new();
    for file in [
        "/etc/apt/sources.list",
        "/etc/apt/sources.list.d/debian.sources",
    ] {
        sources.extend(std::fs::read_to_string(file).ok());
    }
    if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for entry in entries.flatten() {
            let path = entry.path();
            if path
                .extension()
                .is_some_and(|e| e == "list" || e == "sources")
            {
                sources.extend(std::fs::read_to_string(path).ok());
            }
        }
    }
    let mirror = sources
        .iter()
        .find_map(|text| mirror_for(text, &codename))
        .with_context(|| format!("apt has no source for {codename} main"))?;
    Ok((codename, mirror))
}

/// The URI of `codename`'s main component in an apt sources text (one-line or deb822).
fn mirror_for(text: &str, codename: &str) -> Option<String> {
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.first() == Some(&"deb") {
            let rest: Vec<&&str> = fields[1..].iter().filter(|f| !f.starts_with('[')).collect();
            if rest.len() >= 3 && *rest[1] == codename && rest[2..].iter().any(|c| **c == "main") {
                return Some(rest[0].to_string());
            }
        }
    }
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
        };
        let types = field("Types:").unwrap_or("");
        let suites = field("Suites:").unwrap_or("");
        let components = field("Components:").unwrap_or("");
        if types.split_whitespace().any(|t| t == "deb")
            && suites.split_whitespace().any(|s| s == codename)
            && components.split_whitespace().any(|c| c == "main")
            && let Some(uris) = field("URIs:")
        {
            return uris.split_whitespace().next().map(str::to_string);
        }
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mirror_is_read_from_either_sources_format() {
        let deb822 = "Types: deb\nURIs: http://mirror.test/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n\
                      Types: deb\nURIs: http://security.test/debian-security\nSuites: bookworm-security\nComponents: main\n";
        assert_eq!(
            mirror_for(deb822, "bookworm").as_deref(),
            Some("http://mirror.test/debian")
        );
        assert_eq!(mirror_for(deb822, "trixie"), None);
        let one_line =
            "# comment\ndeb [arch=amd64] http://mirror.test/debian bookworm main contrib\n";
        assert_eq!(
            mirror_for(one_line, "bookworm").as_deref(),
            Some("http://mirror.test/debian")
        );
        assert_eq!(
            mirror_for("deb http://x.test/debian bookworm contrib\n", "bookworm"),
            None
        );
    }
}
