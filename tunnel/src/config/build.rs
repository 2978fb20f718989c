//! Raw → typed. Every rule lives here; problems are collected (not just the first) so one
//! run of `tunnel run`/`check` shows everything wrong with a file.
//!
//! This file runs the tables' checks in order and puts the config together; each table's
//! rules are in a file of their own: `listeners` (`[listen]`), `capture`, `peers`
//! (`[outbound]`, `[[peer]]`), `limits` (`[inbound]`), `workloads`, `policy`, `pods`
//! (`[pods]`, `[kubernetes]`), `credentials` (certificates and CRLs); `values` parses single
//! values, `syntax` turns serde's and toml's errors into problems.

use std::{
    path::{Path, PathBuf},
    str::FromStr,
};

use super::{
    Aead, Config, ConfigError, Crypto, DEFAULT_THREADS, DEFAULT_WORKER_THREADS, Logging,
    MAX_THREADS, MAX_WORKER_THREADS, Node, Policy, Problem, Runtime, Site,
    error::{Locator, Step, render},
    raw::{RawConfig, RawNode, RawPolicyFile, RawRuntime},
};
use crate::identity::TrustDomain;

mod capture;
mod credentials;
mod limits;
mod listeners;
mod peers;
mod pods;
mod policy;
mod syntax;
mod values;
mod workloads;

use syntax::deserialize;

/// `read` reads a `policy_files` entry (`fs::read_to_string` but in the fuzz targets).
pub fn build(
    text: &str,
    file: &Path,
    read: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Result<Config, ConfigError> {
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
        let text = read(&path).map_err(|e| {
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
        let kubernetes = self.kubernetes(
            raw.kubernetes.as_ref().unwrap_or(&Default::default()),
            raw.pods.is_some(),
        );
        let service_cidrs = kubernetes.as_ref().map_or(&[][..], |k| &k.service_cidrs);
        let capture = self.capture(&raw.capture, service_cidrs);
        let listen = self.listen(&raw.listen, capture.as_ref());
        let outbound = self.outbound(&raw.outbound, td);
        let runtime = self.runtime(&raw.runtime);
        self.crypto(raw.crypto);
        let inbound = self.inbound(&raw.inbound, runtime.as_ref());
        let limits = self.limits(&raw.limits);
        let workloads = self.workloads(
            &raw.workloads,
            td,
            capture.as_ref(),
            listen.as_ref(),
            raw.mode,
        );
        let pods = raw.pods.as_ref().map(|p| self.pods(p, td));
        if let (Some(listen), Some(Some(pods))) = (&listen, &pods) {
            self.sockets_apart(listen, pods, raw.listen.control.is_some());
        }
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
            limits: limits?,
            crypto: raw.crypto,
            logging: Logging {
                allow_lowering_access_and_auth: raw.logging.allow_lowering_access_and_auth,
            },
            workloads,
            policies,
            policy_files: Vec::new(),
            peers,
            pods: pods.map(|p| p.ok_or(())).transpose().ok()?,
            kubernetes: kubernetes?,
        })
    }

    fn node(&mut self, raw: &RawNode, td: Option<&TrustDomain>) -> Option<Node> {
        let path = at("node");
        let spiffe_id = self.spiffe_id(&path.key("spiffe_id"), &raw.spiffe_id, td);
        let credential = self.cert_source(&path, raw.into());
        Some(Node {
            spiffe_id: spiffe_id?,
            credential: credential?,
        })
    }

    /// The control socket and the pod API each need a path of their own: binding one would
    /// replace the other's file.
    fn sockets_apart(&mut self, listen: &super::Listen, pods: &super::Pods, control_written: bool) {
        if listen.control != pods.socket {
            return;
        }
        let key = if control_written {
            at("listen").key("control")
        } else {
            at("pods").key("socket")
        };
        self.problem(
            &key,
            format!(
                "{} is both listen.control and [pods] socket; each needs a path of its own",
                listen.control.display()
            ),
        );
    }

    fn crypto(&mut self, crypto: Crypto) {
        if crypto.aead == Aead::Ring && !cfg!(feature = "ring-aead") {
            let key = at("crypto").key("aead");
            self.problem(
                &key,
                "\"ring\": this build has no ring (built without the ring-aead feature, as a FIPS build is); use \"aws-lc\" or \"auto\"".to_string(),
            );
        }
    }

    fn runtime(&mut self, raw: &RawRuntime) -> Option<Runtime> {
        let worker_threads = self.thread_count(
            "worker_threads",
            raw.worker_threads,
            DEFAULT_WORKER_THREADS,
            MAX_WORKER_THREADS,
        )?;
        let threads = self.thread_count("threads", raw.threads, DEFAULT_THREADS, MAX_THREADS)?;
        if threads > 1 && worker_threads > 1 {
            let key = at("runtime").key("threads");
            self.problem(
                &key,
                format!(
                    "{threads} runtimes of one thread each, and worker_threads = {worker_threads} makes the main one a pool: set one of them"
                ),
            );
            return None;
        }
        Some(Runtime {
            worker_threads,
            threads,
        })
    }

    /// `[runtime] name`, or `default`; from 1 to `max`.
    fn thread_count(
        &mut self,
        name: &str,
        value: Option<usize>,
        default: usize,
        max: usize,
    ) -> Option<usize> {
        let count = value.unwrap_or(default);
        if !(1..=max).contains(&count) {
            let key = at("runtime").key(name);
            self.problem(&key, format!("must be from 1 to {max}"));
            return None;
        }
        Some(count)
    }
}
