//! The CNI conf dir: the network config the runtime uses, found (and waited for) as libcni
//! finds it, our entry put into it, and taken out of every conflist again. The JSON edits
//! themselves are `crate::conflist`'s.

use std::{
    ffi::OsStr,
    fs, io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{InstallError, io_error};
use crate::{
    conflist::{self, Change},
    error::chain,
    files,
};

/// The extensions libcni reads network configs from, in the runtime's own directory scan.
const CONFIG_EXTENSIONS: [&str; 3] = ["conf", "conflist", "json"];

/// How often to look again while waiting for the main plugin's config.
const POLL: Duration = Duration::from_millis(500);

/// Puts `entry` into the network config at `path` (parsed as `config`): into its plugins if
/// it is a conflist; a single-plugin config is replaced by a conflist holding it, then us.
pub(super) fn add_entry(
    path: &Path,
    config: Value,
    entry: Value,
    say: &mut dyn FnMut(String),
) -> Result<(), InstallError> {
    let config_error = |source| InstallError::Conflist {
        path: path.to_owned(),
        source,
    };
    if conflist::is_list(&config) {
        let mut list = config;
        let change = conflist::upsert(&mut list, entry).map_err(config_error)?;
        if change != Change::Unchanged {
            write_config(path, &list)?;
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
    let mut list = conflist::from_single(config).map_err(config_error)?;
    conflist::upsert(&mut list, entry).map_err(config_error)?;
    let converted = path.with_extension("conflist");
    if converted.exists() {
        return Err(InstallError::ConflistExists {
            path: path.to_owned(),
            conflist: converted,
        });
    }
    write_config(&converted, &list)?;
    fs::remove_file(path).map_err(io_error("remove", path))?;
    say(format!(
        "{} held a single plugin: replaced it by {} with that plugin, then tunnel-cni",
        path.display(),
        converted.display()
    ));
    Ok(())
}

/// Takes our entry out of every conflist in `dir`. Files that do not parse are left alone:
/// they are not ours to judge.
pub(super) fn remove_entries(dir: &Path, say: &mut dyn FnMut(String)) -> Result<(), InstallError> {
    for path in config_files(dir)? {
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
    Ok(())
}

/// The network config the runtime uses, parsed: the first by name of the conf dir's config
/// files, as libcni picks it. Waits up to `wait` for one to appear and to be whole JSON (the
/// main plugin's installer may not write atomically).
pub(super) fn wait_for_config(
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
