//! `cargo xtask image`: the DaemonSet's image, built here without a registry or a Docker
//! engine. `tunnel` and `tunnel-cni` (release) go into a root filesystem of their own, with
//! exactly the shared libraries `ldd` says they load, at the same paths; podman builds
//! `deploy/kubernetes/Dockerfile` (`FROM scratch`, `COPY rootfs/ /`) over it and saves the
//! image as an OCI archive, `target/image/tunnel_<version>.oci.tar`, which `tests/image.rs`
//! runs as the DaemonSet runs it.
//!
//! podman rather than buildah alone: the test runs the image with podman anyway, so one
//! package (Debian's `podman`, which brings buildah's library) builds and runs it; `setup`
//! installs it with the test packages.

use std::{
    collections::BTreeSet,
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// The name the manifests give the image (a placeholder for the user's registry), so that an
/// archive imported into a node's runtime is found by the DaemonSet as it is.
pub const NAME: &str = "ghcr.io/tunnel-project/tunnel";
const BINARIES: [&str; 2] = ["tunnel", "tunnel-cni"];

pub fn build() -> Result<PathBuf> {
    crate::setup::apt(&["podman"])?;
    let release = crate::release_binaries()?;
    let workspace = crate::workspace();
    let version = version(&release.join("tunnel"))?;
    let out = workspace.join("target/image");
    let context = out.join("context");
    let rootfs = context.join("rootfs");
    if context.exists() {
        fs::remove_dir_all(&context).with_context(|| format!("remove {}", context.display()))?;
    }
    let bin = rootfs.join("usr/local/bin");
    fs::create_dir_all(&bin)?;
    let mut libraries = BTreeSet::new();
    for name in BINARIES {
        let from = release.join(name);
        copy(&from, &bin.join(name), 0o755)?;
        libraries.extend(shared_libraries(&from)?);
    }
    for library in &libraries {
        let relative = library.strip_prefix("/").expect("ldd names absolute paths");
        let to = rootfs.join(relative);
        fs::create_dir_all(to.parent().expect("a library is in a directory"))?;
        // The file itself, not a symlink to it: the root has nothing else to point into.
        copy(library, &to, 0o755)?;
    }
    let tag = format!("{NAME}:{version}");
    let archive = out.join(format!("tunnel_{version}.oci.tar"));
    let _ = fs::remove_file(&archive);
    let iidfile = out.join("image-id");
    run(Command::new("podman")
        .args([
            "build",
            "--quiet",
            "--no-cache",
            "--layers=false",
            "--pull=never",
        ])
        .arg("--iidfile")
        .arg(&iidfile)
        // Image and layer times at the epoch: the same binaries make the same image.
        .args(["--timestamp", "0"])
        .args(["--build-arg", &format!("VERSION={version}")])
        .args(["--tag", &tag, "--file"])
        .arg(workspace.join("deploy/kubernetes/Dockerfile"))
        .arg(&context))?;
    let saved = run(Command::new("podman")
        .args(["save", "--quiet", "--format", "oci-archive", "--output"])
        .arg(&archive)
        .arg(&tag));
    // The archive is the product; the local copy would only go stale. By id: by name, podman
    // only untags an image that another name points at too.
    let id = fs::read_to_string(&iidfile).unwrap_or_default();
    let _ = Command::new("podman")
        .args(["rmi", "--force", id.trim()])
        .output();
    saved?;
    let (files, bytes) = tree_size(&rootfs)?;
    println!("image {tag}: {}", archive.display());
    println!(
        "  {files} files, {} uncompressed; archive {}",
        mib(bytes),
        mib(fs::metadata(&archive)?.len())
    );
    for path in listing(&rootfs)? {
        println!("  {path}");
    }
    Ok(archive)
}

/// `tunnel --version` of the built binary ("tunnel 0.1.0"), which also shows that it runs.
fn version(tunnel: &Path) -> Result<String> {
    let output = Command::new(tunnel)
        .arg("--version")
        .output()
        .with_context(|| format!("run {} --version", tunnel.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    match text.trim().strip_prefix("tunnel ") {
        Some(version) if output.status.success() => Ok(version.to_string()),
        _ => bail!("{} --version said {text:?}", tunnel.display()),
    }
}

/// The shared libraries `binary` loads, the dynamic loader included, as `ldd` resolves them
/// on this machine (the linux-vdso is the kernel's, not a file).
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let output = Command::new("ldd")
        .arg(binary)
        .output()
        .context("run ldd")?;
    if !output.status.success() {
        bail!(
            "ldd {}: {}",
            binary.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_ldd(&String::from_utf8_lossy(&output.stdout))
}

fn parse_ldd(text: &str) -> Result<Vec<PathBuf>> {
    let mut libraries = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", or the loader:
        // "/lib64/ld-linux-x86-64.so.2 (0x...)", or "linux-vdso.so.1 (0x...)".
        let path = match line.split_once(" => ") {
            Some((name, _)) if line.contains("not found") => bail!("ldd: {name} not found"),
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        if let Some(path) = path {
            libraries.push(PathBuf::from(path));
        }
    }
    Ok(libraries)
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    fs::copy(from, to).with_context(|| format!("copy {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Regular files under `root` and their total size.
fn tree_size(root: &Path) -> Result<(usize, u64)> {
    let mut files = 0;
    let mut bytes = 0;
    for path in listing(root)? {
        let meta = fs::symlink_metadata(root.join(path.trim_start_matches('/')))?;
        if meta.is_file() {
            files += 1;
            bytes += meta.len();
        }
    }
    Ok((files, bytes))
}

/// Every file under `root`, as absolute paths inside it, with its size.
fn listing(root: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let inside = path.strip_prefix(root).expect("under the root");
                out.push(format!("/{}", inside.display()));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_lines_give_the_files_loaded() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f1)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        let missing = "\tlibfoo.so.1 => not found\n";
        assert!(
            parse_ldd(missing)
                .unwrap_err()
                .to_string()
                .contains("libfoo")
        );
    }
}
