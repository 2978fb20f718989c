//! Test hosts built from Linux network namespaces joined by a bridge, with a cgroup v2
//! directory per workload, for end-to-end runs of the real `tunnel` binary. Everything a
//! [`Testbed`] makes is named uniquely (pid + counter) and removed when it is dropped, also
//! when a test panicked. Needs root.
//!
//! Layout: a "switch" namespace holds a bridge; host N gets a veth `eth0` with 10.0.0.N/24
//! and fd00::N/64. Processes join their cgroup before entering the namespace (`nsenter`, not
//! `ip netns exec`, which remounts /sys and would hide /sys/fs/bpf and the cgroup tree).
//!
//! For CNI plugins: [`CniRuntime`] runs a conflist's plugin chain as a container runtime
//! does, on [`Netns`]es standing for a node and its pods.

mod capture;
mod cni;
mod host;
mod process;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

pub use capture::{CapturedPackets, PacketCapture};
pub use cni::{CniFailure, CniRuntime, Netns, PluginError};
pub use host::Host;
pub use process::{HostCommand, Output, Proc};

/// Prefix of everything a testbed creates, so leftovers of crashed runs can be found.
const PREFIX: &str = "tt";

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Testbed {
    id: String,
    dir: tempfile::TempDir,
    cgroup_root: PathBuf,
    switch: String,
    hosts: Vec<String>,
    bpf_dirs: std::sync::Mutex<Vec<PathBuf>>,
}

impl Testbed {
    /// A new, empty testbed. Panics naming what is missing (root, cgroup v2, tools).
    pub fn new(label: &str) -> Self {
        require_root();
        for tool in ["ip", "nsenter", "sh"] {
            require_tool(tool);
        }
        sweep_leftovers();
        let id = format!(
            "{PREFIX}{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let cgroup_root = cgroup2_mount().join(format!("tunnel-test-{id}"));
        fs::create_dir_all(cgroup_root.join("default"))
            .unwrap_or_else(|e| panic!("create {}: {e}", cgroup_root.display()));
        let switch = format!("{id}sw");
        run("ip", &["netns", "add", &switch]);
        run(
            "ip",
            &["-n", &switch, "link", "add", "br0", "type", "bridge"],
        );
        run("ip", &["-n", &switch, "link", "set", "br0", "up"]);
        let dir = tempfile::Builder::new()
            .prefix(&format!("tunnel-{label}-"))
            .tempdir()
            .expect("create a temp dir");
        Self {
            id,
            dir,
            cgroup_root,
            switch,
            hosts: Vec::new(),
            bpf_dirs: Default::default(),
        }
    }

    /// Adds host N (in order of creation): 10.0.0.N/24 and fd00::N/64 on `eth0`.
    pub fn add_host(&mut self, name: &str) -> Host {
        let index = self.hosts.len() as u8 + 1;
        let host = Host::create(
            &self.id,
            name,
            index,
            &self.switch,
            self.cgroup_root.join("default"),
        );
        self.hosts.push(host.netns.clone());
        host
    }

    /// A cgroup v2 directory under this testbed's root (created, nested paths allowed).
    pub fn cgroup(&self, path: &str) -> PathBuf {
        let dir = self.cgroup_root.join(path);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create cgroup {}: {e}", dir.display()));
        dir
    }

    /// The cgroup v2 directory all of this testbed's cgroups live under.
    pub fn cgroup_root(&self) -> &Path {
        &self.cgroup_root
    }

    /// A temp dir for configs, certificates and logs (kept when TUNNEL_TEST_KEEP=1).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A unique directory under /sys/fs/bpf for a daemon to pin into; removed on drop.
    pub fn bpf_dir(&self, name: &str) -> PathBuf {
        let dir = PathBuf::from(format!("/sys/fs/bpf/{}-{name}", self.id));
        self.bpf_dirs
            .lock()
            .expect("bpf dir list")
            .push(dir.clone());
        dir
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        kill_cgroup(&self.cgroup_root);
        for netns in self.hosts.iter().chain(std::iter::once(&self.switch)) {
            quiet("ip", &["netns", "del", netns]);
        }
        // Unlinking pins releases the programs they hold (nothing else references them).
        for dir in self.bpf_dirs.lock().map(|d| d.clone()).unwrap_or_default() {
            let _ = fs::remove_dir_all(&dir);
        }
        remove_cgroup_tree(&self.cgroup_root);
        if std::env::var_os("TUNNEL_TEST_KEEP").is_some() {
            let kept =
                std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir")).keep();
            eprintln!("testbed files kept in {}", kept.display());
        }
    }
}

/// An example config (from `config/`) made to run in this testbed: `/etc/tunnel/` becomes
/// `certs`, `/sys/fs/cgroup` the cgroup subtree `label` of this testbed, the pin dir a
/// unique one, and `/run/tunnel/` (the control socket's directory) `run-<label>` in the
/// testbed's directory.
pub fn render_config(testbed: &Testbed, text: &str, label: &str, certs: &Path) -> String {
    let cgroup_base = testbed.cgroup(label);
    text.replace("/etc/tunnel/", &format!("{}/", certs.display()))
        .replace(
            "/run/tunnel/",
            &format!("{}/", testbed.dir().join(format!("run-{label}")).display()),
        )
        .replace(
            "/sys/fs/bpf/tunnel",
            &testbed.bpf_dir(label).display().to_string(),
        )
        .replace("/sys/fs/cgroup", &cgroup_base.display().to_string())
}

/// A config's text with `[capture] sockmap` set to `on` (replacing a setting already there),
/// for the tests and the bench that run with the sockmap hop on and off.
pub fn with_sockmap(text: &str, on: bool) -> String {
    let kept: Vec<&str> = text
        .lines()
        .filter(|line| !line.starts_with("sockmap = "))
        .collect();
    (kept.join("\n") + "\n").replacen("[capture]\n", &format!("[capture]\nsockmap = {on}\n"), 1)
}

/// `text` (a daemon config) with `[runtime] threads = threads`, replacing a setting already
/// there; a `[runtime]` table is added if there is none.
pub fn with_runtime_threads(text: &str, threads: usize) -> String {
    let kept: Vec<&str> = text
        .lines()
        .filter(|line| !line.starts_with("threads = "))
        .collect();
    let text = kept.join("\n") + "\n";
    let setting = format!("[runtime]\nthreads = {threads}\n");
    if text.contains("[runtime]\n") {
        text.replacen("[runtime]\n", &setting, 1)
    } else {
        format!("{text}\n{setting}")
    }
}

/// Polls `done` every `period` until it holds; panics with `what` (and the time waited)
/// once `timeout` has passed.
pub fn wait_until(
    timeout: std::time::Duration,
    period: std::time::Duration,
    mut done: impl FnMut() -> bool,
    what: impl Fn() -> String,
) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(
            started.elapsed() < timeout,
            "{} (waited {timeout:?})",
            what()
        );
        std::thread::sleep(period);
    }
}

pub fn cgroup2_mount() -> PathBuf {
    let mounts = fs::read_to_string("/proc/self/mounts").expect("read /proc/self/mounts");
    mounts
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            (fields.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(fields[1]))
        })
        .expect("no cgroup v2 hierarchy is mounted (no cgroup2 line in /proc/self/mounts)")
}

fn require_root() {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|u| u.split_whitespace().next())
        .unwrap_or("?");
    assert_eq!(
        uid, "0",
        "end-to-end tests build network namespaces and cgroups and need root (uid is {uid})"
    );
}

pub fn require_tool(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(found, "{tool} is not installed; run `cargo xtask setup`");
}

/// Runs a setup command, panicking with its stderr if it fails.
pub(crate) fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs a cleanup command, ignoring failure (cleanup must never panic).
pub(crate) fn quiet(program: &str, args: &[&str]) {
    let _ = Command::new(program).args(args).output();
}

fn kill_cgroup(root: &Path) {
    let _ = fs::write(root.join("cgroup.kill"), "1");
    for _ in 0..200 {
        if procs_in_tree(root) == 0 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    eprintln!(
        "testbed: processes still alive in {} after cgroup.kill",
        root.display()
    );
}

fn procs_in_tree(dir: &Path) -> usize {
    let own = fs::read_to_string(dir.join("cgroup.procs"))
        .map(|p| p.lines().count())
        .unwrap_or(0);
    let children: usize = fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| procs_in_tree(&e.path()))
                .sum()
        })
        .unwrap_or(0);
    own + children
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.path().is_dir() {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    // A cgroup whose last process has just exited stays busy until the kernel has finished
    // releasing it (cgroup.procs is already empty by then): retry briefly.
    let mut removed = fs::remove_dir(dir);
    for _ in 0..100 {
        match &removed {
            Err(e) if e.kind() == std::io::ErrorKind::ResourceBusy => {
                std::thread::sleep(std::time::Duration::from_millis(10));
                removed = fs::remove_dir(dir);
            }
            _ => break,
        }
    }
    if let Err(e) = removed
        && dir.exists()
    {
        eprintln!("testbed: cannot remove cgroup {}: {e}", dir.display());
    }
}

/// Removes what earlier runs left behind when their process died (pid no longer alive).
fn sweep_leftovers() {
    let alive = |name: &str| -> bool {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            return true;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        pid.is_empty() || Path::new(&format!("/proc/{pid}")).exists()
    };
    if let Ok(output) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if name.starts_with(PREFIX) && !alive(name) {
                quiet("ip", &["netns", "del", name]);
            }
        }
    }
    if let Ok(entries) = fs::read_dir(cgroup2_mount()) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_prefix("tunnel-test-")
                && !alive(id)
            {
                kill_cgroup(&entry.path());
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    if let Ok(entries) = fs::read_dir("/sys/fs/bpf") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(PREFIX) && !alive(&name) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}
