//! The `tunnel` command line: one file per subcommand under `cli/`.

pub mod ca;
pub mod check;
pub mod completions;
pub mod idle;
pub mod log_level;
pub mod manpages;
pub mod pod;
pub mod probe;
pub mod run;
pub mod status;
pub mod uninstall;

use clap::{Parser, Subcommand};

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
    /// Ask the running daemon (its admin API) whether it is ready, and about its
    /// certificates, peers and connections.
    Status(status::StatusArgs),
    /// Show the running daemon's log filter, or change it through its control socket
    /// (root only).
    LogLevel(log_level::LogLevelArgs),
    /// Register, remove and list pods through the running daemon's pod API ([pods]).
    Pod(pod::PodArgs),
    /// Remove the pinned capture programs (capture stops; traffic goes out directly).
    Uninstall(uninstall::UninstallArgs),
    /// Print a message, then do nothing until stopped: the last container of the uninstall
    /// DaemonSet, in an image that has no shell and no `sleep`.
    Idle(idle::IdleArgs),
    /// Manage a built-in certificate authority (for labs, tests and small setups).
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Print the completion script of a shell (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
    /// Write the man pages (used to build the package).
    #[command(hide = true)]
    Manpages(manpages::ManpagesArgs),
}

/// Logs of the one-shot commands (probe, check): text on stderr at `level` (see
/// [`crate::logging`]).
pub fn init_logging(level: &str) {
    crate::logging::init(&crate::logging::Options {
        level: level.into(),
        access_log: true,
        ..Default::default()
    });
}
