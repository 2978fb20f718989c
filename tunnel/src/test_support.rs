//! What unit and in-process tests share: a log capture ([`Logs`]), and a config directory
//! for tests of what the daemon and `tunnel check` make of certificates (a CA made by
//! `tunnel ca init`, a config beside it, and good certificates for the node and one
//! workload, which each test may replace with a broken one).

mod logs;

use std::path::{Path, PathBuf};

pub use logs::Logs;

use tempfile::TempDir;

use crate::{
    ca::{self, Ca, InitOptions, LeafSpec},
    config::Config,
};

/// This process's resident memory (`VmRSS`), for tests that print what a structure costs.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap()
}

pub const NODE_ID: &str = "spiffe://example.org/node/a";
pub const FRONTEND_ID: &str = "spiffe://example.org/frontend";

/// The config the fixture writes unless told otherwise; paths are relative to it.
pub const CONFIG: &str = r#"
trust_domain = "example.org"
trust_bundle = "ca/bundle.pem"

[node]
spiffe_id = "spiffe://example.org/node/a"
cert = "node/cert.pem"
key = "node/key.pem"

[capture]
cgroup = "/sys/fs/cgroup"
destinations = ["10.0.0.0/24"]

[[workload]]
name = "frontend"
spiffe_id = "spiffe://example.org/frontend"
cert = "frontend/cert.pem"
key = "frontend/key.pem"
cgroup = "/sys/fs/cgroup/frontend"
"#;

pub struct Fixture {
    pub dir: TempDir,
    pub ca: Ca,
}

impl Fixture {
    pub fn new() -> Self {
        Self::with_config(CONFIG)
    }

    /// `config` as `tunnel.toml`, the CA in `ca/`, good `node/` and `frontend/` certificates.
    pub fn with_config(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let fixture = Self {
            ca: new_ca(&dir.path().join("ca")),
            dir,
        };
        std::fs::write(fixture.path("tunnel.toml"), config).unwrap();
        fixture.issue("node", &good(NODE_ID));
        fixture.issue("frontend", &good(FRONTEND_ID));
        fixture
    }

    /// Writes `<dir>/<name>/cert.pem` (leaf + intermediate) and `key.pem` as `spec` says.
    pub fn issue(&self, name: &str, spec: &LeafSpec) {
        self.ca.issue(spec, &self.path(name), true).unwrap();
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn config(&self) -> Config {
        Config::load(&self.path("tunnel.toml")).unwrap()
    }
}

/// `tunnel ca init` for example.org into `dir`, loaded.
pub fn new_ca(dir: &Path) -> Ca {
    ca::init(&InitOptions {
        trust_domain: "example.org".parse().unwrap(),
        out: dir.into(),
        force: false,
        root_ttl: ca::DEFAULT_ROOT_TTL,
        intermediate_ttl: ca::DEFAULT_INTERMEDIATE_TTL,
    })
    .unwrap();
    Ca::load(dir).unwrap()
}

/// What `tunnel ca issue` makes for `id`.
pub fn good(id: &str) -> LeafSpec {
    LeafSpec::workload(&id.parse().unwrap(), ca::DEFAULT_LEAF_TTL)
}

/// Valid from two days ago until yesterday.
pub fn expired(id: &str) -> LeafSpec {
    let mut spec = good(id);
    spec.not_before -= time::Duration::days(2);
    spec.not_after = spec.not_before + time::Duration::days(1);
    spec
}
