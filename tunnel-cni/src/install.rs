//! `tunnel-cni install` and `uninstall`: run by the node agent's init container (or by hand)
//! with the host's CNI directories mounted. Install puts the plugin binary in the bin dir,
//! then our entry in the network config the runtime uses, in that order: a config naming a
//! plugin that is not there yet would fail every pod started in between.

use std::{
    collections::HashMap,
    ffi::OsStr,
    fs, io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    config::DEFAULT_TIMEOUT,
    conflist::{self, Change, ConflistError, PLUGIN_TYPE},
    error::chain,
    files,
};

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

/// The extensions libcni reads network configs from, in the runtime's own directory scan.
const CONFIG_EXTENSIONS: [&str; 3] = ["conf", "conflist", "json"];

/// How often to look again while waiting for the main plugin's config.
const POLL: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{0}\n\n{USAGE}")]
    Usage(String),
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

/// Installs from `exe` (the running binary, `/proc/self/exe`); `say` hears what was done.
pub fn install(
    options: &InstallOptions,
    exe: &Path,
    say: &mut dyn FnMut(String),
) -> Result<(), InstallError> {
    let binary = fs::read(exe).map_err(io_error("read", exe))?;
    let target = options.bin_dir.join(PLUGIN_TYPE);
    files::replace(&target, &binary, 0o755).map_err(io_error("write", &target))?;
    say(format!("installed the plugin as {}", target.display()));

    let (path, config) = wait_for_config(&options.conf_dir, options.wait, say)?;
    let config_error = |path: &Path| {
        let path = path.to_owned();
        move |source| InstallError::Conflist { path, source }
    };
    let entry = conflist::entry(&options.socket, options.timeout_seconds);
    if conflist::is_list(&config) {
        let mut list = config;
        let change = conflist::upsert(&mut list, entry).map_err(config_error(&path))?;
        if change != Change::Unchanged {
            write_config(&path, &list)?;
        }
        say(match change {
            Change::Appended => format!("appended tunnel-cni to the plugins of {}", path.display()),
            Change::Updated => format!("updated tunnel-cni's entry in {}", path.display()),
            Change::Unchanged => format!("{} already has this entry", path.display()),
        });
        return Ok(());
    }

    // A single-plugin config: the runtime would call only that plugin, so it becomes a
    // conflist of the same name, which sorts right after it and so is still the first
    // config once the original is gone.
    let mut list = conflist::from_single(config).map_err(config_error(&path))?;
    conflist::upsert(&mut list, entry).map_err(config_error(&path))?;
    let converted = path.with_extension("conflist");
    if converted.exists() {
        return Err(InstallError::ConflistExists {
            path,
            conflist: converted,
        });
    }
    write_config(&converted, &list)?;
    fs::remove_file(&path).map_err(io_error("remove", &path))?;
    say(format!(
        "{} held a single plugin: replaced it by {} with that plugin, then tunnel-cni",
        path.display(),
        converted.display()
    ));
    Ok(())
}

/// Takes our entry out of every conflist in the conf dir, then removes the binary (the other
/// way round, a pod starting in between would find the config naming a missing plugin).
/// Files that do not parse are left alone: they are not ours to judge.
pub fn uninstall(
    options: &UninstallOptions,
    say: &mut dyn FnMut(String),
) -> Result<(), InstallError> {
    for path in config_files(&options.conf_dir)? {
        let text = match fs::read(&path) {
            Ok(text) => text,
            Err(e) => {
                say(format!("skipped {}: {e}", path.display()));
                continue;
            }
        };
        let Ok(mut config) = serde_json::from_slice::<Value>(&text) else {
            say(format!("skipped {}: not JSON", path.display()));
            continue;
        };
        if !conflist::is_list(&config) {
            continue;
        }
        match conflist::remove(&mut config) {
            Ok(true) => {
                write_config(&path, &config)?;
                say(format!("removed tunnel-cni from {}", path.display()));
            }
            Ok(false) => {}
            Err(e) => say(format!("skipped {}: {e}", path.display())),
        }
    }
    let binary = options.bin_dir.join(PLUGIN_TYPE);
    match fs::remove_file(&binary) {
        Ok(()) => say(format!("removed {}", binary.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("remove", &binary)(e)),
    }
    Ok(())
}

/// The network config the runtime uses, parsed: the first by name of the conf dir's config
/// files, as libcni picks it. Waits up to `wait` for one to appear and to be whole JSON (the
/// main plugin's installer may not write atomically).
fn wait_for_config(
    dir: &Path,
    wait: Duration,
    say: &mut dyn FnMut(String),
) -> Result<(PathBuf, Value), InstallError> {
    let started = Instant::now();
    let mut said = false;
    loop {
        let found = first_config(dir);
        let error = match found {
            Ok(Some(found)) => return Ok(found),
            Ok(None) => InstallError::NoNetworkConfig {
                dir: dir.to_owned(),
                waited: started.elapsed(),
            },
            Err(e) => e,
        };
        let left = wait.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(error);
        }
        if !said {
            say(format!(
                "waiting up to {wait:?} for the main network plugin's config in {} ({})",
                dir.display(),
                chain(&error)
            ));
            said = true;
        }
        std::thread::sleep(POLL.min(left));
    }
}

fn first_config(dir: &Path) -> Result<Option<(PathBuf, Value)>, InstallError> {
    let Some(path) = config_files(dir)?.into_iter().next() else {
        return Ok(None);
    };
    let text = fs::read(&path).map_err(io_error("read", &path))?;
    let config = serde_json::from_slice(&text).map_err(|source| InstallError::NotJson {
        path: path.clone(),
        source,
    })?;
    Ok(Some((path, config)))
}

/// The conf dir's network config files, sorted by name. A missing dir has none (the main
/// plugin may not have created it yet).
fn config_files(dir: &Path) -> Result<Vec<PathBuf>, InstallError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("list", dir)(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(io_error("list", dir))?.path();
        let is_config = path
            .extension()
            .and_then(OsStr::to_str)
            .is_some_and(|ext| CONFIG_EXTENSIONS.contains(&ext));
        if is_config && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn write_config(path: &Path, config: &Value) -> Result<(), InstallError> {
    let mut text = serde_json::to_vec_pretty(config).expect("JSON values serialize");
    text.push(b'\n');
    files::replace(path, &text, 0o644).map_err(io_error("write", path))
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> InstallError {
    let path = path.to_owned();
    move |source| InstallError::Io { what, path, source }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    struct Node {
        _dir: tempfile::TempDir,
        bin: PathBuf,
        conf: PathBuf,
        exe: PathBuf,
    }

    fn node() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let (bin, conf) = (dir.path().join("bin"), dir.path().join("net.d"));
        fs::create_dir_all(&bin).unwrap();
        fs::create_dir_all(&conf).unwrap();
        let exe = dir.path().join("tunnel-cni-build");
        fs::write(&exe, b"\x7fELF pretend").unwrap();
        Node {
            _dir: dir,
            bin,
            conf,
            exe,
        }
    }

    fn options(node: &Node) -> InstallOptions {
        InstallOptions {
            bin_dir: node.bin.clone(),
            conf_dir: node.conf.clone(),
            socket: "/run/tunnel/pods.sock".into(),
            timeout_seconds: 10,
            wait: Duration::ZERO,
        }
    }

    fn read(path: &Path) -> Value {
        serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn options_are_parsed_with_defaults_and_wrong_ones_named() {
        assert_eq!(
            InstallOptions::parse(&args(
                "--cni-bin-dir /opt/cni/bin --cni-conf-dir=/etc/cni/net.d"
            ))
            .unwrap(),
            InstallOptions {
                bin_dir: "/opt/cni/bin".into(),
                conf_dir: "/etc/cni/net.d".into(),
                socket: tunnel_pod_api::DEFAULT_SOCKET.into(),
                timeout_seconds: 10,
                wait: Duration::ZERO,
            }
        );
        let full = InstallOptions::parse(&args(
            "--cni-bin-dir b --cni-conf-dir c --socket /s.sock --timeout-seconds 3 --wait-seconds 60",
        ))
        .unwrap();
        assert_eq!(
            (full.timeout_seconds, full.wait),
            (3, Duration::from_secs(60))
        );
        for (line, needle) in [
            ("--cni-conf-dir c", "--cni-bin-dir is required"),
            (
                "--cni-bin-dir b --cni-conf-dir c --socket rel.sock",
                "not an absolute path",
            ),
            (
                "--cni-bin-dir b --cni-conf-dir c --timeout-seconds soon",
                "not a whole number",
            ),
            (
                "--cni-bin-dir b --cni-conf-dir c --timeout-seconds 0",
                "at least 1",
            ),
            (
                "--cni-bin-dir b --cni-conf-dir c --colour red",
                "unknown option --colour",
            ),
            ("--cni-bin-dir b --cni-bin-dir c", "given twice"),
            ("--cni-bin-dir", "needs a value"),
            ("stray", "unexpected argument \"stray\""),
        ] {
            let e = InstallOptions::parse(&args(line)).unwrap_err().to_string();
            assert!(e.contains(needle), "{line}: {e}");
        }
        assert!(UninstallOptions::parse(&args("--cni-bin-dir b --socket /s")).is_err());
    }

    #[test]
    fn install_appends_to_the_first_conflist_and_reinstall_updates_in_place() {
        let node = node();
        let main = json!({"cniVersion": "1.0.0", "name": "k8s", "plugins": [{"type": "bridge"}]});
        fs::write(node.conf.join("10-main.conflist"), main.to_string()).unwrap();
        fs::write(node.conf.join("20-other.conflist"), main.to_string()).unwrap();
        let mut said = Vec::new();
        install(&options(&node), &node.exe, &mut |s| said.push(s)).unwrap();
        assert_eq!(
            fs::read(node.bin.join("tunnel-cni")).unwrap(),
            b"\x7fELF pretend"
        );
        let list = read(&node.conf.join("10-main.conflist"));
        assert_eq!(
            list["plugins"],
            json!([{"type": "bridge"}, {"type": "tunnel-cni", "socket": "/run/tunnel/pods.sock", "timeout_seconds": 10}])
        );
        assert_eq!(read(&node.conf.join("20-other.conflist")), main);
        assert!(said.iter().any(|s| s.contains("appended")), "{said:?}");

        let mut again = options(&node);
        again.socket = "/var/run/tunnel.sock".into();
        install(&again, &node.exe, &mut |_| {}).unwrap();
        let list = read(&node.conf.join("10-main.conflist"));
        assert_eq!(list["plugins"].as_array().unwrap().len(), 2);
        assert_eq!(list["plugins"][1]["socket"], "/var/run/tunnel.sock");
        assert_eq!(names(&node.conf), ["10-main.conflist", "20-other.conflist"]);
    }

    #[test]
    fn a_single_conf_that_comes_first_is_converted() {
        let node = node();
        let conf = json!({"cniVersion": "0.4.0", "name": "net", "type": "bridge"});
        fs::write(node.conf.join("05-bridge.conf"), conf.to_string()).unwrap();
        fs::write(node.conf.join("99-loopback.conflist"), "{}").unwrap();
        let mut said = Vec::new();
        install(&options(&node), &node.exe, &mut |s| said.push(s)).unwrap();
        assert_eq!(
            names(&node.conf),
            ["05-bridge.conflist", "99-loopback.conflist"]
        );
        let list = read(&node.conf.join("05-bridge.conflist"));
        assert_eq!(list["name"], "net");
        assert_eq!(list["cniVersion"], "0.4.0");
        assert_eq!(list["plugins"][0], conf);
        assert_eq!(list["plugins"][1]["type"], "tunnel-cni");
        assert!(
            said.iter().any(|s| s.contains("held a single plugin")),
            "{said:?}"
        );
        // Installing again finds the conflist and changes nothing.
        install(&options(&node), &node.exe, &mut |_| {}).unwrap();
        assert_eq!(read(&node.conf.join("05-bridge.conflist")), list);
    }

    #[test]
    fn no_network_config_is_an_error_that_says_what_to_do() {
        let node = node();
        let e = install(&options(&node), &node.exe, &mut |_| {}).unwrap_err();
        assert!(matches!(e, InstallError::NoNetworkConfig { .. }), "{e}");
        assert!(e.to_string().contains("--wait-seconds"), "{e}");
        fs::write(node.conf.join("10-main.conflist"), "{\"cniVersion\":").unwrap();
        let e = install(&options(&node), &node.exe, &mut |_| {}).unwrap_err();
        let printed = chain(&e);
        assert!(
            printed.contains("10-main.conflist is not JSON: EOF while parsing"),
            "{printed}"
        );
        fs::write(
            node.conf.join("10-main.conflist"),
            json!({"cniVersion": "0.3.1", "name": "k8s", "plugins": [{"type": "flannel"}]})
                .to_string(),
        )
        .unwrap();
        let e = install(&options(&node), &node.exe, &mut |_| {}).unwrap_err();
        let printed = chain(&e);
        assert!(
            printed.contains("cannot add tunnel-cni to network config ")
                && printed.contains("10-main.conflist: its cniVersion is 0.3.1"),
            "{printed}"
        );
    }

    #[test]
    fn each_link_is_printed_once() {
        let path = PathBuf::from("/etc/cni/net.d/10-main.conflist");
        let io = io_error("read", &path)(io::Error::from(io::ErrorKind::PermissionDenied));
        assert_eq!(
            chain(&io),
            "failed to read /etc/cni/net.d/10-main.conflist: permission denied"
        );
        let not_json = InstallError::NotJson {
            path: path.clone(),
            source: serde_json::from_str::<Value>("{").unwrap_err(),
        };
        assert_eq!(
            chain(&not_json),
            "network config /etc/cni/net.d/10-main.conflist is not JSON: EOF while parsing an \
             object at line 1 column 1"
        );
        let conflist = InstallError::Conflist {
            path,
            source: ConflistError::Missing("name"),
        };
        assert_eq!(
            chain(&conflist),
            "cannot add tunnel-cni to network config /etc/cni/net.d/10-main.conflist: it has no \
             \"name\" string"
        );
    }

    #[test]
    fn install_waits_for_the_main_plugins_config() {
        let node = node();
        let conf = node.conf.join("10-late.conflist");
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(700));
            fs::write(
                conf,
                json!({"cniVersion": "1.0.0", "name": "k8s", "plugins": [{"type": "ptp"}]})
                    .to_string(),
            )
            .unwrap();
        });
        let mut waiting = options(&node);
        waiting.wait = Duration::from_secs(30);
        let mut said = Vec::new();
        install(&waiting, &node.exe, &mut |s| said.push(s)).unwrap();
        writer.join().unwrap();
        assert!(said.iter().any(|s| s.contains("waiting up to")), "{said:?}");
        assert_eq!(
            read(&node.conf.join("10-late.conflist"))["plugins"][1]["type"],
            "tunnel-cni"
        );
    }

    #[test]
    fn uninstall_cleans_every_conflist_and_the_binary_and_is_idempotent() {
        let node = node();
        let main = json!({"cniVersion": "1.0.0", "name": "k8s", "plugins": [{"type": "bridge"}]});
        fs::write(node.conf.join("10-main.conflist"), main.to_string()).unwrap();
        install(&options(&node), &node.exe, &mut |_| {}).unwrap();
        // A stale entry of an earlier install in another list, and a file that is no JSON.
        let mut stale = main.clone();
        stale["plugins"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "tunnel-cni"}));
        fs::write(node.conf.join("50-old.conflist"), stale.to_string()).unwrap();
        fs::write(node.conf.join("60-junk.json"), "junk").unwrap();
        let remove = UninstallOptions {
            bin_dir: node.bin.clone(),
            conf_dir: node.conf.clone(),
        };
        let mut said = Vec::new();
        uninstall(&remove, &mut |s| said.push(s)).unwrap();
        assert_eq!(read(&node.conf.join("10-main.conflist")), main);
        assert_eq!(read(&node.conf.join("50-old.conflist")), main);
        assert!(!node.bin.join("tunnel-cni").exists());
        assert!(
            said.iter().any(|s| s.contains("60-junk.json: not JSON")),
            "{said:?}"
        );
        let mut again = Vec::new();
        uninstall(&remove, &mut |s| again.push(s)).unwrap();
        assert_eq!(
            again,
            ["skipped ".to_owned()
                + &node.conf.join("60-junk.json").display().to_string()
                + ": not JSON"]
        );
    }
}
