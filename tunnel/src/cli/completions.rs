//! `tunnel completions SHELL`: the shell's completion script for `tunnel`, on stdout, from
//! the command line's own definition (clap_complete). The package installs bash's, zsh's and
//! fish's.

use std::{io::Write as _, process::ExitCode};

use clap::{Args, CommandFactory as _};
use clap_complete::Shell;

use super::Cli;

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  tunnel completions bash > /etc/bash_completion.d/tunnel")]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn run(args: CompletionsArgs) -> ExitCode {
    let mut command = Cli::command();
    // Into memory first: clap_complete panics on a write error (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "tunnel", &mut script);
    match std::io::stdout().write_all(&script) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tunnel completions: {e}");
            ExitCode::FAILURE
        }
    }
}
