//! The `tunnel` command line: one file per subcommand under `cli/`.

pub mod ca;

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
    /// Manage a built-in certificate authority (for labs, tests and small setups).
    #[command(subcommand)]
    Ca(ca::CaCommand),
}
