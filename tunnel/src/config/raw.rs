//! The file as written: serde structs that mirror the TOML, strings left unparsed so that
//! `build` can report exactly which key holds a bad value. Unknown keys are refused.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub trust_domain: String,
    pub trust_bundle: String,
    /// Certificate revocation lists (PEM or DER), checked on both sides.
    #[serde(default)]
    pub crl: Vec<String>,
    #[serde(default)]
    pub mode: Mode,
    pub node: RawNode,
    #[serde(default)]
    pub listen: RawListen,
    pub capture: RawCapture,
    #[serde(default)]
    pub outbound: RawOutbound,
    #[serde(default)]
    pub inbound: RawInbound,
    #[serde(default)]
    pub runtime: RawRuntime,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub crypto: Crypto,
    #[serde(default)]
    pub logging: RawLogging,
    #[serde(default, rename = "workload")]
    pub workloads: Vec<RawWorkload>,
    #[serde(default, rename = "policy")]
    pub policies: Vec<RawPolicy>,
    /// More `[[policy]]` rules, each file holding only those.
    #[serde(default)]
    pub policy_files: Vec<String>,
    #[serde(default, rename = "peer")]
    pub peers: Vec<RawPeer>,
    /// Pods in network namespaces of their own, registered at run time (Kubernetes).
    pub pods: Option<RawPods>,
    pub kubernetes: Option<RawKubernetes>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPods {
    pub socket: Option<String>,
    pub state_dir: Option<String>,
    /// A template: `{trust_domain}`, `{namespace}`, `{name}`, `{service_account}`.
    pub spiffe_id: Option<String>,
    pub issuer: Option<String>,
    pub ttl: Option<String>,
    /// Instead of `issuer`: `<cert_dir>/<identity path>/cert.pem` + `key.pem`.
    pub cert_dir: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKubernetes {
    pub api_server: Option<String>,
    pub token_file: Option<String>,
    pub ca_file: Option<String>,
    pub node_name: Option<String>,
    /// The cluster's Service (ClusterIP) ranges, captured like `[capture] destinations`.
    #[serde(default)]
    pub service_cidrs: Vec<String>,
}

/// How a workload treats plaintext from other hosts, and callers when it has no `allow`
/// rule: the migration path is permissive → audit (read what strict would refuse) → strict.
/// Tunnelled (HBONE) traffic is authenticated in every mode.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Plaintext from other hosts is refused; a workload admits only callers an `allow`
    /// rule names.
    #[default]
    Strict,
    /// Plaintext from other hosts passes to the workload, logged with the caller's address;
    /// a workload without any `allow` rule admits every authenticated caller of the trust
    /// domain.
    Permissive,
    /// As permissive, and each thing strict would refuse is logged as such.
    Audit,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Strict => "strict",
            Self::Permissive => "permissive",
            Self::Audit => "audit",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub spiffe_id: String,
    pub cert: Option<String>,
    pub key: Option<String>,
    /// A CA directory (intermediate.pem + intermediate.key) to issue our own certificate from.
    pub issuer: Option<String>,
    pub ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    pub outbound: Option<String>,
    pub outbound_v6: Option<String>,
    pub inbound: Option<String>,
    pub inbound_v6: Option<String>,
    pub inbound_plaintext: Option<String>,
    pub inbound_plaintext_v6: Option<String>,
    pub admin: Option<String>,
    /// Allows `admin` on an address other hosts can reach (the API changes the log filter
    /// and shows the config: loopback unless this is set).
    #[serde(default)]
    pub admin_allow_remote: bool,
    /// `/healthz/ready` alone, for probes.
    pub health: Option<String>,
    /// The control socket's path (root only).
    pub control: Option<String>,
    pub backlog: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogging {
    /// Lets a filter change lower `tunnel::access` and `tunnel::auth` below their level at
    /// start.
    #[serde(default)]
    pub allow_lowering_access_and_auth: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCapture {
    pub cgroup: String,
    pub destinations: Vec<String>,
    pub ports: Option<Vec<u16>>,
    #[serde(default)]
    pub exclude: Vec<String>,
    pub bpf_dir: Option<String>,
    /// Bytes between captured applications and the daemon through a sockmap, not loopback
    /// TCP.
    #[serde(default)]
    pub sockmap: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutbound {
    pub peer_identity: Option<String>,
    pub peer_port: Option<u16>,
    pub connect_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_streams_per_connection: Option<u32>,
    pub keepalive: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInbound {
    pub max_unauthenticated: Option<usize>,
    pub max_unauthenticated_per_address: Option<usize>,
    pub max_handshakes: Option<usize>,
    pub max_connections_per_peer: Option<usize>,
    pub max_streams_per_connection: Option<u32>,
    pub handshake_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub keepalive: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    pub worker_threads: Option<usize>,
    pub threads: Option<usize>,
}

/// `[crypto]`: which library does what.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Crypto {
    #[serde(default)]
    pub aead: Aead,
}

/// Whose AES-GCM seals the tunnel's records.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Aead {
    /// The faster on this host, measured at start.
    #[default]
    Auto,
    AwsLc,
    Ring,
}

/// `[limits]`: what the daemon as a whole may hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_buffered_bytes: Option<RawSize>,
}

/// A size: a count of bytes, or text with a unit (`"256MiB"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorkload {
    pub name: String,
    pub spiffe_id: String,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub issuer: Option<String>,
    pub ttl: Option<String>,
    pub cgroup: Option<String>,
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Overrides the global `mode` for this workload.
    pub mode: Option<Mode>,
    /// Overrides the workload's mode for single ports: `{ "8081" = "audit" }`.
    #[serde(default)]
    pub port_modes: std::collections::BTreeMap<String, Mode>,
    /// Ports (of `ports`) whose deliveries start with a PROXY protocol v2 header.
    #[serde(default)]
    pub proxy_protocol: Vec<u16>,
    /// HTTP/1.1 ports (of `ports`) whose requests get `X-Forwarded-Client-Cert`.
    #[serde(default)]
    pub xfcc: Vec<u16>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
    /// Changes nothing; a matching connection is logged with the rule.
    Audit,
}

/// A file named in `policy_files`: `[[policy]]` tables and nothing else.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicyFile {
    #[serde(default, rename = "policy")]
    pub policies: Vec<RawPolicy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub action: Action,
    /// A workload name; absent: every workload.
    pub to: Option<String>,
    pub from: Option<Vec<String>>,
    #[serde(default)]
    pub not_from: Vec<String>,
    pub from_ips: Option<Vec<String>>,
    #[serde(default)]
    pub not_from_ips: Vec<String>,
    pub ports: Option<Vec<u16>>,
    #[serde(default)]
    pub not_ports: Vec<u16>,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPeer {
    pub destinations: Vec<String>,
    pub spiffe_id: String,
}
