//! Editing the node's network config: our entry appended to the main plugin's conflist, or
//! taken out again. Pure functions on JSON; install.rs finds and writes the files.
//!
//! serde_json here keeps no key order, so a rewritten file has its keys sorted: the same
//! config to every runtime, only laid out differently.

use std::path::Path;

use serde_json::{Map, Value, json};

use crate::config::SUPPORTED_VERSIONS;

/// Our plugin's `type`, which is also its file name in the CNI bin dir.
pub const PLUGIN_TYPE: &str = "tunnel-cni";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConflistError {
    #[error("it is not a JSON object")]
    NotAnObject,
    #[error("its \"plugins\" is not a list of objects")]
    BadPlugins,
    #[error("it has no {0:?} string")]
    Missing(&'static str),
    #[error(
        "its cniVersion is {0}, and tunnel-cni speaks CNI {versions}: every pod's ADD would fail",
        versions = SUPPORTED_VERSIONS.join(" and ")
    )]
    UnsupportedVersion(String),
}

/// What [`upsert`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    Appended,
    Updated,
    Unchanged,
}

/// Our entry in a conflist. Both settings are written out, also when they are the defaults,
/// so that whoever reads the node's config sees where the plugin will call.
pub fn entry(socket: &Path, timeout_seconds: u64) -> Value {
    json!({
        "type": PLUGIN_TYPE,
        "socket": socket.to_string_lossy(),
        "timeout_seconds": timeout_seconds,
    })
}

/// Whether a parsed config file is a conflist (a single-plugin `.conf` has no `plugins`).
pub fn is_list(config: &Value) -> bool {
    config.get("plugins").is_some()
}

/// A single-plugin config turned into a conflist holding it, as libcni itself reads a
/// `.conf`: the list takes its `name` and `cniVersion`, and the plugin keeps all its keys.
pub fn from_single(config: Value) -> Result<Value, ConflistError> {
    let Value::Object(plugin) = config else {
        return Err(ConflistError::NotAnObject);
    };
    let name = string(&plugin, "name")?;
    let version = string(&plugin, "cniVersion")?;
    string(&plugin, "type")?;
    Ok(json!({
        "cniVersion": version,
        "name": name,
        "plugins": [Value::Object(plugin)],
    }))
}

/// Puts `entry` last in the list's plugins, or replaces our entry where it is (a re-install
/// with new settings keeps its place). Extra entries of ours, from hand edits, are removed:
/// the daemon would be asked twice.
pub fn upsert(list: &mut Value, entry: Value) -> Result<Change, ConflistError> {
    let version = string(
        list.as_object().ok_or(ConflistError::NotAnObject)?,
        "cniVersion",
    )?;
    if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
        return Err(ConflistError::UnsupportedVersion(version));
    }
    let plugins = plugins(list)?;
    let Some(first) = plugins.iter().position(is_ours) else {
        plugins.push(entry);
        return Ok(Change::Appended);
    };
    let before = plugins.len();
    let mut index = 0;
    plugins.retain(|p| {
        let keep = index == first || !is_ours(p);
        index += 1;
        keep
    });
    if plugins[first] == entry && plugins.len() == before {
        return Ok(Change::Unchanged);
    }
    plugins[first] = entry;
    Ok(Change::Updated)
}

/// Takes every entry of ours out of the list; whether there was one.
pub fn remove(list: &mut Value) -> Result<bool, ConflistError> {
    let plugins = plugins(list)?;
    let before = plugins.len();
    plugins.retain(|p| !is_ours(p));
    Ok(plugins.len() != before)
}

fn is_ours(plugin: &Value) -> bool {
    plugin.get("type").and_then(Value::as_str) == Some(PLUGIN_TYPE)
}

fn plugins(list: &mut Value) -> Result<&mut Vec<Value>, ConflistError> {
    let list = list.as_object_mut().ok_or(ConflistError::NotAnObject)?;
    match list.get_mut("plugins") {
        Some(Value::Array(plugins)) if plugins.iter().all(Value::is_object) => Ok(plugins),
        _ => Err(ConflistError::BadPlugins),
    }
}

fn string(object: &Map<String, Value>, key: &'static str) -> Result<String, ConflistError> {
    object
        .get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or(ConflistError::Missing(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bridge_list() -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": "k8s-pod-network",
            "plugins": [
                {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local"}},
                {"type": "portmap", "capabilities": {"portMappings": true}},
            ],
        })
    }

    fn ours(socket: &str, timeout: u64) -> Value {
        entry(Path::new(socket), timeout)
    }

    #[test]
    fn our_entry_is_appended_after_the_main_plugins() {
        let mut list = bridge_list();
        assert_eq!(
            upsert(&mut list, ours("/run/tunnel/pods.sock", 10)),
            Ok(Change::Appended)
        );
        let plugins = list["plugins"].as_array().unwrap();
        assert_eq!(plugins.len(), 3);
        assert_eq!(
            plugins[..2],
            bridge_list()["plugins"].as_array().unwrap()[..]
        );
        assert_eq!(
            plugins[2],
            json!({"type": "tunnel-cni", "socket": "/run/tunnel/pods.sock", "timeout_seconds": 10})
        );
    }

    #[test]
    fn reinstalling_is_idempotent_and_updates_in_place() {
        let mut list = bridge_list();
        upsert(&mut list, ours("/a.sock", 10)).unwrap();
        let once = list.clone();
        assert_eq!(
            upsert(&mut list, ours("/a.sock", 10)),
            Ok(Change::Unchanged)
        );
        assert_eq!(list, once);

        // Someone put a plugin after ours; a new socket keeps our place.
        list["plugins"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "bandwidth"}));
        assert_eq!(upsert(&mut list, ours("/b.sock", 3)), Ok(Change::Updated));
        let plugins = list["plugins"].as_array().unwrap();
        assert_eq!(plugins.len(), 4);
        assert_eq!(plugins[2]["socket"], "/b.sock");
        assert_eq!(plugins[2]["timeout_seconds"], 3);
        assert_eq!(plugins[3]["type"], "bandwidth");
    }

    #[test]
    fn a_duplicate_entry_of_ours_is_dropped() {
        let mut list = bridge_list();
        upsert(&mut list, ours("/a.sock", 10)).unwrap();
        list["plugins"]
            .as_array_mut()
            .unwrap()
            .push(ours("/a.sock", 10));
        assert_eq!(upsert(&mut list, ours("/a.sock", 10)), Ok(Change::Updated));
        assert_eq!(list["plugins"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn uninstall_takes_out_only_ours_and_is_idempotent() {
        let mut list = bridge_list();
        upsert(&mut list, ours("/a.sock", 10)).unwrap();
        assert_eq!(remove(&mut list), Ok(true));
        assert_eq!(list, bridge_list());
        assert_eq!(remove(&mut list), Ok(false));
        assert_eq!(list, bridge_list());
    }

    #[test]
    fn a_single_plugin_conf_becomes_a_list_holding_it() {
        let conf = json!({
            "cniVersion": "0.4.0", "name": "mynet", "type": "bridge", "bridge": "cni0",
            "ipam": {"type": "host-local", "subnet": "10.22.0.0/16"},
        });
        assert!(!is_list(&conf));
        let mut list = from_single(conf.clone()).unwrap();
        assert!(is_list(&list));
        assert_eq!(
            list,
            json!({"cniVersion": "0.4.0", "name": "mynet", "plugins": [conf]})
        );
        upsert(&mut list, ours("/a.sock", 10)).unwrap();
        assert_eq!(list["plugins"][1]["type"], "tunnel-cni");
    }

    #[test]
    fn configs_that_cannot_take_our_entry_say_why() {
        assert_eq!(
            from_single(json!({"cniVersion": "1.0.0", "type": "bridge"})),
            Err(ConflistError::Missing("name"))
        );
        assert_eq!(from_single(json!([])), Err(ConflistError::NotAnObject));
        let mut old = bridge_list();
        old["cniVersion"] = json!("0.3.1");
        let e = upsert(&mut old, ours("/a.sock", 10)).unwrap_err();
        assert_eq!(e, ConflistError::UnsupportedVersion("0.3.1".into()));
        assert!(e.to_string().contains("every pod's ADD would fail"), "{e}");
        let mut broken = json!({"cniVersion": "1.0.0", "name": "x", "plugins": "bridge"});
        assert_eq!(
            upsert(&mut broken, ours("/a.sock", 10)),
            Err(ConflistError::BadPlugins)
        );
        assert_eq!(remove(&mut broken), Err(ConflistError::BadPlugins));
    }
}
