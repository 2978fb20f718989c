//! `tunnel uninstall`: removes the pinned capture programs and maps. Captured processes then
//! connect directly again, in plaintext, so this is an explicit operator action. Optionally
//! also the pods' registrations and the registration socket, so that a later install does not
//! take up pods this one left (the uninstall DaemonSet does, in an image without a shell).

use std::{io, path::Path, path::PathBuf, process::ExitCode};

use clap::{ArgGroup, Args};

use crate::{config::Config, ebpf, errors};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  tunnel uninstall --config /etc/tunnel/tunnel.toml\n  tunnel uninstall --bpf-dir /sys/fs/bpf/tunnel\n  \
tunnel uninstall --bpf-dir /sys/fs/bpf/tunnel --pods-state-dir /var/lib/tunnel/pods --pods-socket /run/tunnel/pods.sock",
    group(ArgGroup::new("installed").required(true).args(["config", "bpf_dir"]))
)]
pub struct UninstallArgs {
    /// Remove what the daemon of this config installed (its capture.bpf_dir).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Remove everything pinned under this directory.
    #[arg(long)]
    pub bpf_dir: Option<PathBuf>,
    /// Then also remove this directory of pod registrations ([pods] state_dir), if it exists.
    #[arg(long, value_name = "DIR")]
    pub pods_state_dir: Option<PathBuf>,
    /// Then also remove this registration socket ([pods] socket), if it exists.
    #[arg(long, value_name = "PATH")]
    pub pods_socket: Option<PathBuf>,
}

pub fn run(args: UninstallArgs) -> ExitCode {
    let bpf_dir = match (args.bpf_dir, args.config) {
        (Some(dir), _) => dir,
        (None, Some(config)) => match Config::load(&config) {
            Ok(config) => config.capture.bpf_dir.value,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(64);
            }
        },
        (None, None) => unreachable!("clap requires one of --config and --bpf-dir"),
    };
    match ebpf::uninstall(&bpf_dir) {
        Ok(removed) if removed.links == 0 && removed.maps == 0 => {
            println!("nothing installed under {}", bpf_dir.display());
        }
        Ok(removed) => {
            println!(
                "removed {} program links and {} maps from {}; capture is off",
                removed.links,
                removed.maps,
                bpf_dir.display()
            );
        }
        Err(e) => {
            eprintln!("tunnel uninstall: {}", errors::chain(&e));
            return ExitCode::FAILURE;
        }
    }
    let removals = [
        (args.pods_state_dir.as_deref(), "pod registrations"),
        (args.pods_socket.as_deref(), "registration socket"),
    ];
    for (path, what) in removals {
        let Some(path) = path else { continue };
        match remove(path) {
            Ok(true) => println!("removed the {what} {}", path.display()),
            Ok(false) => {}
            Err(e) => {
                eprintln!("tunnel uninstall: remove {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

/// Removes a file, socket or directory tree; `false` if there was none.
fn remove(path: &Path) -> io::Result<bool> {
    let result = match path.symlink_metadata() {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::Parser as _;

    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<super::UninstallArgs, String> {
        let argv = ["tunnel", "uninstall"].iter().chain(args);
        match Cli::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .command
        {
            Command::Uninstall(args) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn takes_one_of_config_and_bpf_dir_and_the_pods_paths_beside_either() {
        let args = parse(&[
            "--bpf-dir=/sys/fs/bpf/tunnel",
            "--pods-state-dir=/var/lib/tunnel/pods",
            "--pods-socket=/run/tunnel/pods.sock",
        ])
        .unwrap();
        assert_eq!(
            args.pods_state_dir.unwrap(),
            Path::new("/var/lib/tunnel/pods")
        );
        assert_eq!(
            args.pods_socket.unwrap(),
            Path::new("/run/tunnel/pods.sock")
        );
        assert!(parse(&["--config=c.toml", "--pods-socket=/s"]).is_ok());
        let neither = parse(&["--pods-socket=/s"]).unwrap_err();
        assert!(
            neither.contains("--config") && neither.contains("--bpf-dir"),
            "{neither}"
        );
        assert!(parse(&["--config=c.toml", "--bpf-dir=/b"]).is_err());
    }

    #[test]
    fn removes_a_tree_or_a_file_and_says_when_there_was_none() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("pods");
        std::fs::create_dir_all(tree.join("a")).unwrap();
        std::fs::write(tree.join("a/record"), "x").unwrap();
        let socket = dir.path().join("pods.sock");
        std::fs::write(&socket, "").unwrap();
        assert!(super::remove(&tree).unwrap());
        assert!(super::remove(&socket).unwrap());
        assert!(!tree.exists() && !socket.exists());
        assert!(!super::remove(&tree).unwrap());
    }
}
