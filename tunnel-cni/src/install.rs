//! `tunnel-cni install` and `uninstall`: run by the node agent's init container (or by hand)
//! with the host's CNI directories mounted. Install puts the plugin binary in the bin dir,
//! then our entry in the network config the runtime uses, in that order: a config naming a
//! plugin that is not there yet would fail every pod started in between.

mod bin_dir;
mod conf_dir;
mod flags;
#[cfg(test)]
mod tests;

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

pub use flags::{Cli, Command, InstallOptions, UninstallOptions};

use crate::conflist::{self, ConflistError};

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("failed to {what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "no network config (*.conf, *.conflist, *.json) in {} after waiting {waited:?}: \
         tunnel-cni chains after the node's main network plugin, so that plugin must be \
         installed first (or give --wait-seconds to wait for it)",
        dir.display()
    )]
    NoNetworkConfig { dir: PathBuf, waited: Duration },
    #[error("network config {} is not JSON", path.display())]
    NotJson {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot add tunnel-cni to network config {}", path.display())]
    Conflist {
        path: PathBuf,
        source: ConflistError,
    },
    #[error(
        "network config {} is a single-plugin config, and {} (where its conflist would go) \
         exists already; merge them by hand",
        path.display(),
        conflist.display()
    )]
    ConflistExists { path: PathBuf, conflist: PathBuf },
}

/// Installs from `exe` (the running binary, `/proc/self/exe`); `say` hears what was done.
pub fn install(
    options: &InstallOptions,
    exe: &Path,
    say: &mut dyn FnMut(String),
) -> Result<(), InstallError> {
    let target = bin_dir::copy_in(exe, &options.bin_dir)?;
    say(format!("installed the plugin as {}", target.display()));
    let (path, config) = conf_dir::wait_for_config(&options.conf_dir, options.wait, say)?;
    let entry = conflist::entry(&options.socket, options.timeout_seconds);
    conf_dir::add_entry(&path, config, entry, say)
}

/// Takes our entry out of every conflist in the conf dir, then removes the binary (the other
/// way round, a pod starting in between would find the config naming a missing plugin).
pub fn uninstall(
    options: &UninstallOptions,
    say: &mut dyn FnMut(String),
) -> Result<(), InstallError> {
    conf_dir::remove_entries(&options.conf_dir, say)?;
    if let Some(removed) = bin_dir::remove(&options.bin_dir)? {
        say(format!("removed {}", removed.display()));
    }
    Ok(())
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> InstallError {
    let path = path.to_owned();
    move |source| InstallError::Io { what, path, source }
}
