//! `tunnel manpages --out DIR` (hidden; the package build runs it): a man page per command,
//! `tunnel.1`, `tunnel-run.1`, `tunnel-ca-init.1` ..., from the command line's own
//! definition (clap_mangen), so they say what `--help` says.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, CommandFactory as _};

use super::Cli;

#[derive(Debug, Args)]
pub struct ManpagesArgs {
    /// The directory to write the pages into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: ManpagesArgs) -> ExitCode {
    let written = std::fs::create_dir_all(&args.out)
        .and_then(|()| clap_mangen::generate_to(Cli::command(), &args.out));
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tunnel manpages: {}: {e}", args.out.display());
            ExitCode::FAILURE
        }
    }
}
