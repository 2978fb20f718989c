use std::process::ExitCode;

use clap::Parser as _;
use tunnel::cli::{self, Cli, Command};

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => cli::run::run(args),
        Command::Uninstall(args) => cli::uninstall::run(args),
        Command::Idle(args) => cli::idle::run(args),
        Command::Probe(args) => cli::probe::run(args),
        Command::Check(args) => cli::check::run(args),
        Command::Status(args) => cli::status::run(args),
        Command::LogLevel(args) => cli::log_level::run(args),
        Command::Pod(args) => cli::pod::run(args),
        Command::Ca(command) => cli::ca::run(command),
        Command::Completions(args) => cli::completions::run(args),
        Command::Manpages(args) => cli::manpages::run(args),
    }
}
