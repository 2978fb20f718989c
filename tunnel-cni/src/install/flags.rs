//! The installer's command line (clap). Only `tunnel-cni install|uninstall …` is parsed here:
//! without arguments the binary is the CNI plugin, which the runtime drives through the
//! environment and stdin, and main.rs never calls clap for it.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::config::DEFAULT_TIMEOUT;

/// tunnel-cni: the chained CNI plugin that registers each pod with the node's tunnel daemon,
/// and its installer.
#[derive(Debug, Parser)]
#[command(
    name = "tunnel-cni",
    after_help = "Without arguments, tunnel-cni is the CNI plugin: the container runtime runs \
                  it with CNI_COMMAND set and the network config on stdin."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy this binary into the CNI bin dir and add tunnel-cni to the network config the
    /// runtime uses.
    ///
    /// The binary goes to <bin dir>/tunnel-cni; {"type": "tunnel-cni", ...} is appended to the
    /// plugins of the network config the runtime uses (the lexically first *.conf,
    /// *.conflist or *.json in the conf dir; a single-plugin .conf is turned into a
    /// .conflist). Re-running updates the entry in place.
    Install(InstallOptions),
    /// Take tunnel-cni out of every conflist in the conf dir, then remove it from the bin dir.
    Uninstall(UninstallOptions),
}

#[derive(Debug, PartialEq, Eq, Args)]
pub struct InstallOptions {
    /// The CNI bin dir, where the runtime finds plugins (such as /opt/cni/bin).
    #[arg(long = "cni-bin-dir", value_name = "DIR")]
    pub bin_dir: PathBuf,
    /// The CNI conf dir, where the runtime reads network configs (such as /etc/cni/net.d).
    #[arg(long = "cni-conf-dir", value_name = "DIR")]
    pub conf_dir: PathBuf,
    /// The tunnel daemon's pod API socket, for the plugin to call; an absolute path.
    #[arg(
        long,
        value_name = "PATH",
        default_value = tunnel_pod_api::DEFAULT_SOCKET,
        value_parser = absolute_path,
    )]
    pub socket: PathBuf,
    /// How long the plugin waits for each answer of the daemon.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = DEFAULT_TIMEOUT.as_secs(),
        value_parser = at_least_one,
    )]
    pub timeout_seconds: u64,
    /// How long to wait for the main network plugin to write its config (0: fail at once if
    /// there is none).
    #[arg(
        long = "wait-seconds",
        value_name = "SECONDS",
        default_value = "0",
        value_parser = seconds,
    )]
    pub wait: Duration,
}

#[derive(Debug, PartialEq, Eq, Args)]
pub struct UninstallOptions {
    /// The CNI bin dir, where the runtime finds plugins (such as /opt/cni/bin).
    #[arg(long = "cni-bin-dir", value_name = "DIR")]
    pub bin_dir: PathBuf,
    /// The CNI conf dir, where the runtime reads network configs (such as /etc/cni/net.d).
    #[arg(long = "cni-conf-dir", value_name = "DIR")]
    pub conf_dir: PathBuf,
}

/// What is wrong with a flag's value; clap names the flag and the value before it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlagError {
    #[error("not an absolute path (the runtime starts the plugin in a directory of its choosing)")]
    NotAbsolute,
    #[error("not a whole number of seconds")]
    NotSeconds,
    #[error("must be at least 1")]
    Zero,
}

fn absolute_path(value: &str) -> Result<PathBuf, FlagError> {
    let path = PathBuf::from(value);
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(FlagError::NotAbsolute)
    }
}

fn whole_seconds(value: &str) -> Result<u64, FlagError> {
    value.parse().map_err(|_| FlagError::NotSeconds)
}

fn at_least_one(value: &str) -> Result<u64, FlagError> {
    match whole_seconds(value)? {
        0 => Err(FlagError::Zero),
        seconds => Ok(seconds),
    }
}

fn seconds(value: &str) -> Result<Duration, FlagError> {
    whole_seconds(value).map(Duration::from_secs)
}
