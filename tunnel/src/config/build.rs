//! Raw → typed. Every rule lives here; problems are collected (not just the first) so one
//! run of `tunnel run`/`check` shows everything wrong with a file.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6},
    path::{Path, PathBuf},
    str::FromStr,
};

use ipnet::IpNet;
use serde_path_to_error::Segment;

use super::{
    Capture, Config, ConfigError, DEFAULT_ADMIN, DEFAULT_BACKLOG, DEFAULT_BPF_DIR,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_INBOUND, DEFAULT_INBOUND_PLAINTEXT,
    DEFAULT_KEEPALIVE, DEFAULT_MAX_STREAMS, DEFAULT_OUTBOUND, DEFAULT_PEER_PORT,
    DEFAULT_WORKER_THREADS, Listen, Located, MAX_WORKER_THREADS, Mode, Node, Outbound, Peer,
    Policy, PrincipalPattern, Problem, Runtime, Site, Workload,
    error::{Locator, Step, render},
    raw::{
        RawCapture, RawConfig, RawListen, RawOutbound, RawPeer, RawPolicy, RawPolicyFile,
        RawRuntime, RawWorkload,
    },
};
use crate::identity::{SpiffeId, TrustDomain};

mod credentials;
mod limits;
mod pods;
mod values;

/// The certificate keys of a raw `[node]` or `[[workload]]` table.
macro_rules! cert_keys {
    ($raw:expr) => {
        RawCertKeys {
            cert: $raw.cert.as_deref(),
            key: $raw.key.as_deref(),
            issuer: $raw.issuer.as_deref(),
            ttl: $raw.ttl.as_deref(),
        }
    };
}

use credentials::RawCertKeys;

pub fn build(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let locator = Locator::new(text);
    let raw: RawConfig = deserialize(text, file, &locator)?;
    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let policy_files = raw.policy_files.clone();
    let mut checker = Checker {
        locator,
        base: base.clone(),
        problems: Vec::new(),
    };
    let config = checker.config(raw, file);
    let mut config = match config {
        Some(config) if checker.problems.is_empty() => config,
        _ => {
            return Err(ConfigError {
                file: file.into(),
                problems: checker.problems,
            });
        }
    };
    for (i, name) in policy_files.iter().enumerate() {
        let path = base.join(name);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            let key = render(&at("policy_files").index(i).0);
            ConfigError {
                file: file.into(),
                problems: vec![Problem {
                    line: checker.locator.line_of(&at("policy_files").index(i).0),
                    key: Some(key),
                    message: format!("cannot read {}: {e}", path.display()),
                }],
            }
        })?;
        config.policies.extend(policy_file(&text, &path, &config)?);
        config.policy_files.push(path);
    }
    Ok(config)
}

/// The rules of one `policy_files` entry, checked against the config's workloads; problems
/// name that file, its lines and keys.
fn policy_file(text: &str, file: &Path, config: &Config) -> Result<Vec<Policy>, ConfigError> {
    let locator = Locator::new(text);
    let raw: RawPolicyFile = deserialize(text, file, &locator)?;
    let mut checker = Checker {
        locator,
        base: file.parent().map(Path::to_path_buf).unwrap_or_default(),
        problems: Vec::new(),
    };
    let mut policies = checker.policies(
        &raw.policies,
        Some(&config.trust_domain),
        &config.workloads,
        config.pods.is_some(),
    );
    if !checker.problems.is_empty() {
        return Err(ConfigError {
            file: file.into(),
            problems: checker.problems,
        });
    }
    for policy in &mut policies {
        policy.file = Some(file.into());
    }
    Ok(policies)
}

/// Structure and types, via serde: unknown keys, missing keys, a string where a number goes.
fn deserialize<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &Path,
    locator: &Locator<'_>,
) -> Result<T, ConfigError> {
    let deserializer =
        toml::Deserializer::parse(text).map_err(|e| toml_error(file, locator, None, &e))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path: Vec<Step> = e
            .path()
            .iter()
            .filter_map(|segment| match segment {
                Segment::Map { key } => Some(Step::Key(key.clone())),
                Segment::Seq { index } => Some(Step::Index(*index)),
                Segment::Enum { .. } | Segment::Unknown => None,
            })
            .collect();
        toml_error(file, locator, Some(&path), e.inner())
    })
}

fn toml_error(
    file: &Path,
    locator: &Locator<'_>,
    path: Option<&[Step]>,
    e: &toml::de::Error,
) -> ConfigError {
    let line = match (e.span(), path) {
        (Some(span), _) => Some(locator.line_at(span.start)),
        (None, Some(path)) => locator.line_of(path),
        (None, None) => None,
    };
    let mut key = path.filter(|p| !p.is_empty()).map(render);
    let mut message = e.message().trim().to_string();
    // toml says only "duplicate key", pointing at the second one: name it.
    if let (Some(span), "duplicate key") = (e.span(), message.as_str()) {
        key = Some(duplicate_key_path(locator.text(), span.start));
        message = format!("`{}` is set twice", &locator.text()[span]);
    }
    ConfigError {
        file: file.into(),
        problems: vec![Problem { line, key, message }],
    }
}

/// The path of a key written a second time at `offset`, as a reader finds it: the table
/// header above it (an array of tables with its index) and the key as written there,
/// `workload[1].name`. A table header written twice is its own path.
fn duplicate_key_path(text: &str, offset: usize) -> String {
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or_default().trim();
    if let Some((name, _)) = table_header(line) {
        return name.to_string();
    }
    let key = line.split('=').next().unwrap_or_default().trim();
    let mut table = None;
    let mut arrays: BTreeMap<&str, usize> = BTreeMap::new();
    for header in text[..line_start]
        .lines()
        .filter_map(|l| table_header(l.trim()))
    {
        table = Some(match header {
            (name, true) => {
                let count = arrays.entry(name).or_default();
                *count += 1;
                format!("{name}[{}]", *count - 1)
            }
            (name, false) => name.to_string(),
        });
    }
    match table {
        Some(table) => format!("{table}.{key}"),
        None => key.to_string(),
    }
}

/// `[name]` → (name, false), `[[name]]` → (name, true); comments after it are ignored.
fn table_header(line: &str) -> Option<(&str, bool)> {
    if let Some(rest) = line.strip_prefix("[[") {
        return Some((rest.split("]]").next()?.trim(), true));
    }
    let rest = line.strip_prefix('[')?;
    Some((rest.split(']').next()?.trim(), false))
}

/// A key path under construction: `at("workload").index(1).key("cert")`.
#[derive(Clone, Debug)]
struct KeyPath(Vec<Step>);

fn at(key: &str) -> KeyPath {
    KeyPath(vec![Step::Key(key.into())])
}

impl KeyPath {
    fn key(&self, key: &str) -> KeyPath {
        let mut steps = self.0.clone();
        steps.push(Step::Key(key.into()));
        KeyPath(steps)
    }

    fn index(&self, index: usize) -> KeyPath {
        let mut steps = self.0.clone();
        steps.push(Step::Index(index));
        KeyPath(steps)
    }
}

struct Checker<'a> {
    locator: Locator<'a>,
    base: PathBuf,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn problem(&mut self, path: &KeyPath, message: impl Into<String>) {
        let line = self.locator.line_of(&path.0);
        self.problems.push(Problem {
            line,
            key: Some(render(&path.0)),
            message: message.into(),
        });
    }

    fn site(&self, path: &KeyPath) -> Site {
        Site {
            key: render(&path.0),
            line: self.locator.line_of(&path.0),
        }
    }

    fn config(&mut self, raw: RawConfig, file: &Path) -> Option<Config> {
        let trust_domain = match TrustDomain::from_str(&raw.trust_domain) {
            Ok(td) => Some(td),
            Err(e) => {
                self.problem(&at("trust_domain"), e.to_string());
                None
            }
        };
        let trust_bundle = self.file_path(&at("trust_bundle"), &raw.trust_bundle);
        let crl = self.crl_files(&raw.crl);
        let td = trust_domain.as_ref();
        let node = self.node(&raw.node, td);
        let capture = self.capture(&raw.capture);
        let listen = self.listen(&raw.listen, capture.as_ref());
        let outbound = self.outbound(&raw.outbound, td);
        let inbound = self.inbound(&raw.inbound);
        let runtime = self.runtime(&raw.runtime);
        let workloads = self.workloads(
            &raw.workloads,
            td,
            capture.as_ref(),
            listen.as_ref(),
            raw.mode,
        );
        let pods = raw.pods.as_ref().map(|p| self.pods(p, td));
        let kubernetes = self.kubernetes(raw.kubernetes.as_ref().unwrap_or(&Default::default()));
        let policies = self.policies(&raw.policies, td, &workloads, pods.is_some());
        let peers = self.peers(&raw.peers, td);
        if let Some(outbound) = &outbound {
            self.peer_identity_excludes_workloads(outbound, &workloads);
        }
        Some(Config {
            file: file.into(),
            trust_domain: trust_domain?,
            trust_bundle: trust_bundle?,
            crl: crl?,
            mode: raw.mode,
            node: node?,
            listen: listen?,
            capture: capture?,
            outbound: outbound?,
            inbound: inbound?,
            runtime: runtime?,
            workloads,
            policies,
            policy_files: Vec::new(),
            peers,
            pods: pods.map(|p| p.ok_or(())).transpose().ok()?,
            kubernetes: kubernetes?,
        })
    }

    fn node(&mut self, raw: &super::raw::RawNode, td: Option<&TrustDomain>) -> Option<Node> {
        let path = at("node");
        let spiffe_id = self.spiffe_id(&path.key("spiffe_id"), &raw.spiffe_id, td);
        let credential = self.cert_source(&path, cert_keys!(raw));
        Some(Node {
            spiffe_id: spiffe_id?,
            credential: credential?,
        })
    }

    fn listen(&mut self, raw: &RawListen, capture: Option<&Capture>) -> Option<Listen> {
        let path = at("listen");
        let outbound = self.socket_addr(
            &path.key("outbound"),
            raw.outbound.as_deref().unwrap_or(DEFAULT_OUTBOUND),
        );
        let inbound = self.socket_addr(
            &path.key("inbound"),
            raw.inbound.as_deref().unwrap_or(DEFAULT_INBOUND),
        );
        let admin = self.socket_addr(
            &path.key("admin"),
            raw.admin.as_deref().unwrap_or(DEFAULT_ADMIN),
        );
        let outbound = match outbound? {
            SocketAddr::V4(v4) if !v4.ip().is_unspecified() => v4,
            other => {
                self.problem(
                    &path.key("outbound"),
                    format!("{other} must be a concrete IPv4 address (captured connects are rewritten to it), e.g. {DEFAULT_OUTBOUND}"),
                );
                return None;
            }
        };
        let wants_v6 =
            capture.is_some_and(|c| c.destinations.iter().any(|d| matches!(d, IpNet::V6(_))));
        let outbound_v6 = match &raw.outbound_v6 {
            Some(text) => match self.socket_addr(&path.key("outbound_v6"), text)? {
                SocketAddr::V6(v6) if !v6.ip().is_unspecified() => Some(v6),
                other => {
                    self.problem(
                        &path.key("outbound_v6"),
                        format!("{other} must be a concrete IPv6 address, e.g. [::1]:15001"),
                    );
                    return None;
                }
            },
            None if wants_v6 => Some(SocketAddrV6::new(
                Ipv6Addr::LOCALHOST,
                outbound.port(),
                0,
                0,
            )),
            None => None,
        };
        let inbound = inbound?;
        let inbound_v6 =
            match &raw.inbound_v6 {
                Some(text) => match self.socket_addr(&path.key("inbound_v6"), text)? {
                    SocketAddr::V6(v6) => Some(v6),
                    other => {
                        self.problem(
                            &path.key("inbound_v6"),
                            format!("{other} is not an IPv6 address"),
                        );
                        return None;
                    }
                },
                None if inbound.ip() == IpAddr::V4(Ipv4Addr::UNSPECIFIED) => Some(
                    SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, inbound.port(), 0, 0),
                ),
                None => None,
            };
        let inbound_plaintext = self.socket_addr(
            &path.key("inbound_plaintext"),
            raw.inbound_plaintext
                .as_deref()
                .unwrap_or(DEFAULT_INBOUND_PLAINTEXT),
        )?;
        let inbound_plaintext_v6 = match &raw.inbound_plaintext_v6 {
            Some(text) => match self.socket_addr(&path.key("inbound_plaintext_v6"), text)? {
                SocketAddr::V6(v6) => Some(v6),
                other => {
                    self.problem(
                        &path.key("inbound_plaintext_v6"),
                        format!("{other} is not an IPv6 address"),
                    );
                    return None;
                }
            },
            None if inbound_plaintext.ip() == IpAddr::V4(Ipv4Addr::UNSPECIFIED) => Some(
                SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, inbound_plaintext.port(), 0, 0),
            ),
            None => None,
        };
        let backlog = self.at_least_one(&path.key("backlog"), raw.backlog, DEFAULT_BACKLOG);
        let listen = Listen {
            outbound,
            outbound_v6,
            inbound,
            inbound_v6,
            inbound_plaintext,
            inbound_plaintext_v6,
            admin: admin?,
            admin_allow_remote: raw.admin_allow_remote,
            backlog: backlog?,
        };
        self.admin_exposed(&listen);
        self.listener_ports_clash(raw, &listen);
        Some(listen)
    }

    /// The admin API answers anyone who reaches it (no authentication): it shows the config
    /// and the connections, and changes the log filter. Loopback only, unless the file says
    /// otherwise in so many words.
    fn admin_exposed(&mut self, listen: &Listen) {
        if listen.admin.ip().is_loopback() || listen.admin_allow_remote {
            return;
        }
        self.problem(
            &at("listen").key("admin"),
            format!(
                "{} is not a loopback address; the admin API has no authentication (it shows the \
                 config and the connections, and changes the log filter), so it listens on \
                 127.0.0.1 or [::1] unless listen.admin_allow_remote = true",
                listen.admin
            ),
        );
    }

    /// Outbound, inbound and admin each need a port of their own: two listeners on one port
    /// cannot both bind (and a port shared with the reserved admin port would make it
    /// ambiguous). The IPv4 and IPv6 listeners of one role share a port by design. Each
    /// clash is reported once, at a key the file sets.
    fn listener_ports_clash(&mut self, raw: &RawListen, listen: &Listen) {
        let written = |key: &str| match key {
            "outbound" => raw.outbound.is_some(),
            "outbound_v6" => raw.outbound_v6.is_some(),
            "inbound" => raw.inbound.is_some(),
            "inbound_v6" => raw.inbound_v6.is_some(),
            "inbound_plaintext" => raw.inbound_plaintext.is_some(),
            "inbound_plaintext_v6" => raw.inbound_plaintext_v6.is_some(),
            _ => raw.admin.is_some(),
        };
        let role = |key: &'static str| key.trim_end_matches("_v6");
        let ports: Vec<(&'static str, u16)> = [
            ("outbound", Some(listen.outbound.port())),
            ("outbound_v6", listen.outbound_v6.map(|a| a.port())),
            ("inbound", Some(listen.inbound.port())),
            ("inbound_v6", listen.inbound_v6.map(|a| a.port())),
            ("inbound_plaintext", Some(listen.inbound_plaintext.port())),
            (
                "inbound_plaintext_v6",
                listen.inbound_plaintext_v6.map(|a| a.port()),
            ),
            ("admin", Some(listen.admin.port())),
        ]
        .into_iter()
        .filter_map(|(key, port)| Some((key, port?)))
        .collect();
        let mut reported = BTreeSet::new();
        for (i, &(first, port)) in ports.iter().enumerate() {
            for &(second, _) in ports[i + 1..].iter().filter(|(_, p)| *p == port) {
                if role(first) == role(second) || !reported.insert((role(first), role(second))) {
                    continue;
                }
                let (key, other) = if written(second) || !written(first) {
                    (second, first)
                } else {
                    (first, second)
                };
                self.problem(
                    &at("listen").key(key),
                    format!(
                        "port {port} is also the port of listen.{other}; the outbound, inbound, \
                         inbound-plaintext and admin listeners each need a port of their own"
                    ),
                );
            }
        }
    }

    fn capture(&mut self, raw: &RawCapture) -> Option<Capture> {
        let path = at("capture");
        let cgroup = self.absolute_path(&path.key("cgroup"), &raw.cgroup);
        let destinations = self.cidrs(&path.key("destinations"), &raw.destinations);
        if raw.destinations.is_empty() {
            self.problem(
                &path.key("destinations"),
                "an empty list captures nothing; list the CIDRs whose hosts run a tunnel daemon",
            );
        }
        let exclude = self.cidrs(&path.key("exclude"), &raw.exclude);
        let ports = match &raw.ports {
            None => Some(None),
            Some(list) if list.is_empty() => {
                self.problem(
                    &path.key("ports"),
                    "an empty list captures nothing; remove the key to capture every port",
                );
                None
            }
            Some(list) => self.ports(&path.key("ports"), list).map(Some),
        };
        let bpf_dir = self.absolute_path(
            &path.key("bpf_dir"),
            raw.bpf_dir.as_deref().unwrap_or(DEFAULT_BPF_DIR),
        );
        Some(Capture {
            cgroup: cgroup?,
            destinations: destinations?,
            ports: ports?,
            exclude: exclude?,
            bpf_dir: bpf_dir?,
        })
    }

    fn outbound(&mut self, raw: &RawOutbound, td: Option<&TrustDomain>) -> Option<Outbound> {
        let path = at("outbound");
        let peer_identity =
            self.peer_identity(&path.key("peer_identity"), raw.peer_identity.as_deref(), td);
        let peer_port = raw.peer_port.unwrap_or(DEFAULT_PEER_PORT);
        if peer_port == 0 {
            self.problem(&path.key("peer_port"), "port 0 is not a port");
        }
        let connect_timeout = self.duration(
            &path.key("connect_timeout"),
            raw.connect_timeout.as_deref(),
            DEFAULT_CONNECT_TIMEOUT,
        );
        let idle_timeout = self.duration(
            &path.key("idle_timeout"),
            raw.idle_timeout.as_deref(),
            DEFAULT_IDLE_TIMEOUT,
        );
        let max_streams_per_connection = raw
            .max_streams_per_connection
            .unwrap_or(DEFAULT_MAX_STREAMS);
        if max_streams_per_connection == 0 {
            self.problem(
                &path.key("max_streams_per_connection"),
                "must be at least 1",
            );
        }
        let keepalive = self.duration(
            &path.key("keepalive"),
            raw.keepalive.as_deref(),
            DEFAULT_KEEPALIVE,
        );
        (peer_port != 0 && max_streams_per_connection != 0).then_some(())?;
        Some(Outbound {
            peer_identity: peer_identity?,
            peer_port,
            connect_timeout: connect_timeout?,
            idle_timeout: idle_timeout?,
            max_streams_per_connection,
            keepalive: keepalive?,
        })
    }

    fn runtime(&mut self, raw: &RawRuntime) -> Option<Runtime> {
        let worker_threads = raw.worker_threads.unwrap_or(DEFAULT_WORKER_THREADS);
        if !(1..=MAX_WORKER_THREADS).contains(&worker_threads) {
            let key = at("runtime").key("worker_threads");
            self.problem(&key, format!("must be from 1 to {MAX_WORKER_THREADS}"));
            return None;
        }
        Some(Runtime { worker_threads })
    }

    fn workloads(
        &mut self,
        raw: &[RawWorkload],
        td: Option<&TrustDomain>,
        capture: Option<&Capture>,
        listen: Option<&Listen>,
        global_mode: Mode,
    ) -> Vec<Workload> {
        let mut workloads = Vec::new();
        let mut names = BTreeSet::new();
        let mut port_owner: BTreeMap<u16, String> = BTreeMap::new();
        let mut cgroup_owner: BTreeMap<PathBuf, String> = BTreeMap::new();
        let mut id_owner: BTreeMap<SpiffeId, String> = BTreeMap::new();
        let daemon_ports = listen.map(Listen::own_ports).unwrap_or_default();
        for (i, raw) in raw.iter().enumerate() {
            let path = at("workload").index(i);
            let name_ok = self.workload_name(&path.key("name"), &raw.name, &mut names);
            let spiffe_id = self.spiffe_id(&path.key("spiffe_id"), &raw.spiffe_id, td);
            // Peers tell callers apart by identity alone (policy, logs): two workloads with
            // one identity would be one caller to every peer.
            if let Some(id) = &spiffe_id
                && let Some(owner) = id_owner.get(id)
            {
                self.problem(
                    &path.key("spiffe_id"),
                    format!(
                        "workload {:?} has the same spiffe_id as workload {owner:?} ({id}); \
                         peers tell callers apart by identity, so each workload needs its own",
                        raw.name
                    ),
                );
            } else if let Some(id) = &spiffe_id {
                id_owner.insert(id.clone(), raw.name.clone());
            }
            let credential = self.cert_source(&path, cert_keys!(raw));
            let cgroup = raw.cgroup.as_deref().map(|c| {
                self.workload_cgroup(
                    &path.key("cgroup"),
                    c,
                    &raw.name,
                    capture,
                    &mut cgroup_owner,
                )
            });
            let ports = self.ports(&path.key("ports"), &raw.ports);
            if let Some(ports) = &ports {
                for port in ports {
                    if daemon_ports.contains(port) {
                        self.problem(
                            &path.key("ports"),
                            format!("port {port} is one of the daemon's own listen ports"),
                        );
                    } else if let Some(owner) = port_owner.insert(*port, raw.name.clone()) {
                        self.problem(
                            &path.key("ports"),
                            format!("port {port} already belongs to workload {owner:?}"),
                        );
                    }
                }
            }
            if raw.cgroup.is_none() && raw.ports.is_empty() {
                self.problem(&path, format!("workload {:?} needs `cgroup` (to call out), `ports` (to be called), or both", raw.name));
            }
            let proxy_protocol = self.ports(&path.key("proxy_protocol"), &raw.proxy_protocol);
            let xfcc = self.ports(&path.key("xfcc"), &raw.xfcc);
            let mut outside = false;
            for (key, subset) in [("proxy_protocol", &proxy_protocol), ("xfcc", &xfcc)] {
                if let (Some(subset), Some(ports)) = (subset, &ports)
                    && let Some(port) = subset.difference(ports).next()
                {
                    self.problem(
                        &path.key(key),
                        format!("port {port} is not one of this workload's ports"),
                    );
                    outside = true;
                }
            }
            if outside {
                continue;
            }
            let Some(xfcc) = xfcc else { continue };
            let mut port_modes = std::collections::BTreeMap::new();
            for (text, mode) in &raw.port_modes {
                let key = path.key("port_modes").key(text);
                match text.parse::<u16>() {
                    Ok(port) if ports.as_ref().is_some_and(|p| p.contains(&port)) => {
                        port_modes.insert(port, *mode);
                    }
                    Ok(port) => {
                        self.problem(
                            &key,
                            format!("port {port} is not one of this workload's ports"),
                        );
                        outside = true;
                    }
                    Err(_) => {
                        self.problem(&key, format!("{text:?} is not a port number"));
                        outside = true;
                    }
                }
            }
            if outside {
                continue;
            }
            if let (true, Some(spiffe_id), Some(credential), Some(ports), Some(proxy_protocol)) =
                (name_ok, spiffe_id, credential, ports, proxy_protocol)
            {
                let cgroup = match cgroup {
                    Some(Some(c)) => Some(c),
                    Some(None) => continue,
                    None => None,
                };
                workloads.push(Workload {
                    name: raw.name.clone(),
                    spiffe_id,
                    credential,
                    cgroup,
                    ports,
                    mode: raw.mode.unwrap_or(global_mode),
                    proxy_protocol,
                    xfcc,
                    port_modes,
                });
            }
        }
        workloads
    }

    fn workload_name(&mut self, path: &KeyPath, name: &str, seen: &mut BTreeSet<String>) -> bool {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            self.problem(
                path,
                format!("{name:?} is not a valid name: use letters, digits, '-', '_' or '.'"),
            );
            return false;
        }
        if !seen.insert(name.to_string()) {
            self.problem(path, format!("workload {name:?} is defined twice"));
            return false;
        }
        true
    }

    fn workload_cgroup(
        &mut self,
        path: &KeyPath,
        text: &str,
        workload: &str,
        capture: Option<&Capture>,
        owners: &mut BTreeMap<PathBuf, String>,
    ) -> Option<Located<PathBuf>> {
        let cgroup = self.absolute_path(path, text)?;
        if let Some(capture) = capture
            && !cgroup.value.starts_with(&capture.cgroup.value)
        {
            self.problem(
                path,
                format!(
                    "{} is outside capture.cgroup {}, so this workload's calls would never be captured",
                    cgroup.value.display(),
                    capture.cgroup.value.display()
                ),
            );
            return None;
        }
        if let Some(owner) = owners.insert(cgroup.value.clone(), workload.to_string()) {
            self.problem(
                path,
                format!(
                    "{} is already the cgroup of workload {owner:?}",
                    cgroup.value.display()
                ),
            );
            return None;
        }
        Some(cgroup)
    }

    fn policies(
        &mut self,
        raw: &[RawPolicy],
        td: Option<&TrustDomain>,
        workloads: &[Workload],
        pods: bool,
    ) -> Vec<Policy> {
        let mut policies = Vec::new();
        for (i, raw) in raw.iter().enumerate() {
            let path = at("policy").index(i);
            let mut ok = true;
            if let Some(to) = &raw.to
                && !workloads.iter().any(|w| &w.name == to)
            {
                // A registered pod is named by its identity: every replica of a service
                // account is one destination.
                let pod_identity = pods && SpiffeId::from_str(to).is_ok();
                if !pod_identity {
                    let names: Vec<&str> = workloads.iter().map(|w| w.name.as_str()).collect();
                    let pods_hint = if pods {
                        " or a pod identity (spiffe://...)"
                    } else {
                        ""
                    };
                    self.problem(
                        &path.key("to"),
                        format!(
                            "no workload named {to:?} (workloads: {}){pods_hint}",
                            names.join(", ")
                        ),
                    );
                    ok = false;
                }
            }
            for (key, list) in [
                ("from", raw.from.as_ref().map(Vec::len)),
                ("from_ips", raw.from_ips.as_ref().map(Vec::len)),
                ("ports", raw.ports.as_ref().map(Vec::len)),
            ] {
                if list == Some(0) {
                    self.problem(
                        &path.key(key),
                        "an empty list matches nothing; remove the key to match any",
                    );
                    ok = false;
                }
            }
            let from = raw
                .from
                .as_ref()
                .map(|list| self.principal_patterns(&path.key("from"), list, td));
            let not_from = self.principal_patterns(&path.key("not_from"), &raw.not_from, td);
            let from_ips = raw
                .from_ips
                .as_ref()
                .map(|list| self.cidrs(&path.key("from_ips"), list));
            let not_from_ips = self.cidrs(&path.key("not_from_ips"), &raw.not_from_ips);
            let ports = raw
                .ports
                .as_ref()
                .map(|list| self.ports(&path.key("ports"), list));
            let not_ports = self.ports(&path.key("not_ports"), &raw.not_ports);
            let (Some(not_from), Some(not_from_ips), Some(not_ports)) =
                (not_from, not_from_ips, not_ports)
            else {
                continue;
            };
            let (Some(from), Some(from_ips), Some(ports)) = (
                from.map_or(Some(None), |f| f.map(Some)),
                from_ips.map_or(Some(None), |f| f.map(Some)),
                ports.map_or(Some(None), |p| p.map(Some)),
            ) else {
                continue;
            };
            if ok {
                policies.push(Policy {
                    action: raw.action,
                    to: raw.to.clone(),
                    from,
                    not_from,
                    from_ips,
                    not_from_ips,
                    ports,
                    not_ports,
                    dry_run: raw.dry_run,
                    site: self.site(&path),
                    file: None,
                });
            }
        }
        policies
    }

    /// Every pattern of a list, or `None` if one is wrong (each problem recorded).
    fn principal_patterns(
        &mut self,
        path: &KeyPath,
        texts: &[String],
        td: Option<&TrustDomain>,
    ) -> Option<Vec<PrincipalPattern>> {
        let patterns: Vec<Option<PrincipalPattern>> = texts
            .iter()
            .enumerate()
            .map(|(j, text)| self.principal_pattern(&path.index(j), text, td))
            .collect();
        patterns.into_iter().collect()
    }

    fn principal_pattern(
        &mut self,
        path: &KeyPath,
        text: &str,
        td: Option<&TrustDomain>,
    ) -> Option<PrincipalPattern> {
        if text == "*" {
            return Some(PrincipalPattern::Prefix(String::new()));
        }
        match text.find('*') {
            Some(star) if star + 1 != text.len() => {
                self.problem(
                    path,
                    format!("{text:?}: '*' is only allowed at the end (a prefix match)"),
                );
                None
            }
            Some(_) => {
                let prefix = &text[..text.len() - 1];
                let required = td.map(|td| format!("spiffe://{td}/"));
                if let Some(required) = required
                    && !prefix.starts_with(&required)
                {
                    self.problem(path, format!("{text:?}: a prefix must start with {required} (only trust domain {} is trusted)", td.map(ToString::to_string).unwrap_or_default()));
                    return None;
                }
                Some(PrincipalPattern::Prefix(prefix.to_string()))
            }
            None => self.spiffe_id(path, text, td).map(PrincipalPattern::Exact),
        }
    }

    fn peers(&mut self, raw: &[RawPeer], td: Option<&TrustDomain>) -> Vec<Peer> {
        let mut peers = Vec::new();
        for (i, raw) in raw.iter().enumerate() {
            let path = at("peer").index(i);
            if raw.destinations.is_empty() {
                self.problem(
                    &path.key("destinations"),
                    "an empty list applies to nothing",
                );
            }
            let destinations = self.cidrs(&path.key("destinations"), &raw.destinations);
            let spiffe_id = self.spiffe_id(&path.key("spiffe_id"), &raw.spiffe_id, td);
            if let (Some(destinations), Some(spiffe_id)) = (destinations, spiffe_id) {
                peers.push(Peer {
                    destinations,
                    spiffe_id,
                });
            }
        }
        peers
    }

    /// A pattern that admits one of our own workloads' identities would let that workload's
    /// certificate (held by an application, not a daemon) stand in for a peer daemon.
    fn peer_identity_excludes_workloads(&mut self, outbound: &Outbound, workloads: &[Workload]) {
        let pattern = &outbound.peer_identity;
        for workload in workloads.iter().filter(|w| pattern.matches(&w.spiffe_id)) {
            self.problem(
                &at("outbound").key("peer_identity"),
                format!(
                    "{pattern} matches {}, the identity of workload {:?}: peer daemons must \
                     present node identities, never a workload's",
                    workload.spiffe_id, workload.name
                ),
            );
        }
    }
}
