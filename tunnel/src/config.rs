//! The daemon's configuration: read once at start, turned into typed values (addresses,
//! CIDRs, SPIFFE IDs, durations), immutable afterwards. Parse, don't validate later: every
//! rule is checked here, and every problem names the file, line and key.
//!
//! Relative paths in the file are relative to the file's directory.

mod api_server;
mod build;
mod env;
mod error;
mod raw;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    net::{SocketAddr, SocketAddrV4, SocketAddrV6},
    path::{Path, PathBuf},
    time::Duration,
};

pub use api_server::{ApiServer, ApiServerError};
/// Public for the `config` fuzz target (fuzz/), which expands documents as the reader does.
pub use env::expand as expand_env;
pub use error::{ConfigError, Located, Problem, Site};
use ipnet::IpNet;
pub use raw::{Action, Aead, Crypto, Mode};

use crate::identity::{IdPattern, IdTemplate, SpiffeId, TrustDomain};

/// Where pins live unless `capture.bpf_dir` says otherwise.
pub const DEFAULT_BPF_DIR: &str = "/sys/fs/bpf/tunnel";
pub const DEFAULT_OUTBOUND: &str = "127.0.0.1:15001";
pub const DEFAULT_INBOUND: &str = "0.0.0.0:15008";
pub const DEFAULT_ADMIN: &str = "127.0.0.1:15000";
/// Readiness alone, for probes (Istio's and ztunnel's health port).
pub const DEFAULT_HEALTH: &str = "127.0.0.1:15021";
/// The control socket: the admin API for root, where the log filter is changed.
pub const DEFAULT_CONTROL: &str = "/run/tunnel/control.sock";
/// Where other hosts' plaintext connections to workload ports are steered.
pub const DEFAULT_INBOUND_PLAINTEXT: &str = "0.0.0.0:15006";
/// The HBONE port of peer daemons.
pub const DEFAULT_PEER_PORT: u16 = 15008;
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_MAX_STREAMS: u32 = 100;
/// Accept queue of every listener (the kernel caps it at `net.core.somaxconn`).
pub const DEFAULT_BACKLOG: u32 = 4096;
/// PING period on tunnel connections, and how long one may go unanswered.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(10);
/// One thread: on the 2-core benchmark it halves the CPU per request of a work-stealing
/// pool (no cross-thread wakeups between a stream and its connection) and raises
/// throughput; see README, Performance.
pub const DEFAULT_WORKER_THREADS: usize = 1;
pub const MAX_WORKER_THREADS: usize = 256;
/// One data-plane runtime: on the 2-core benchmark, where the load generators compete for
/// the same cores, a second one did not pay for itself; see README, Performance.
pub const DEFAULT_THREADS: usize = 1;
pub const MAX_THREADS: usize = 64;
/// Validity of a certificate the daemon issues itself (`issuer` without `ttl`).
pub const DEFAULT_ISSUED_TTL: Duration = Duration::from_secs(3600);

#[derive(Clone, Debug)]
pub struct Config {
    /// The file this came from (for messages about values found at startup).
    pub file: PathBuf,
    pub trust_domain: TrustDomain,
    pub trust_bundle: Located<PathBuf>,
    /// Certificate revocation lists, checked on both sides and watched for changes.
    pub crl: Vec<Located<PathBuf>>,
    pub mode: Mode,
    pub node: Node,
    pub listen: Listen,
    pub capture: Capture,
    pub outbound: Outbound,
    pub inbound: Inbound,
    pub runtime: Runtime,
    pub limits: Limits,
    pub crypto: Crypto,
    pub logging: Logging,
    pub workloads: Vec<Workload>,
    pub policies: Vec<Policy>,
    /// Files of more `[[policy]]` rules (already read into `policies`), watched for reload.
    pub policy_files: Vec<PathBuf>,
    pub peers: Vec<Peer>,
    /// `[pods]`: pods in network namespaces of their own, registered while the daemon runs.
    pub pods: Option<Pods>,
    pub kubernetes: Kubernetes,
}

/// Pods registered through the registration API (by `tunnel-cni` or `tunnel pod add`): each
/// gets listeners inside its network namespace and a certificate of its own.
#[derive(Clone, Debug)]
pub struct Pods {
    /// The registration API's Unix socket (root only).
    pub socket: PathBuf,
    /// Where each registration is recorded, so a restarted daemon takes its pods back.
    pub state_dir: PathBuf,
    pub spiffe_id: IdTemplate,
    pub certificates: PodCertificates,
}

/// Where each pod's certificate comes from.
#[derive(Clone, Debug)]
pub enum PodCertificates {
    /// Issued in memory from this intermediate CA directory, and renewed (`[pods] issuer`).
    Issuer {
        dir: Located<PathBuf>,
        ttl: Duration,
    },
    /// Files an outside issuer writes, one directory per identity:
    /// `<dir>/<identity path>/cert.pem` and `key.pem` (`[pods] cert_dir`).
    Files { dir: Located<PathBuf> },
}

impl PodCertificates {
    /// Where the certificate of `id` comes from.
    pub fn source(&self, id: &SpiffeId) -> CertSource {
        match self {
            Self::Issuer { dir, ttl } => CertSource::Issuer {
                dir: dir.clone(),
                ttl: *ttl,
            },
            Self::Files { dir } => {
                let identity_dir = dir.value.join(id.path().trim_start_matches('/'));
                let file = |name: &str| Located {
                    value: identity_dir.join(name),
                    site: dir.site.clone(),
                };
                CertSource::Files {
                    cert: file("cert.pem"),
                    key: file("key.pem"),
                }
            }
        }
    }

    /// The directory to watch for changes (recursively for `Files`).
    pub fn dir(&self) -> &Path {
        match self {
            Self::Issuer { dir, .. } | Self::Files { dir } => &dir.value,
        }
    }
}

pub const DEFAULT_POD_STATE_DIR: &str = "/var/lib/tunnel/pods";

/// `[kubernetes]`: how the daemon reads a pod's service account. Every key defaults to what
/// a pod of the cluster has (in-cluster config).
#[derive(Clone, Debug, Default)]
pub struct Kubernetes {
    /// `https://host:port`; default from `KUBERNETES_SERVICE_HOST`/`_PORT` at run time.
    pub api_server: Option<ApiServer>,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    /// This node: a pod the API places on another node is refused.
    pub node_name: Option<String>,
    /// The Service (ClusterIP) ranges, IPv4 and IPv6: captured (they are in
    /// `capture.destinations` too), and resolved to a Service's endpoints by the daemon.
    pub service_cidrs: Vec<IpNet>,
}

/// The daemon's own identity, presented by the inbound side.
#[derive(Clone, Debug)]
pub struct Node {
    pub spiffe_id: SpiffeId,
    pub credential: CertSource,
}

/// Where a certificate and its key come from.
#[derive(Clone, Debug)]
pub enum CertSource {
    /// Files an operator or an outside tool (cert-manager, Vault agent, spiffe-helper)
    /// writes; read again whenever they change.
    Files {
        /// The leaf, then its chain up to (not including) a root.
        cert: Located<PathBuf>,
        key: Located<PathBuf>,
    },
    /// The daemon issues its own certificate from an intermediate CA (the directory holds
    /// `intermediate.pem` and `intermediate.key`, as `tunnel ca init` writes them), with a
    /// key made in memory, and renews it at half its lifetime.
    Issuer {
        dir: Located<PathBuf>,
        ttl: Duration,
    },
}

impl CertSource {
    /// Where problems with this certificate are reported in the config file.
    pub fn site(&self) -> &Site {
        match self {
            Self::Files { cert, .. } => &cert.site,
            Self::Issuer { dir, .. } => &dir.site,
        }
    }

    /// The certificate's origin, for messages: its file, or the issuer directory.
    pub fn origin(&self) -> String {
        match self {
            Self::Files { cert, .. } => cert.value.display().to_string(),
            Self::Issuer { dir, .. } => format!("issued from {}", dir.value.display()),
        }
    }

    /// Every file it is read from (watched for changes).
    pub fn files(&self) -> Vec<PathBuf> {
        match self {
            Self::Files { cert, key } => vec![cert.value.clone(), key.value.clone()],
            Self::Issuer { dir, .. } => {
                let files = crate::ca::CaFiles::new(&dir.value);
                vec![files.intermediate_cert, files.intermediate_key]
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct Listen {
    /// Where captured IPv4 connections are sent.
    pub outbound: SocketAddrV4,
    /// Where captured IPv6 connections are sent; set when an IPv6 destination is captured.
    pub outbound_v6: Option<SocketAddrV6>,
    /// HBONE from peer daemons.
    pub inbound: SocketAddr,
    /// A second HBONE listener for IPv6 peers: `[::]:<port>` by default when `inbound` is
    /// the IPv4 wildcard, so dual-stack hosts take both families.
    pub inbound_v6: Option<SocketAddrV6>,
    /// Plaintext from other hosts to workload ports, steered here by `steer_inbound`.
    pub inbound_plaintext: SocketAddr,
    /// Its IPv6 twin: `[::]:<port>` by default when `inbound_plaintext` is the IPv4 wildcard.
    pub inbound_plaintext_v6: Option<SocketAddrV6>,
    /// The admin API (`/healthz/ready`, `/metrics`, `/config_dump`...): loopback unless
    /// `admin_allow_remote`.
    pub admin: SocketAddr,
    pub admin_allow_remote: bool,
    /// `/healthz/ready` alone, for probes, on a listener of its own.
    pub health: SocketAddr,
    /// The control socket (root only): the admin API, and the only place it changes
    /// anything.
    pub control: PathBuf,
    /// Accept queue length of every listener.
    pub backlog: u32,
}

impl Listen {
    /// Every port the daemon binds (or reserves: admin, health): never a workload's port,
    /// and never a destination the inbound side delivers to.
    pub fn own_ports(&self) -> BTreeSet<u16> {
        let mut ports = BTreeSet::from([
            self.outbound.port(),
            self.inbound.port(),
            self.admin.port(),
            self.health.port(),
        ]);
        ports.extend(self.outbound_v6.map(|a| a.port()));
        ports.extend(self.inbound_v6.map(|a| a.port()));
        ports.insert(self.inbound_plaintext.port());
        ports.extend(self.inbound_plaintext_v6.map(|a| a.port()));
        ports
    }
}

#[derive(Clone, Debug)]
pub struct Capture {
    pub cgroup: Located<PathBuf>,
    pub destinations: Vec<IpNet>,
    /// `None` captures every port.
    pub ports: Option<BTreeSet<u16>>,
    pub exclude: Vec<IpNet>,
    pub bpf_dir: Located<PathBuf>,
    /// The hop between captured applications and the daemon through a sockmap
    /// (`redirect_local`) instead of loopback TCP, where the kernel supports it.
    pub sockmap: bool,
}

/// How captured connections travel to peers.
#[derive(Clone, Debug)]
pub struct Outbound {
    /// What a peer daemon must present when no `[[peer]]` entry pins its identity: a node
    /// identity, `spiffe://<trust_domain>/node/*` unless configured.
    pub peer_identity: IdPattern,
    pub peer_port: u16,
    pub connect_timeout: Duration,
    /// A pooled connection with no stream for this long is closed.
    pub idle_timeout: Duration,
    pub max_streams_per_connection: u32,
    /// PING period on pooled connections, and how long one may go unanswered.
    pub keepalive: Duration,
}

/// Caps on what peers can make the inbound side hold (see ARCHITECTURE.md for the memory
/// bound they give).
#[derive(Clone, Copy, Debug)]
pub struct Inbound {
    /// Connections that have not finished the TLS and HTTP/2 handshakes, from everyone.
    pub max_unauthenticated: usize,
    /// The same, from one source address: one flooding host cannot take every slot.
    pub max_unauthenticated_per_address: usize,
    /// TLS handshakes under way at once; the rest wait (within the handshake timeout).
    /// They are computed on a thread of their own (`proxy::inbound::handshake_thread`).
    /// Default: half the runtime's threads, at least one
    /// ([`Inbound::default_max_handshakes`]).
    pub max_handshakes: usize,
    /// Authenticated connections per (caller identity, source address). A peer daemon's
    /// pool needs one per 100 concurrent streams of a workload.
    pub max_connections_per_peer: usize,
    /// Streams a peer may have open on one connection (h2 SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_streams_per_connection: u32,
    /// TCP accept to a served HTTP/2 connection, and from there to the first stream.
    pub handshake_timeout: Duration,
    /// A connection with no stream for this long is closed (GOAWAY).
    pub idle_timeout: Duration,
    /// PING period, and how long a PING may go unanswered.
    pub keepalive: Duration,
}

impl Inbound {
    /// Half the runtime's threads, at least one. Chosen when handshakes ran on the runtime's
    /// threads (measured then on one thread, under a flood of full handshakes from 20
    /// processes: new calls over an established tunnel p50 8.3 ms with 1 at once against
    /// 33–72 ms with 4, 2–3 ms quiet). They now run on a thread of their own, which
    /// computes one at a time whatever this is; it caps handshakes waiting on their peers.
    pub fn default_max_handshakes(worker_threads: usize) -> usize {
        (worker_threads / 2).max(1)
    }

    pub const DEFAULT: Self = Self {
        max_unauthenticated: 1024,
        max_unauthenticated_per_address: 128,
        max_handshakes: 1,
        max_connections_per_peer: 32,
        max_streams_per_connection: DEFAULT_MAX_STREAMS,
        handshake_timeout: Duration::from_secs(10),
        // Longer than the pool's default idle timeout, so the caller's side closes first.
        idle_timeout: Duration::from_secs(600),
        keepalive: DEFAULT_KEEPALIVE,
    };
}

/// The default budget: the receive windows of 4 fully used connections (and smaller ones
/// for the rest) and, beside them, 192 MiB of reads in flight (384 streams each with a
/// full read and h2's send buffer waiting), at most 32 MiB of it drained by one identity. A node that moves more at once is throttled, not failed; one that must hold
/// more raises it.
pub const DEFAULT_MAX_BUFFERED: u64 = 256 * 1024 * 1024;

/// `[limits]`: what the daemon as a whole may hold.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Every byte buffered for others, both ways, on every connection
    /// (`proxy::budget`).
    pub max_buffered_bytes: u64,
}

impl Limits {
    pub const DEFAULT: Self = Self {
        max_buffered_bytes: DEFAULT_MAX_BUFFERED,
    };
}

/// `[logging]`: what a change of the log filter at run time may do.
#[derive(Clone, Copy, Debug, Default)]
pub struct Logging {
    /// Lets the control socket set `tunnel::access` (the access log) and `tunnel::auth`
    /// (the auth-failure stream) below the level they had at start. Off: the audit trail
    /// keeps its level whoever asks.
    pub allow_lowering_access_and_auth: bool,
}

/// How the daemon runs its work.
#[derive(Clone, Debug)]
pub struct Runtime {
    /// 1: everything on one thread (tokio's current-thread runtime); more: a work-stealing
    /// pool of that many threads.
    pub worker_threads: usize,
    /// Data-plane runtimes: each a thread with a current-thread runtime of its own, its own
    /// outbound and inbound listeners (one `SO_REUSEPORT` group per address, so the kernel
    /// spreads connections over them) and its own pool, so a connection never crosses
    /// threads. The first is the daemon's main runtime.
    pub threads: usize,
}

#[derive(Clone, Debug)]
pub struct Workload {
    pub name: String,
    pub spiffe_id: SpiffeId,
    pub credential: CertSource,
    /// Outbound: callers in this cgroup (or below) are this workload.
    pub cgroup: Option<Located<PathBuf>>,
    /// Inbound: connections to these local ports are for this workload.
    pub ports: BTreeSet<u16>,
    /// This workload's mode (the global `mode` unless it sets its own).
    pub mode: Mode,
    /// Ports whose mode differs from the workload's.
    pub port_modes: BTreeMap<u16, Mode>,
    /// Ports whose deliveries start with a PROXY protocol v2 header (source, destination,
    /// and the caller's SPIFFE ID when tunnelled).
    pub proxy_protocol: BTreeSet<u16>,
    /// HTTP/1.1 ports whose requests get `X-Forwarded-Client-Cert` (the caller's identity),
    /// replacing any the caller sent.
    pub xfcc: BTreeSet<u16>,
}

#[derive(Clone, Debug)]
pub struct Policy {
    pub action: Action,
    /// Name of a workload in `workloads`; `None`: every workload.
    pub to: Option<String>,
    /// Callers it is about (`None`: any), and callers it is not about.
    pub from: Option<Vec<PrincipalPattern>>,
    pub not_from: Vec<PrincipalPattern>,
    /// Source addresses (the caller's daemon for tunnelled connections) it is about.
    pub from_ips: Option<Vec<IpNet>>,
    pub not_from_ips: Vec<IpNet>,
    /// Destination ports it is about.
    pub ports: Option<BTreeSet<u16>>,
    pub not_ports: BTreeSet<u16>,
    /// Evaluated and logged, never enforced.
    pub dry_run: bool,
    pub site: Site,
    /// The `policy_files` entry it was read from (`None`: the config file itself).
    pub file: Option<PathBuf>,
}

/// Who a policy rule is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrincipalPattern {
    Exact(SpiffeId),
    /// `spiffe://example.org/ns/prod/*`: every ID starting with the text before `*`.
    Prefix(String),
}

impl PrincipalPattern {
    pub fn matches(&self, id: &SpiffeId) -> bool {
        match self {
            Self::Exact(exact) => exact == id,
            Self::Prefix(prefix) => id.to_string().starts_with(prefix.as_str()),
        }
    }
}

impl std::fmt::Display for PrincipalPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exact(id) => write!(f, "{id}"),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

/// The identity expected of the daemon serving some destinations.
#[derive(Clone, Debug)]
pub struct Peer {
    pub destinations: Vec<IpNet>,
    pub spiffe_id: SpiffeId,
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = fs::read_to_string(path).map_err(|e| {
            ConfigError::whole_file(path, format!("cannot read the config file: {e}"))
        })?;
        Self::parse(&text, path)
    }

    /// Checks config text; `file` names it in messages and anchors relative paths.
    pub fn parse(text: &str, file: &Path) -> Result<Self, ConfigError> {
        Self::parse_with(
            text,
            file,
            |name| std::env::var(name).ok(),
            |path| fs::read_to_string(path),
        )
    }

    /// [`Config::parse`] with the environment `${NAME}` is expanded from and the reading of
    /// `policy_files` given: for the fuzz targets, which must not depend on the process's
    /// environment or read whatever file a generated input names.
    pub fn parse_with(
        text: &str,
        file: &Path,
        env: impl Fn(&str) -> Option<String>,
        read: impl Fn(&Path) -> std::io::Result<String>,
    ) -> Result<Self, ConfigError> {
        let text = env::expand(text, env).map_err(|problems| ConfigError::new(file, problems))?;
        build::build(&text, file, &read)
    }

    pub fn workload(&self, name: &str) -> Option<&Workload> {
        self.workloads.iter().find(|w| w.name == name)
    }
}

#[cfg(test)]
mod tests;
