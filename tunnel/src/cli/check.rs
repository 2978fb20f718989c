//! `tunnel check`: the config, this host, the trust and every certificate, judged before
//! `tunnel run` is (see `crate::check`), one line per check.

use std::{
    io::{IsTerminal as _, Write as _},
    path::PathBuf,
    process::ExitCode,
};

use clap::Args;

use crate::check::{self, Host};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  tunnel check --config /etc/tunnel/tunnel.toml\n  \
tunnel check --config /etc/tunnel/tunnel.toml --json | jq '.checks[] | select(.status != \"ok\")'\n\n\
Each line is ok, warn or fail; a fail (and some warnings) is followed by a hint saying what \
to do.\nRun it as tunnel run runs (root, same host): the kernel section checks this process's \
capabilities.\n\n\
Exit codes: 0 nothing failed (warnings allowed), 1 something failed, 64 the config file \
cannot be parsed."
)]
pub struct CheckArgs {
    /// The config of the daemon on this host.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Print one JSON document (checks, and the count of each status) instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: CheckArgs) -> ExitCode {
    // Only errors: what check finds is its output, not log lines.
    super::init_logging("error");
    let report = check::run(&args.config, Host::Check);
    let stdout = std::io::stdout();
    let text = if args.json {
        report.to_json() + "\n"
    } else {
        report.to_text(stdout.is_terminal())
    };
    // A closed pipe (| head) is not an error of the check.
    let _ = stdout.lock().write_all(text.as_bytes());
    ExitCode::from(report.exit_code())
}
