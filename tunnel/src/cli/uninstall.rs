//! `tunnel uninstall`: removes the pinned capture programs and maps. Captured processes then
//! connect directly again, in plaintext, so this is an explicit operator action.

use std::{path::PathBuf, process::ExitCode};

use clap::Args;

use crate::{config::Config, ebpf, errors};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  tunnel uninstall --config /etc/tunnel/tunnel.toml\n  tunnel uninstall --bpf-dir /sys/fs/bpf/tunnel"
)]
#[group(required = true, multiple = false)]
pub struct UninstallArgs {
    /// Remove what the daemon of this config installed (its capture.bpf_dir).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Remove everything pinned under this directory.
    #[arg(long)]
    pub bpf_dir: Option<PathBuf>,
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
            ExitCode::SUCCESS
        }
        Ok(removed) => {
            println!(
                "removed {} program links and {} maps from {}; capture is off",
                removed.links,
                removed.maps,
                bpf_dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tunnel uninstall: {}", errors::chain(&e));
            ExitCode::FAILURE
        }
    }
}
