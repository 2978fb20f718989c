//! `cargo xtask package`: the Debian package of the host service,
//! `target/package/tunnel_<version>_<arch>.deb`, assembled with dpkg-deb (no debhelper: the
//! few steps it would take are here, in the open):
//!
//! - `/usr/bin/tunnel` and `/usr/lib/cni/tunnel-cni` (where Debian's CNI plugins live),
//!   release builds, stripped;
//! - `/lib/systemd/system/tunnel.service` (`deploy/systemd/`), not enabled or started at
//!   installation, handed over without a gap at an upgrade (`deploy/debian/postinst`);
//! - `/etc/tunnel/tunnel.toml`, a conffile that configures nothing yet;
//! - man pages (`tunnel manpages`, clap_mangen) and bash, zsh and fish completions
//!   (`tunnel completions`, clap_complete), from the binary being packaged;
//! - `/usr/share/doc/tunnel/`: copyright, changelog, the example configs and the pods drop-in;
//! - the maintainer scripts of `deploy/debian/`, md5sums, and `Depends` from dpkg-shlibdeps.
//!
//! Then lintian, whose errors fail the task (its warnings are printed).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{setup, workspace};

#[derive(clap::Args)]
pub struct Options {
    /// The package version (default: the tunnel crate's).
    #[arg(long)]
    version: Option<String>,
    /// Package the `tunnel` and `tunnel-cni` binaries of this directory instead of building
    /// release binaries (the package test uses the debug build).
    #[arg(long, value_name = "DIR")]
    prebuilt: Option<PathBuf>,
    /// Where the .deb goes.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Compress with gzip -1 instead of xz: a larger file made much faster (the test's).
    #[arg(long)]
    fast: bool,
    /// Do not run lintian on the result.
    #[arg(long)]
    no_lintian: bool,
}

pub fn run(options: &Options) -> Result<()> {
    setup::apt(&setup::PACKAGE_TOOLS)?;
    let bin_dir = match &options.prebuilt {
        Some(dir) => dir.clone(),
        None => crate::release_binaries()?,
    };
    let version = match &options.version {
        Some(version) => version.clone(),
        None => crate_version()?,
    };
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?;
    let out = options
        .out
        .clone()
        .unwrap_or_else(|| workspace().join("target/package"));
    let compression: &[&str] = if options.fast {
        &["-Zgzip", "-z1"]
    } else {
        &["-Zxz"]
    };
    let deb = build(&bin_dir, &version, &arch, &out, compression)?;
    println!("built {}", deb.display());
    if !options.no_lintian {
        lintian(&deb)?;
    }
    Ok(())
}

/// Assembles the package from the binaries in `bin_dir`; returns the .deb's path.
fn build(
    bin_dir: &Path,
    version: &str,
    arch: &str,
    out: &Path,
    compression: &[&str],
) -> Result<PathBuf> {
    let deploy = workspace().join("deploy");
    let root = out.join(format!("tunnel_{version}_{arch}"));
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("remove {}", root.display()))?;
    }
    let tunnel = root.join("usr/bin/tunnel");
    install_binary(&bin_dir.join("tunnel"), &tunnel)?;
    install_binary(
        &bin_dir.join("tunnel-cni"),
        &root.join("usr/lib/cni/tunnel-cni"),
    )?;
    copy(
        &deploy.join("systemd/tunnel.service"),
        &root.join("lib/systemd/system/tunnel.service"),
        0o644,
    )?;
    copy(
        &deploy.join("systemd/tunnel.toml"),
        &root.join("etc/tunnel/tunnel.toml"),
        0o644,
    )?;

    let man_dir = root.join("usr/share/man/man1");
    check(
        Command::new(&tunnel)
            .arg("manpages")
            .arg("--out")
            .arg(&man_dir),
    )?;
    for page in fs::read_dir(&man_dir)? {
        gzip(&page?.path())?;
    }
    for (shell, path) in [
        ("bash", "usr/share/bash-completion/completions/tunnel"),
        ("zsh", "usr/share/zsh/vendor-completions/_tunnel"),
        ("fish", "usr/share/fish/vendor_completions.d/tunnel.fish"),
    ] {
        let script = Command::new(&tunnel)
            .args(["completions", shell])
            .output()
            .context("run tunnel completions")?;
        if !script.status.success() {
            bail!("tunnel completions {shell} failed");
        }
        write(&root.join(path), &script.stdout, 0o644)?;
    }

    let doc = root.join("usr/share/doc/tunnel");
    copy(
        &deploy.join("debian/copyright"),
        &doc.join("copyright"),
        0o644,
    )?;
    // A native package (no Debian revision): changelog.gz, not changelog.Debian.gz.
    write(
        &doc.join("changelog"),
        changelog(version)?.as_bytes(),
        0o644,
    )?;
    gzip(&doc.join("changelog"))?;
    write(
        &root.join("usr/share/lintian/overrides/tunnel"),
        &fs::read(deploy.join("debian/lintian-overrides"))?,
        0o644,
    )?;
    for example in ["host-a.toml", "host-b.toml"] {
        copy(
            &workspace().join("config").join(example),
            &doc.join("examples").join(example),
            0o644,
        )?;
    }
    copy(
        &deploy.join("systemd/tunnel-pods.conf"),
        &doc.join("examples/tunnel-pods.conf"),
        0o644,
    )?;

    let control = root.join("DEBIAN");
    for script in ["postinst", "prerm", "postrm"] {
        copy(
            &deploy.join("debian").join(script),
            &control.join(script),
            0o755,
        )?;
    }
    write(
        &control.join("conffiles"),
        b"/etc/tunnel/tunnel.toml\n",
        0o644,
    )?;
    write(&control.join("md5sums"), md5sums(&root)?.as_bytes(), 0o644)?;
    let template = fs::read_to_string(deploy.join("debian/control"))?;
    let fields = template
        .replace("@VERSION@", version)
        .replace("@ARCH@", arch)
        .replace("@INSTALLED_SIZE@", &installed_size_kib(&root)?.to_string())
        .replace(
            "@DEPENDS@",
            &shlib_depends(&root, &[&tunnel, &root.join("usr/lib/cni/tunnel-cni")])?,
        );
    write(&control.join("control"), fields.as_bytes(), 0o644)?;

    let deb = out.join(format!("tunnel_{version}_{arch}.deb"));
    check(
        Command::new("dpkg-deb")
            .arg("--root-owner-group")
            .args(compression)
            .arg("--build")
            .arg(&root)
            .arg(&deb),
    )?;
    fs::remove_dir_all(&root)?;
    Ok(deb)
}

/// Runs lintian; its errors fail the build, its warnings are shown.
pub fn lintian(deb: &Path) -> Result<()> {
    let report = Command::new("lintian")
        .args(["--no-tag-display-limit", "--info"])
        .arg(deb)
        .output()
        .context("run lintian (cargo xtask setup installs it)")?;
    let text = String::from_utf8_lossy(&report.stdout);
    print!("{text}");
    let errors = text.lines().filter(|l| l.starts_with("E: ")).count();
    if errors > 0 || !report.status.success() {
        bail!(
            "lintian: {errors} errors\n{}",
            String::from_utf8_lossy(&report.stderr)
        );
    }
    println!(
        "lintian: no errors ({} warnings)",
        text.lines().filter(|l| l.starts_with("W: ")).count()
    );
    Ok(())
}

/// The tunnel crate's version, from its Cargo.toml.
fn crate_version() -> Result<String> {
    let manifest = fs::read_to_string(workspace().join("tunnel/Cargo.toml"))?;
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .map(str::to_string)
        .context("no version in tunnel/Cargo.toml")
}

fn install_binary(from: &Path, to: &Path) -> Result<()> {
    if !from.is_file() {
        bail!("{} is missing: build it first", from.display());
    }
    fs::create_dir_all(to.parent().expect("a path in the package"))?;
    check(
        Command::new("strip")
            .args([
                "--strip-unneeded",
                "--remove-section=.comment",
                "--remove-section=.note",
                "-o",
            ])
            .arg(to)
            .arg(from),
    )?;
    set_mode(to, 0o755)
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    let bytes = fs::read(from).with_context(|| format!("read {}", from.display()))?;
    write(to, &bytes, mode)
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    fs::create_dir_all(path.parent().expect("a path in the package"))?;
    fs::write(path, bytes).with_context(|| format!("write {}", path.display()))?;
    set_mode(path, mode)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

/// gzip -9n, as Debian wants man pages and changelogs (no name or time inside: reproducible).
fn gzip(path: &Path) -> Result<()> {
    check(Command::new("gzip").args(["-9n", "--force"]).arg(path))?;
    set_mode(&PathBuf::from(format!("{}.gz", path.display())), 0o644)
}

/// A Debian changelog of one entry, dated by the last commit (reproducible for a commit).
fn changelog(version: &str) -> Result<String> {
    let date = output(
        Command::new("git")
            .args(["log", "-1", "--format=%aD"])
            .current_dir(workspace()),
    )
    .unwrap_or_else(|_| "Thu, 01 Jan 1970 00:00:00 +0000".into());
    Ok(format!(
        "tunnel ({version}) unstable; urgency=medium\n\n  * Built from the tunnel source tree by cargo xtask package.\n\n -- tunnel developers <tunnel@example.org>  {date}\n"
    ))
}

/// `md5sum` of every file outside DEBIAN/, paths relative to the root.
fn md5sums(root: &Path) -> Result<String> {
    let mut files = Vec::new();
    collect_files(root, root, &mut files)?;
    files.sort();
    let mut command = Command::new("md5sum");
    command.args(&files).current_dir(root);
    output(&mut command).map(|sums| sums + "\n")
}

fn collect_files(root: &Path, dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let relative = path.strip_prefix(root)?.to_path_buf();
        if relative.starts_with("DEBIAN") {
            continue;
        }
        if path.is_dir() {
            collect_files(root, &path, files)?;
        } else {
            files.push(relative);
        }
    }
    Ok(())
}

/// Installed-Size: the files' sizes in KiB, rounded up per file as dpkg-gencontrol does.
fn installed_size_kib(root: &Path) -> Result<u64> {
    let mut files = Vec::new();
    collect_files(root, root, &mut files)?;
    let mut total = 0;
    for file in files {
        total += fs::metadata(root.join(file))?.len().div_ceil(1024);
    }
    Ok(total)
}

/// The shared libraries' packages the binaries need, as dpkg-shlibdeps says (it wants a
/// `debian/control` beside it, so it runs in a scratch directory that has one).
fn shlib_depends(root: &Path, binaries: &[&Path]) -> Result<String> {
    let mut name = root.file_name().expect("a named root").to_os_string();
    name.push(".shlibdeps");
    let scratch = root.with_file_name(name);
    fs::create_dir_all(scratch.join("debian"))?;
    fs::write(
        scratch.join("debian/control"),
        "Source: tunnel\n\nPackage: tunnel\nArchitecture: any\n",
    )?;
    let mut command = Command::new("dpkg-shlibdeps");
    command.arg("-O").args(binaries).current_dir(&scratch);
    let substvars = output(&mut command);
    fs::remove_dir_all(&scratch)?;
    let substvars = substvars?;
    substvars
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .map(str::to_string)
        .with_context(|| format!("no shlibs:Depends in dpkg-shlibdeps's output: {substvars}"))
}

fn check(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

fn output(command: &mut Command) -> Result<String> {
    let out = command
        .output()
        .with_context(|| format!("run {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
