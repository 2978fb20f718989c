//! The `tunnel` command line: one file per subcommand under `cli/`.

pub mod ca;
pub mod check;
pub mod probe;
pub mod run;
pub mod uninstall;

use std::io::IsTerminal as _;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Transparent mutual TLS for east-west TCP.
#[derive(Debug, Parser)]
#[command(name = "tunnel", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: capture outbound connections and carry them over mTLS.
    Run(run::RunArgs),
    /// Open one tunnel to a peer as a workload and explain each step.
    Probe(probe::ProbeArgs),
    /// Check the config, this host, the trust bundle and every certificate; say what to fix.
    Check(check::CheckArgs),
    /// Remove the pinned capture programs (capture stops; traffic goes out directly).
    Uninstall(uninstall::UninstallArgs),
    /// Manage a built-in certificate authority (for labs, tests and small setups).
    #[command(subcommand)]
    Ca(ca::CaCommand),
}

/// Logs go to stderr, one line per event. A bare level (`debug`) applies to tunnel's own
/// logs, with libraries kept at `warn` (h2 and rustls are very chatty below that); anything
/// else is a full tracing directive list. RUST_LOG, when set, overrides both.
pub fn init_logging(level: &str) {
    let directives = match level {
        "error" | "warn" | "info" | "debug" | "trace" => format!("warn,tunnel={level}"),
        other => other.to_string(),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(directives));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
