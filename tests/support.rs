//! Shared setup for the end-to-end tests: certificates from the built-in CA, configs rendered
//! from the examples in `config/` (so the examples are exercised, and cannot rot), daemons in
//! test hosts, and the `netprobe.py` clients and servers.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the support module"
)]

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

pub use testbed::{Host, Proc, Testbed};
use tunnel::{
    ca::{self, Ca, InitOptions, IssueOptions, LeafSpec},
    identity::TrustDomain,
};

/// The daemon under test (cargo builds it before the tests).
pub const TUNNEL: &str = env!("CARGO_BIN_EXE_tunnel");
pub const NETPROBE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/support/netprobe.py");
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config");

pub const SHORT: Duration = Duration::from_secs(10);
pub const LONG: Duration = Duration::from_secs(120);

/// A CA for the trust domain example.org and helpers to issue from it.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    /// `tunnel ca init` (the library behind the command) into `<dir>/ca`.
    pub fn new(dir: &Path) -> Self {
        let options = InitOptions {
            trust_domain: "example.org".parse::<TrustDomain>().unwrap(),
            out: dir.join("ca"),
            force: false,
            root_ttl: ca::DEFAULT_ROOT_TTL,
            intermediate_ttl: ca::DEFAULT_INTERMEDIATE_TTL,
        };
        ca::init(&options).expect("create the test CA");
        Self {
            dir: dir.to_path_buf(),
        }
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.dir.join("ca")
    }

    /// Issues `spiffe://example.org/<path>` into `<dir>/<name>/`.
    pub fn issue(&self, path: &str, name: &str) -> PathBuf {
        let out = self.dir.join(name);
        let options = IssueOptions {
            ca: self.ca_dir(),
            spiffe_id: format!("spiffe://example.org/{path}"),
            ttl: ca::DEFAULT_LEAF_TTL,
            out: out.clone(),
            force: true,
        };
        ca::issue(&options).expect("issue a test certificate");
        out
    }

    /// Issues a certificate described by `spec` (deliberately broken ones included).
    pub fn issue_spec(&self, spec: &LeafSpec, name: &str) -> PathBuf {
        let out = self.dir.join(name);
        Ca::load(&self.ca_dir())
            .expect("load the test CA")
            .issue(spec, &out, true)
            .expect("issue");
        out
    }
}

/// A test host running a daemon with a config rendered from an example.
pub struct Site {
    pub host: Host,
    pub label: String,
    pub config: PathBuf,
    pub daemon: Option<Proc>,
}

impl Site {
    /// The cgroup of a workload on this site (`workloads/<name>` as in the examples).
    pub fn workload_cgroup(&self, testbed: &Testbed, name: &str) -> PathBuf {
        testbed.cgroup(&format!("{}/workloads/{name}", self.label))
    }

    /// Starts (or restarts) the daemon in its own cgroup, and waits until it is ready.
    pub fn start(&mut self, testbed: &Testbed) {
        self.daemon = Some(start_daemon(testbed, &self.host, &self.label, &self.config));
    }

    pub fn daemon(&self) -> &Proc {
        self.daemon.as_ref().expect("the daemon was started")
    }

    pub fn logs(&self) -> String {
        self.daemon().logs()
    }

    /// Runs a netprobe command as a process of workload `workload`.
    pub fn probe(&self, testbed: &Testbed, workload: &str, args: &[&str]) -> testbed::Output {
        self.host
            .command("python3")
            .arg(NETPROBE)
            .args(args)
            .in_cgroup(&self.workload_cgroup(testbed, workload))
            .output(LONG)
    }

    /// Starts a netprobe command as a process of workload `workload`, without waiting.
    pub fn spawn_probe(&self, testbed: &Testbed, workload: &str, args: &[&str]) -> Proc {
        self.host
            .command("python3")
            .arg(NETPROBE)
            .args(args)
            .in_cgroup(&self.workload_cgroup(testbed, workload))
            .spawn()
    }
}

pub fn start_daemon(testbed: &Testbed, host: &Host, label: &str, config: &Path) -> Proc {
    let mut daemon = host
        .command(TUNNEL)
        .args(["run", "--log-level", "debug", "--config"])
        .arg(config)
        .in_cgroup(&testbed.cgroup(&format!("{label}/daemon")))
        .spawn();
    daemon.wait_for("tunnel ready", SHORT);
    daemon
}

/// An example config made to run in a testbed: `/etc/tunnel/` becomes the test's cert dir,
/// `/sys/fs/cgroup` the host's cgroup subtree, the pin dir a unique one, and `/run/tunnel/`
/// (the control socket's directory) one of the host's own in the test's dir. With
/// `TUNNEL_TEST_SOCKMAP` set (`true` or `false`), `[capture] sockmap` is that, so the suite
/// can run with the sockmap hop on and off whatever the default.
pub fn render_example(example: &str, testbed: &Testbed, label: &str, certs: &Path) -> String {
    let text = fs::read_to_string(Path::new(EXAMPLES).join(example)).expect("read example config");
    let text = sockmap_from_env(text);
    let cgroup_base = testbed.cgroup(label);
    text.replace("/etc/tunnel/", &format!("{}/", certs.display()))
        .replace(
            "/run/tunnel/",
            &format!("{}/", run_dir(testbed, label).display()),
        )
        .replace(
            "/sys/fs/bpf/tunnel",
            &testbed.bpf_dir(label).display().to_string(),
        )
        .replace("/sys/fs/cgroup", &cgroup_base.display().to_string())
}

/// `text` with `[capture] sockmap` as `TUNNEL_TEST_SOCKMAP` says (`true` or `false`), or as
/// it is when that is not set.
pub fn sockmap_from_env(text: String) -> String {
    match std::env::var("TUNNEL_TEST_SOCKMAP") {
        Ok(on) => {
            assert!(
                on == "true" || on == "false",
                "TUNNEL_TEST_SOCKMAP={on:?}: true or false"
            );
            testbed::with_sockmap(&text, on == "true")
        }
        Err(_) => text,
    }
}

/// Where a host's daemon keeps its control socket in a testbed (`/run/tunnel` in the
/// examples).
pub fn run_dir(testbed: &Testbed, label: &str) -> PathBuf {
    testbed.dir().join(format!("run-{label}"))
}

/// `GET path` from the admin API of the daemon in `host` (`curl` inside the host, on the
/// default admin port).
pub fn admin_get(host: &Host, path: &str) -> String {
    let out = host
        .command("curl")
        .args(["-sS", "--max-time", "5"])
        .arg(format!("http://127.0.0.1:15000{path}"))
        .output(SHORT);
    assert!(out.status.success(), "curl {path}: {}", out.stderr);
    out.stdout
}

/// Resident memory of a process (VmRSS), in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc status")
}

pub fn write(path: &Path, text: &str) -> PathBuf {
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path.to_path_buf()
}

/// Certificates a host's example config expects under `/etc/tunnel/`: the bundle, the node's
/// and its workloads'.
pub fn host_certs(pki: &Pki, testbed: &Testbed, host: &str, workloads: &[&str]) -> PathBuf {
    let dir = testbed.dir().join(format!("etc-{host}"));
    fs::create_dir_all(dir.join("ca")).unwrap();
    fs::copy(pki.ca_dir().join("bundle.pem"), dir.join("ca/bundle.pem")).unwrap();
    let node = pki.issue(&format!("node/{host}"), &format!("{host}-node"));
    link_dir(&node, &dir.join("node"));
    for workload in workloads {
        let issued = pki.issue(workload, &format!("{host}-{workload}"));
        link_dir(&issued, &dir.join(workload));
    }
    dir
}

fn link_dir(from: &Path, to: &Path) {
    let _ = fs::remove_file(to);
    std::os::unix::fs::symlink(from, to).unwrap();
}

/// Two hosts from the examples: A (10.0.0.1, workload `frontend`) and B (10.0.0.2, workload
/// `orders` on port 8080, which only `frontend` may call). `edit_a`/`edit_b` adjust the
/// rendered configs; daemons are not started yet.
pub struct Pair {
    pub testbed: Testbed,
    pub pki: Pki,
    pub a: Site,
    pub b: Site,
}

impl Pair {
    pub fn new(
        name: &str,
        edit_a: impl Fn(String) -> String,
        edit_b: impl Fn(String) -> String,
    ) -> Self {
        let mut testbed = Testbed::new(name);
        let pki = Pki::new(testbed.dir());
        let host_a = testbed.add_host("host-a");
        let host_b = testbed.add_host("host-b");
        let certs_a = host_certs(&pki, &testbed, "host-a", &["frontend"]);
        let certs_b = host_certs(&pki, &testbed, "host-b", &["orders"]);
        let a_text = edit_a(render_example("host-a.toml", &testbed, "a", &certs_a));
        let b_text = edit_b(render_example("host-b.toml", &testbed, "b", &certs_b));
        let a_config = write(&testbed.dir().join("host-a.toml"), &a_text);
        let b_config = write(&testbed.dir().join("host-b.toml"), &b_text);
        testbed.cgroup("a/workloads/frontend");
        testbed.cgroup("a/workloads/other");
        testbed.cgroup("b/workloads");
        let a = Site {
            host: host_a,
            label: "a".into(),
            config: a_config,
            daemon: None,
        };
        let b = Site {
            host: host_b,
            label: "b".into(),
            config: b_config,
            daemon: None,
        };
        Self { testbed, pki, a, b }
    }

    /// Both daemons up.
    pub fn start(&mut self) {
        self.b.start(&self.testbed);
        self.a.start(&self.testbed);
    }

    /// A netprobe server on host B, not in any captured cgroup; waits until it listens.
    pub fn serve_on_b(&self, args: &[&str], port: u16) -> Proc {
        let mut server = self
            .b
            .host
            .command("python3")
            .arg(NETPROBE)
            .args(args)
            .spawn();
        server.wait_for("listening", SHORT);
        self.b.host.wait_for_listener(port, SHORT);
        server
    }

    /// As [`Self::serve_on_b`], as a process of B's workload `workload` (inside B's capture
    /// cgroup, as a host's workloads are).
    pub fn serve_on_b_as(&self, workload: &str, args: &[&str], port: u16) -> Proc {
        let mut server = self.b.spawn_probe(&self.testbed, workload, args);
        server.wait_for("listening", SHORT);
        self.b.host.wait_for_listener(port, SHORT);
        server
    }

    /// Runs netprobe on host A as workload `frontend`.
    pub fn frontend(&self, args: &[&str]) -> testbed::Output {
        self.a.probe(&self.testbed, "frontend", args)
    }

    /// Starts netprobe on host A as workload `frontend`, without waiting.
    pub fn spawn_frontend(&self, args: &[&str]) -> Proc {
        self.a.spawn_probe(&self.testbed, "frontend", args)
    }
}

/// The JSON field `key` of netprobe's `peer` output, as "ip:port".
pub fn endpoint(json: &str, key: &str) -> String {
    let start = json
        .find(&format!("\"{key}\": ["))
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + key.len()
        + 5;
    let end = start + json[start..].find(']').expect("closing bracket");
    let parts: Vec<&str> = json[start..end].split(", ").collect();
    let ip = parts[0].trim_matches('"');
    if ip.contains(':') {
        format!("[{ip}]:{}", parts[1])
    } else {
        format!("{ip}:{}", parts[1])
    }
}
