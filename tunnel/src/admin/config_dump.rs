//! `/config_dump`: the effective config and the certificates in force, as JSON.
//!
//! Built from explicit fields only, one view struct per part: nothing here serializes or
//! formats (`Debug`) a config, credential or key type whole, so no private key can reach
//! the answer however those types change. Certificates are described by what their DER
//! says (serial, validity, URIs, subject and issuer names), never by their bytes.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use rustls_pki_types::CertificateDer;
use serde::Serialize;
use x509_parser::{certificate::X509Certificate, prelude::FromDer};

use super::State;
use crate::{
    config::{CertSource, Config, PrincipalPattern},
    credentials::expiry::warning_point,
    identity::timestamp,
    tls::{Credential, read_certificates},
};

#[derive(Serialize)]
pub struct Dump {
    /// The config file (only `[[policy]]` and the modes are reloaded from it; the rest is as
    /// at start).
    pub file: PathBuf,
    pub trust_domain: String,
    pub mode: &'static str,
    pub node: Node,
    pub listen: Listen,
    pub capture: Capture,
    pub outbound: Outbound,
    pub inbound: Inbound,
    pub worker_threads: usize,
    /// `[runtime] threads`.
    pub threads: usize,
    /// `[limits] max_buffered_bytes`.
    pub max_buffered_bytes: u64,
    pub workloads: Vec<Workload>,
    pub policies: Vec<Policy>,
    pub policy_files: Vec<PathBuf>,
    pub peers: Vec<Peer>,
    pub trust: TrustView,
    /// Counts up with every change of the certificates or trust in force.
    pub credentials_generation: u64,
}

#[derive(Serialize)]
pub struct Node {
    pub spiffe_id: String,
    pub certificate: Certificate,
}

#[derive(Serialize)]
pub struct Listen {
    pub outbound: SocketAddr,
    pub outbound_v6: Option<SocketAddr>,
    pub inbound: SocketAddr,
    pub inbound_v6: Option<SocketAddr>,
    pub inbound_plaintext: SocketAddr,
    pub inbound_plaintext_v6: Option<SocketAddr>,
    pub admin: SocketAddr,
    pub admin_allow_remote: bool,
    pub health: SocketAddr,
    pub control: PathBuf,
    pub backlog: u32,
}

#[derive(Serialize)]
pub struct Capture {
    pub cgroup: PathBuf,
    pub destinations: Vec<String>,
    pub exclude: Vec<String>,
    /// `null`: every port.
    pub ports: Option<Vec<u16>>,
    pub bpf_dir: PathBuf,
    pub sockmap: bool,
}

#[derive(Serialize)]
pub struct Outbound {
    pub peer_identity: String,
    pub peer_port: u16,
    pub connect_timeout: String,
    pub idle_timeout: String,
    pub max_streams_per_connection: u32,
    pub keepalive: String,
}

#[derive(Serialize)]
pub struct Inbound {
    pub max_unauthenticated: usize,
    pub max_unauthenticated_per_address: usize,
    pub max_handshakes: usize,
    pub max_connections_per_peer: usize,
    pub max_streams_per_connection: u32,
    pub handshake_timeout: String,
    pub idle_timeout: String,
    pub keepalive: String,
}

#[derive(Serialize)]
pub struct Workload {
    pub name: String,
    pub spiffe_id: String,
    pub ports: Vec<u16>,
    pub cgroup: Option<PathBuf>,
    /// As in force (a reload may have changed it).
    pub mode: &'static str,
    pub port_modes: BTreeMap<u16, &'static str>,
    pub proxy_protocol: Vec<u16>,
    pub xfcc: Vec<u16>,
    /// `null` if none is in force (cannot happen once the daemon started).
    pub certificate: Option<Certificate>,
}

#[derive(Serialize)]
pub struct Policy {
    /// Where the rule is written: `policy[0] (line 12)`, after its file for `policy_files`.
    pub origin: String,
    pub action: &'static str,
    pub to: Option<String>,
    pub from: Option<Vec<String>>,
    pub not_from: Vec<String>,
    pub from_ips: Option<Vec<String>>,
    pub not_from_ips: Vec<String>,
    pub ports: Option<Vec<u16>>,
    pub not_ports: Vec<u16>,
    pub dry_run: bool,
}

#[derive(Serialize)]
pub struct Peer {
    pub destinations: Vec<String>,
    pub spiffe_id: String,
}

/// A certificate in force.
#[derive(Serialize)]
pub struct Certificate {
    /// Its file, or `issued from <dir>` for one the daemon issues itself.
    pub origin: String,
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
    /// Negative once expired.
    pub seconds_to_expiry: i64,
    pub lifetime_seconds: i64,
    /// When it turns `expiring` (2/3 of its lifetime, or a day before expiry for long ones).
    pub expiring_from: String,
    /// `ok`, `expiring` (past the warning point: it should have been renewed) or `expired`.
    pub state: &'static str,
    pub uris: Vec<String>,
    /// The leaf, then the intermediates sent with it.
    pub chain: Vec<ChainEntry>,
}

#[derive(Serialize)]
pub struct ChainEntry {
    pub subject: String,
    pub issuer: String,
    pub not_after: String,
}

#[derive(Serialize)]
pub struct TrustView {
    pub bundle: PathBuf,
    /// Trust anchors in force.
    pub roots_in_force: usize,
    /// The roots as the bundle file reads now (the daemon reloads it when it changes, so
    /// this is what is in force unless a reload failed, which the log says).
    pub roots: Vec<Root>,
    /// Set when the bundle cannot be read now.
    pub bundle_error: Option<String>,
    pub crl_files: Vec<PathBuf>,
    /// The CRLs in force.
    pub crls: Vec<Crl>,
}

#[derive(Serialize)]
pub struct Root {
    pub subject: String,
    pub not_after: String,
    pub seconds_to_expiry: i64,
}

#[derive(Serialize)]
pub struct Crl {
    pub issuer: String,
    pub this_update: String,
    pub next_update: Option<String>,
    pub revoked: usize,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The whole dump. Reads the bundle file (small); call it off the async threads.
pub fn dump(state: &State) -> Dump {
    let config: &Config = &state.config;
    let now = unix_now();
    let snapshot = state.credentials.current();
    let policy = state.policy.current();
    let nets = |nets: &[ipnet::IpNet]| nets.iter().map(ToString::to_string).collect();
    let secs = |d: std::time::Duration| crate::duration::format(d);
    Dump {
        file: config.file.clone(),
        trust_domain: config.trust_domain.to_string(),
        mode: config.mode.as_str(),
        node: Node {
            spiffe_id: config.node.spiffe_id.to_string(),
            certificate: certificate(&config.node.credential, &snapshot.node, now),
        },
        listen: Listen {
            outbound: SocketAddr::V4(config.listen.outbound),
            outbound_v6: config.listen.outbound_v6.map(SocketAddr::V6),
            inbound: config.listen.inbound,
            inbound_v6: config.listen.inbound_v6.map(SocketAddr::V6),
            inbound_plaintext: config.listen.inbound_plaintext,
            inbound_plaintext_v6: config.listen.inbound_plaintext_v6.map(SocketAddr::V6),
            admin: config.listen.admin,
            admin_allow_remote: config.listen.admin_allow_remote,
            health: config.listen.health,
            control: config.listen.control.clone(),
            backlog: config.listen.backlog,
        },
        capture: Capture {
            cgroup: config.capture.cgroup.value.clone(),
            destinations: nets(&config.capture.destinations),
            exclude: nets(&config.capture.exclude),
            ports: config
                .capture
                .ports
                .as_ref()
                .map(|p| p.iter().copied().collect()),
            bpf_dir: config.capture.bpf_dir.value.clone(),
            sockmap: config.capture.sockmap,
        },
        outbound: Outbound {
            peer_identity: config.outbound.peer_identity.to_string(),
            peer_port: config.outbound.peer_port,
            connect_timeout: secs(config.outbound.connect_timeout),
            idle_timeout: secs(config.outbound.idle_timeout),
            max_streams_per_connection: config.outbound.max_streams_per_connection,
            keepalive: secs(config.outbound.keepalive),
        },
        inbound: Inbound {
            max_unauthenticated: config.inbound.max_unauthenticated,
            max_unauthenticated_per_address: config.inbound.max_unauthenticated_per_address,
            max_handshakes: config.inbound.max_handshakes,
            max_connections_per_peer: config.inbound.max_connections_per_peer,
            max_streams_per_connection: config.inbound.max_streams_per_connection,
            handshake_timeout: secs(config.inbound.handshake_timeout),
            idle_timeout: secs(config.inbound.idle_timeout),
            keepalive: secs(config.inbound.keepalive),
        },
        worker_threads: config.runtime.worker_threads,
        threads: config.runtime.threads,
        max_buffered_bytes: config.limits.max_buffered_bytes,
        workloads: config
            .workloads
            .iter()
            .map(|w| {
                let (mode, port_modes) = policy
                    .modes(&w.name)
                    .map_or((w.mode, w.port_modes.clone()), |(m, p)| (m, p.clone()));
                Workload {
                    name: w.name.clone(),
                    spiffe_id: w.spiffe_id.to_string(),
                    ports: w.ports.iter().copied().collect(),
                    cgroup: w.cgroup.as_ref().map(|c| c.value.clone()),
                    mode: mode.as_str(),
                    port_modes: port_modes.iter().map(|(p, m)| (*p, m.as_str())).collect(),
                    proxy_protocol: w.proxy_protocol.iter().copied().collect(),
                    xfcc: w.xfcc.iter().copied().collect(),
                    certificate: snapshot
                        .workloads
                        .get(&w.name)
                        .map(|c| certificate(&w.credential, c, now)),
                }
            })
            .collect(),
        policies: policy
            .rules()
            .map(|(rule, origin)| {
                let patterns = |p: &[PrincipalPattern]| p.iter().map(ToString::to_string).collect();
                Policy {
                    origin: origin.to_string(),
                    action: match rule.action {
                        crate::config::Action::Allow => "allow",
                        crate::config::Action::Deny => "deny",
                        crate::config::Action::Audit => "audit",
                    },
                    to: rule.to.clone(),
                    from: rule.from.as_deref().map(patterns),
                    not_from: patterns(&rule.not_from),
                    from_ips: rule.from_ips.as_deref().map(nets),
                    not_from_ips: nets(&rule.not_from_ips),
                    ports: rule.ports.as_ref().map(|p| p.iter().copied().collect()),
                    not_ports: rule.not_ports.iter().copied().collect(),
                    dry_run: rule.dry_run,
                }
            })
            .collect(),
        policy_files: config.policy_files.clone(),
        peers: config
            .peers
            .iter()
            .map(|p| Peer {
                destinations: nets(&p.destinations),
                spiffe_id: p.spiffe_id.to_string(),
            })
            .collect(),
        trust: trust(config, &snapshot.trust, now),
        credentials_generation: snapshot.generation(),
    }
}

fn certificate(source: &CertSource, credential: &Credential, now: i64) -> Certificate {
    let leaf = &credential.leaf;
    let warn_at = warning_point(leaf.not_before, leaf.not_after);
    let state = if now > leaf.not_after {
        "expired"
    } else if now >= warn_at {
        "expiring"
    } else {
        "ok"
    };
    let (first, rest) = credential.chain();
    Certificate {
        origin: source.origin(),
        serial: leaf.serial.clone(),
        not_before: timestamp(leaf.not_before),
        not_after: timestamp(leaf.not_after),
        seconds_to_expiry: leaf.not_after - now,
        lifetime_seconds: leaf.not_after - leaf.not_before,
        expiring_from: timestamp(warn_at),
        state,
        uris: leaf.uris.clone(),
        chain: std::iter::once(first)
            .chain(rest)
            .map(chain_entry)
            .collect(),
    }
}

fn chain_entry(der: &CertificateDer<'_>) -> ChainEntry {
    match X509Certificate::from_der(der.as_ref()) {
        Ok((_, cert)) => ChainEntry {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            not_after: timestamp(cert.validity().not_after.timestamp()),
        },
        Err(_) => ChainEntry {
            subject: "(does not parse)".into(),
            issuer: String::new(),
            not_after: String::new(),
        },
    }
}

fn trust(config: &Config, trust: &crate::tls::Trust, now: i64) -> TrustView {
    let bundle: &Path = &config.trust_bundle.value;
    let (roots, bundle_error) = match read_certificates(bundle) {
        Ok(certs) => (
            certs
                .iter()
                .map(|der| match X509Certificate::from_der(der.as_ref()) {
                    Ok((_, cert)) => Root {
                        subject: cert.subject().to_string(),
                        not_after: timestamp(cert.validity().not_after.timestamp()),
                        seconds_to_expiry: cert.validity().not_after.timestamp() - now,
                    },
                    Err(_) => Root {
                        subject: "(does not parse)".into(),
                        not_after: String::new(),
                        seconds_to_expiry: 0,
                    },
                })
                .collect(),
            None,
        ),
        Err(e) => (Vec::new(), Some(crate::errors::chain(&e))),
    };
    TrustView {
        bundle: bundle.to_path_buf(),
        roots_in_force: trust.roots.len(),
        roots,
        bundle_error,
        crl_files: config.crl.iter().map(|c| c.value.clone()).collect(),
        // As read at load: a big list is not parsed again for each request.
        crls: trust
            .crls
            .iter()
            .map(|crl| crl.summary())
            .map(|summary| Crl {
                issuer: summary.issuer.clone(),
                this_update: timestamp(summary.this_update),
                next_update: summary.next_update.map(timestamp),
                revoked: summary.entries,
            })
            .collect(),
    }
}
