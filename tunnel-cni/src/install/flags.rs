//! The installer's flags: `--name value` or `--name=value`, each at most once.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use super::InstallError;
use crate::config::DEFAULT_TIMEOUT;

pub const USAGE: &str = "\
usage:
  tunnel-cni                 run as a CNI plugin (by the container runtime, CNI_COMMAND set)
  tunnel-cni install --cni-bin-dir DIR --cni-conf-dir DIR [--socket PATH]
                     [--timeout-seconds N] [--wait-seconds N]
      copy this binary to DIR/tunnel-cni and append {\"type\":\"tunnel-cni\"} to the plugins of
      the network config the runtime uses (the lexically first *.conf, *.conflist or *.json
      in the conf dir; a single-plugin .conf is turned into a .conflist). Re-running updates
      the entry in place. --wait-seconds: how long to wait for the main network plugin to
      write its config (default 0: fail at once if there is none).
  tunnel-cni uninstall --cni-bin-dir DIR --cni-conf-dir DIR
      take the entry out of every conflist in the conf dir and remove DIR/tunnel-cni
";

#[derive(Debug, PartialEq, Eq)]
pub struct InstallOptions {
    pub bin_dir: PathBuf,
    pub conf_dir: PathBuf,
    pub socket: PathBuf,
    pub timeout_seconds: u64,
    pub wait: Duration,
}

#[derive(Debug, PartialEq, Eq)]
pub struct UninstallOptions {
    pub bin_dir: PathBuf,
    pub conf_dir: PathBuf,
}

impl InstallOptions {
    pub fn parse(args: &[String]) -> Result<Self, InstallError> {
        let mut flags = Flags::parse(
            args,
            &[
                "cni-bin-dir",
                "cni-conf-dir",
                "socket",
                "timeout-seconds",
                "wait-seconds",
            ],
        )?;
        let socket = PathBuf::from(
            flags
                .take("socket")
                .unwrap_or_else(|| tunnel_pod_api::DEFAULT_SOCKET.into()),
        );
        // The runtime starts the plugin from a directory of its choosing.
        if !socket.is_absolute() {
            return Err(InstallError::Usage(format!(
                "--socket {} is not an absolute path",
                socket.display()
            )));
        }
        let timeout_seconds = flags
            .number("timeout-seconds")?
            .unwrap_or(DEFAULT_TIMEOUT.as_secs());
        if timeout_seconds == 0 {
            return Err(InstallError::Usage(
                "--timeout-seconds must be at least 1".into(),
            ));
        }
        Ok(Self {
            bin_dir: flags.required("cni-bin-dir")?,
            conf_dir: flags.required("cni-conf-dir")?,
            socket,
            timeout_seconds,
            wait: Duration::from_secs(flags.number("wait-seconds")?.unwrap_or(0)),
        })
    }
}

impl UninstallOptions {
    pub fn parse(args: &[String]) -> Result<Self, InstallError> {
        let mut flags = Flags::parse(args, &["cni-bin-dir", "cni-conf-dir"])?;
        Ok(Self {
            bin_dir: flags.required("cni-bin-dir")?,
            conf_dir: flags.required("cni-conf-dir")?,
        })
    }
}

/// `--name value` and `--name=value`, each at most once, only the known names.
struct Flags(HashMap<String, String>);

impl Flags {
    fn parse(args: &[String], known: &[&str]) -> Result<Self, InstallError> {
        let mut flags = HashMap::new();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let Some(flag) = arg.strip_prefix("--") else {
                return Err(InstallError::Usage(format!("unexpected argument {arg:?}")));
            };
            let (name, value) = match flag.split_once('=') {
                Some((name, value)) => (name, value.to_owned()),
                None => (
                    flag,
                    args.next()
                        .ok_or_else(|| InstallError::Usage(format!("--{flag} needs a value")))?
                        .clone(),
                ),
            };
            if !known.contains(&name) {
                return Err(InstallError::Usage(format!("unknown option --{name}")));
            }
            if flags.insert(name.to_owned(), value).is_some() {
                return Err(InstallError::Usage(format!("--{name} is given twice")));
            }
        }
        Ok(Self(flags))
    }

    fn take(&mut self, name: &str) -> Option<String> {
        self.0.remove(name)
    }

    fn required(&mut self, name: &str) -> Result<PathBuf, InstallError> {
        match self.take(name) {
            Some(value) if !value.is_empty() => Ok(value.into()),
            _ => Err(InstallError::Usage(format!("--{name} is required"))),
        }
    }

    fn number(&mut self, name: &str) -> Result<Option<u64>, InstallError> {
        self.take(name)
            .map(|value| {
                value.parse().map_err(|_| {
                    InstallError::Usage(format!("--{name} {value:?} is not a whole number"))
                })
            })
            .transpose()
    }
}
