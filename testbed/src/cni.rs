//! A container runtime's CNI side, for end-to-end tests of CNI plugins: runs a conflist's
//! plugin chain the way libcni does (what containerd and CRI-O use), with network namespaces
//! made by [`Netns`] standing in for the node and its pods.
//!
//! What is reproduced, because plugins depend on it: the environment (`CNI_COMMAND`,
//! `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS` as Kubernetes runtimes fill it,
//! `CNI_PATH`), each plugin's stdin (its conflist entry with the list's `name` and
//! `cniVersion` injected, and `prevResult`), ADD in list order with each result handed to the
//! next plugin, DEL and CHECK with the cached ADD result, DEL in reverse order, and the chain
//! stopping at the first failure. Not reproduced: capability args (`runtimeConfig`), result
//! conversion between CNI versions, and the on-disk result cache (kept in memory instead).

use std::{
    collections::HashMap,
    fmt,
    fs::File,
    io::{Read as _, Seek as _, Write as _},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::{Mutex, atomic::Ordering},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{NEXT, PREFIX, quiet, require_root, require_tool, run, sweep_leftovers};

/// A network namespace under /run/netns, named uniquely (so that test binaries can run in
/// parallel and leftovers of crashed runs are swept) and deleted on drop, also on panic.
/// Deleting it deletes the interfaces in it.
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn new(label: &str) -> Self {
        require_root();
        require_tool("ip");
        sweep_leftovers();
        let name = format!(
            "{PREFIX}{}x{}{label}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        let netns = Self { name };
        run("ip", &["-n", &netns.name, "link", "set", "lo", "up"]);
        netns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The path runtimes pass as `CNI_NETNS`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// Runs `ip -n <this> <args>` and returns its stdout; panics naming the command on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let output = Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run ip: {e}"));
        assert!(
            output.status.success(),
            "ip -n {} {} failed: {}",
            self.name,
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        quiet("ip", &["netns", "del", &self.name]);
    }
}

pub struct CniRuntime {
    plugin_dirs: Vec<PathBuf>,
    conflist: Value,
    /// The namespace (a name under /run/netns) the plugins run in, as the runtime runs in the
    /// node's: a bridge plugin makes its bridge there. `None`: this process's namespace.
    node_netns: Option<String>,
    /// How long one plugin may run before it is killed and the chain fails.
    timeout: Duration,
    /// The final ADD result per (container id, ifname): libcni's result cache.
    cache: Mutex<HashMap<(String, String), Value>>,
}

/// A plugin of the chain failed: its [`PluginError`] (fields readable through `Deref`),
/// boxed so that results stay small.
#[derive(Debug)]
pub struct CniFailure(Box<PluginError>);

impl std::ops::Deref for CniFailure {
    type Target = PluginError;

    fn deref(&self) -> &PluginError {
        &self.0
    }
}

/// The failing plugin's CNI error, if it printed one, and all it printed.
#[derive(Debug)]
pub struct PluginError {
    /// The failing plugin's `type`.
    pub plugin: String,
    pub command: &'static str,
    /// The CNI error code; `None` when stdout held no CNI error (a crash, a timeout).
    pub code: Option<u64>,
    pub msg: String,
    pub details: Option<String>,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for CniFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} failed", self.plugin, self.command)?;
        if let Some(code) = self.code {
            write!(f, " with CNI error {code}")?;
        }
        write!(f, ": {}", self.msg)?;
        if let Some(details) = &self.details {
            write!(f, " ({details})")?;
        }
        if !self.stderr.trim().is_empty() {
            write!(f, "\nstderr: {}", self.stderr.trim())?;
        }
        Ok(())
    }
}

/// Who a plugin is called for: everything but the command.
struct Call<'a> {
    container_id: &'a str,
    netns: &'a Path,
    ifname: &'a str,
    cni_args: String,
}

impl CniRuntime {
    /// Panics unless `conflist` has a `name`, a `cniVersion` and `plugins` with a `type` each:
    /// libcni refuses such a list before running anything.
    pub fn new(plugin_dirs: Vec<PathBuf>, conflist: Value) -> Self {
        for key in ["name", "cniVersion"] {
            assert!(
                conflist.get(key).is_some_and(Value::is_string),
                "the conflist has no {key:?} string: {conflist}"
            );
        }
        let plugins = conflist["plugins"].as_array();
        assert!(
            plugins.is_some_and(|p| !p.is_empty()
                && p.iter()
                    .all(|p| p.get("type").is_some_and(Value::is_string))),
            "the conflist's \"plugins\" must be a non-empty list of objects with a \"type\": \
             {conflist}"
        );
        Self {
            plugin_dirs,
            conflist,
            node_netns: None,
            timeout: Duration::from_secs(60),
            cache: Mutex::default(),
        }
    }

    /// Runs the plugins in the network namespace `name` (under /run/netns), with
    /// `ip netns exec`, which also mounts that namespace's /sys as a runtime in it would see.
    pub fn in_netns(mut self, name: &str) -> Self {
        self.node_netns = Some(name.into());
        self
    }

    /// ADD: each plugin in list order, each given the previous one's result; the last result
    /// is the chain's, and is cached for DEL and CHECK.
    pub fn add(
        &self,
        container_id: &str,
        netns: &Path,
        ifname: &str,
        k8s_args: &[(&str, &str)],
    ) -> Result<Value, CniFailure> {
        let call = Call::new(container_id, netns, ifname, k8s_args);
        let mut result = None;
        for plugin in self.plugins() {
            let output = self.exec(plugin, "ADD", &call, result.as_ref())?;
            let parsed: Value = serde_json::from_str(&output.stdout)
                .map_err(|e| output.failure(format!("printed no result JSON on success: {e}")))?;
            result = Some(parsed);
        }
        let result = result.expect("a conflist has at least one plugin");
        self.cache
            .lock()
            .expect("result cache")
            .insert(call.key(), result.clone());
        Ok(result)
    }

    /// DEL: each plugin in reverse order, each given the cached ADD result (none if there
    /// was no successful ADD); the cache entry goes once every plugin succeeded.
    pub fn del(
        &self,
        container_id: &str,
        netns: &Path,
        ifname: &str,
        k8s_args: &[(&str, &str)],
    ) -> Result<(), CniFailure> {
        let call = Call::new(container_id, netns, ifname, k8s_args);
        let cached = self.cached_result(container_id, ifname);
        for plugin in self.plugins().iter().rev() {
            self.exec(plugin, "DEL", &call, cached.as_ref())?;
        }
        self.cache.lock().expect("result cache").remove(&call.key());
        Ok(())
    }

    /// CHECK: each plugin in order with the cached ADD result; skipped altogether when the
    /// conflist says `disableCheck`, as libcni does.
    pub fn check(
        &self,
        container_id: &str,
        netns: &Path,
        ifname: &str,
        k8s_args: &[(&str, &str)],
    ) -> Result<(), CniFailure> {
        if self.conflist["disableCheck"] == Value::Bool(true) {
            return Ok(());
        }
        let call = Call::new(container_id, netns, ifname, k8s_args);
        let cached = self.cached_result(container_id, ifname);
        for plugin in self.plugins() {
            self.exec(plugin, "CHECK", &call, cached.as_ref())?;
        }
        Ok(())
    }

    /// The result of the last successful ADD for this container and interface.
    pub fn cached_result(&self, container_id: &str, ifname: &str) -> Option<Value> {
        self.cache
            .lock()
            .expect("result cache")
            .get(&(container_id.to_owned(), ifname.to_owned()))
            .cloned()
    }

    fn plugins(&self) -> &[Value] {
        self.conflist["plugins"]
            .as_array()
            .expect("checked in new()")
    }

    /// Where the plugin `kind` is: the first of the plugin dirs that has it, as libcni looks
    /// in CNI_PATH. Not finding it is a test setup error, so it panics.
    fn find(&self, kind: &str) -> PathBuf {
        self.plugin_dirs
            .iter()
            .map(|dir| dir.join(kind))
            .find(|path| path.is_file())
            .unwrap_or_else(|| panic!("failed to find plugin {kind:?} in {:?}", self.plugin_dirs))
    }

    fn exec(
        &self,
        plugin: &Value,
        command: &'static str,
        call: &Call,
        prev_result: Option<&Value>,
    ) -> Result<PluginOutput, CniFailure> {
        let kind = plugin["type"]
            .as_str()
            .expect("checked in new()")
            .to_owned();
        let mut config = plugin.clone();
        config["name"] = self.conflist["name"].clone();
        config["cniVersion"] = self.conflist["cniVersion"].clone();
        if let Some(prev) = prev_result {
            config["prevResult"] = prev.clone();
        }
        let executable = self.find(&kind);
        let mut process = match &self.node_netns {
            Some(netns) => {
                let mut ip = Command::new("ip");
                ip.args(["netns", "exec", netns]).arg(&executable);
                ip
            }
            None => Command::new(&executable),
        };
        let cni_path = std::env::join_paths(&self.plugin_dirs).expect("plugin dirs have no ':'");
        process
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", call.container_id)
            .env("CNI_NETNS", call.netns)
            .env("CNI_IFNAME", call.ifname)
            .env("CNI_ARGS", &call.cni_args)
            .env("CNI_PATH", cni_path);
        let output = run_with_timeout(process, config.to_string().as_bytes(), self.timeout);
        let output = PluginOutput {
            plugin: kind,
            command,
            ..output
        };
        if output.status.is_some_and(|s| s.success()) {
            Ok(output)
        } else {
            Err(output.error())
        }
    }
}

impl<'a> Call<'a> {
    /// `CNI_ARGS` as Kubernetes runtimes write it: `IgnoreUnknown=1` first (plugins that do
    /// not know the keys must not fail), then the pod's keys, with the sandbox's container id
    /// as `K8S_POD_INFRA_CONTAINER_ID` unless the test gave one.
    fn new(
        container_id: &'a str,
        netns: &'a Path,
        ifname: &'a str,
        k8s_args: &[(&str, &str)],
    ) -> Self {
        let mut pairs = vec!["IgnoreUnknown=1".to_owned()];
        pairs.extend(k8s_args.iter().map(|(k, v)| format!("{k}={v}")));
        if !k8s_args
            .iter()
            .any(|(k, _)| *k == "K8S_POD_INFRA_CONTAINER_ID")
        {
            pairs.push(format!("K8S_POD_INFRA_CONTAINER_ID={container_id}"));
        }
        Self {
            container_id,
            netns,
            ifname,
            cni_args: pairs.join(";"),
        }
    }

    fn key(&self) -> (String, String) {
        (self.container_id.to_owned(), self.ifname.to_owned())
    }
}

struct PluginOutput {
    plugin: String,
    command: &'static str,
    /// How it ended; `None`: killed after the timeout.
    status: Option<ExitStatus>,
    timeout: Duration,
    stdout: String,
    stderr: String,
}

impl PluginOutput {
    fn failure(&self, msg: String) -> CniFailure {
        CniFailure(Box::new(self.plugin_error(msg)))
    }

    fn plugin_error(&self, msg: String) -> PluginError {
        PluginError {
            plugin: self.plugin.clone(),
            command: self.command,
            code: None,
            msg,
            details: None,
            stdout: self.stdout.clone(),
            stderr: self.stderr.clone(),
        }
    }

    /// The CNI error on stdout, or what is known without one.
    fn error(&self) -> CniFailure {
        let Ok(error) = serde_json::from_str::<Value>(&self.stdout) else {
            return self.failure(match self.status {
                Some(status) => format!("{status} without a CNI error on stdout"),
                None => format!("did not finish within {:?} (killed)", self.timeout),
            });
        };
        CniFailure(Box::new(PluginError {
            code: error["code"].as_u64(),
            msg: error["msg"].as_str().unwrap_or_default().to_owned(),
            details: error["details"].as_str().map(str::to_owned),
            ..self.plugin_error(String::new())
        }))
    }
}

/// Runs `command` with `stdin`, its output in anonymous files (a pipe could fill up while we
/// wait), killing it after `timeout`.
fn run_with_timeout(mut command: Command, stdin: &[u8], timeout: Duration) -> PluginOutput {
    let description = format!("{command:?}");
    let mut files = [(); 2].map(|()| tempfile::tempfile().expect("create a temp file"));
    let clone = |file: &File| file.try_clone().expect("clone a temp file handle");
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(clone(&files[0]))
        .stderr(clone(&files[1]))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {description}: {e}"));
    // A plugin that exits without reading its stdin is its own failure, not ours.
    let _ = child.stdin.take().expect("piped stdin").write_all(stdin);
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("wait for {description}: {e}"),
        }
    };
    let [stdout, stderr] = files.each_mut().map(|file| {
        let mut text = String::new();
        file.rewind().expect("rewind a temp file");
        file.read_to_string(&mut text).expect("read a temp file");
        text
    });
    PluginOutput {
        plugin: String::new(),
        command: "",
        status,
        timeout,
        stdout,
        stderr,
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::PermissionsExt as _};

    use serde_json::json;

    use super::*;

    /// A plugin that logs its command and keeps its stdin beside itself, then prints `answer`
    /// (on ADD) and exits with `exit`.
    fn script(dir: &Path, name: &str, answer: &str, exit: u8) {
        let path = dir.join(name);
        fs::write(
            &path,
            format!(
                "#!/bin/sh\n\
                 cat > \"$(dirname \"$0\")/$CNI_COMMAND-{name}.json\"\n\
                 echo \"$CNI_COMMAND {name} $CNI_CONTAINERID $CNI_NETNS $CNI_IFNAME $CNI_ARGS\" \
                 >> \"$(dirname \"$0\")/log\"\n\
                 if [ \"$CNI_COMMAND\" = ADD ] || [ {exit} != 0 ]; then echo '{answer}'; fi\n\
                 exit {exit}\n"
            ),
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn read(dir: &Path, file: &str) -> Value {
        serde_json::from_slice(&fs::read(dir.join(file)).unwrap()).unwrap()
    }

    #[test]
    fn the_chain_runs_as_libcni_runs_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = r#"{"cniVersion":"1.0.0","ips":[{"address":"10.9.9.9/24"}]}"#;
        let second = r#"{"cniVersion":"1.0.0","ips":[{"address":"10.9.9.9/24"}],"dns":{}}"#;
        script(dir.path(), "first", first, 0);
        script(dir.path(), "second", second, 0);
        let runtime = CniRuntime::new(
            vec!["/nonexistent".into(), dir.path().to_owned()],
            json!({"cniVersion": "1.0.0", "name": "net", "plugins": [
                {"type": "first", "setting": 1}, {"type": "second"},
            ]}),
        );
        let args = [("K8S_POD_NAMESPACE", "ns"), ("K8S_POD_UID", "u")];
        let netns = Path::new("/run/netns/p");
        let result = runtime.add("c1", netns, "eth0", &args).unwrap();
        assert_eq!(result, serde_json::from_str::<Value>(second).unwrap());
        assert_eq!(
            read(dir.path(), "ADD-first.json"),
            json!({"type": "first", "setting": 1, "name": "net", "cniVersion": "1.0.0"})
        );
        assert_eq!(
            read(dir.path(), "ADD-second.json")["prevResult"],
            serde_json::from_str::<Value>(first).unwrap()
        );

        runtime.check("c1", netns, "eth0", &args).unwrap();
        runtime.del("c1", netns, "eth0", &args).unwrap();
        for file in ["CHECK-first.json", "DEL-first.json", "DEL-second.json"] {
            assert_eq!(read(dir.path(), file)["prevResult"], result, "{file}");
        }
        assert!(runtime.cached_result("c1", "eth0").is_none());
        let cni_args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_UID=u;\
                        K8S_POD_INFRA_CONTAINER_ID=c1";
        let log = fs::read_to_string(dir.path().join("log")).unwrap();
        let expected: Vec<String> = [
            "ADD first",
            "ADD second",
            "CHECK first",
            "CHECK second",
            "DEL second",
            "DEL first",
        ]
        .iter()
        .map(|call| format!("{call} c1 /run/netns/p eth0 {cni_args}"))
        .collect();
        assert_eq!(log.lines().collect::<Vec<_>>(), expected);
    }

    #[test]
    fn the_chain_stops_at_the_first_failure_with_its_cni_error() {
        let dir = tempfile::tempdir().unwrap();
        script(
            dir.path(),
            "refuser",
            r#"{"cniVersion":"1.0.0","code":100,"msg":"no","details":"why"}"#,
            1,
        );
        script(dir.path(), "after", "{}", 0);
        let runtime = CniRuntime::new(
            vec![dir.path().to_owned()],
            json!({"cniVersion": "1.0.0", "name": "net", "plugins": [
                {"type": "refuser"}, {"type": "after"},
            ]}),
        );
        let failure = runtime
            .add("c1", Path::new("/run/netns/p"), "eth0", &[])
            .unwrap_err();
        assert_eq!(
            (failure.plugin.as_str(), failure.command, failure.code),
            ("refuser", "ADD", Some(100))
        );
        assert_eq!(
            (failure.msg.as_str(), failure.details.as_deref()),
            ("no", Some("why"))
        );
        assert!(!dir.path().join("ADD-after.json").exists());
        assert!(runtime.cached_result("c1", "eth0").is_none());
    }
}
