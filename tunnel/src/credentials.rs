//! The certificates in force, and how they change while the daemon runs.
//!
//! Everything TLS uses is one [`Snapshot`], published on a watch channel: handshakes take the
//! current one, and connections watch for the next ([`lifetime`]). A new snapshot comes from
//! a reload of changed files ([`Credentials::reload`], driven by `app::reload`'s file watch
//! and SIGHUP) or from a renewal of a certificate the daemon issues itself ([`issued`]).
//! New material is judged before it is used (the key matches, the chain verifies to the
//! trust bundle and the CRLs, it is an X.509-SVID of the configured identity, it is within
//! its validity); material that fails keeps the old in force, says which file and why, and
//! is tried again when the file next changes.

pub mod expiry;
pub(crate) mod issued;
mod judge;
pub mod lifetime;
mod snapshot;
mod source;

use std::{
    collections::HashMap,
    fmt,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

pub(crate) use judge::PeerVerdict;
use judge::{judge, refusal};
pub use snapshot::{ClientTls, Snapshot, Spec};
use tokio::sync::{Notify, watch};
use tracing::{error, info, warn};

use source::{Source, read_files, trust_files};

use crate::{
    ca::CaError,
    config::{CertSource, Config, ConfigError, Problem},
    errors,
    identity::{Purpose, SpiffeId, timestamp},
    tls::{self, CertificateProblem, Credential, MaterialError, Trust},
};

/// Why a certificate could not be read, issued or put in force. Printed with
/// [`errors::chain`]: the issuer's variants name their step and leave the CA's error to
/// `source()`.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The certificate and key files of a `cert` + `key` source.
    #[error(transparent)]
    Files(#[from] MaterialError),
    /// The issuer's directory does not hold a CA that can sign.
    #[error("cannot use the issuer {}", dir.display())]
    LoadIssuer { dir: PathBuf, source: CaError },
    /// The issuer failed to sign a certificate.
    #[error("cannot issue from {}", dir.display())]
    Issue { dir: PathBuf, source: CaError },
    /// A certificate the issuer signed that rustls cannot present.
    #[error("the issued certificate is unusable")]
    Unusable { source: rustls::Error },
    /// A peer of ours would refuse the certificate (chain, CRLs, validity, EKU, SPIFFE
    /// rules): how, in words.
    #[error("{}", tls::explain(.0))]
    PeersRefuse(rustls::Error),
    /// Peers accept the chain, but not as the configured identity in this role.
    #[error("{0}")]
    Problem(CertificateProblem),
}

/// Whose certificate: the node's (presented to callers) or a workload's (presented to peers).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Owner {
    Node,
    Workload(String),
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Node => f.write_str("the node"),
            Self::Workload(name) => write!(f, "workload {name:?}"),
        }
    }
}

/// The roles each kind of certificate is judged in.
const NODE_ROLES: &[Purpose] = &[Purpose::ServerAuth];
const WORKLOAD_ROLES: &[Purpose] = &[Purpose::ClientAuth];
/// A pod calls, and serves its own HBONE listener.
const POD_ROLES: &[Purpose] = &[Purpose::ClientAuth, Purpose::ServerAuth];

struct State {
    sources: Vec<Source>,
    trust_seen: Vec<u8>,
}

/// The live certificates of a daemon (or of `tunnel probe`).
pub struct Credentials {
    snapshots: watch::Sender<Arc<Snapshot>>,
    state: Mutex<State>,
    spec: Arc<Spec>,
    bundle: PathBuf,
    crl_files: Vec<PathBuf>,
    /// Wakes the renewal task when a schedule changes (an issuer was reloaded).
    renewals_changed: Notify,
    /// Certificate (and trust) reloads and renewals that took, and that failed.
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
}

impl Credentials {
    /// Reads the trust and every certificate (issuing those with an `issuer`). A file that
    /// cannot be used at all (unreadable, no certificate, a key that does not belong to its
    /// certificate, an issuer that cannot sign) is a problem at the key that names it, and
    /// every one is reported at once. What the certificates say is judged apart
    /// ([`Credentials::refusals`]), so that `tunnel probe` can still present a certificate
    /// the daemon would not start with and show how peers react.
    pub fn load(config: &Config, spec: Spec) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let bundle = config.trust_bundle.value.clone();
        let crl_files: Vec<PathBuf> = config.crl.iter().map(|c| c.value.clone()).collect();
        let trust = Trust::load(&bundle, &crl_files)
            .map_err(|e| {
                let site = match &e {
                    MaterialError::ReadCrl { path, .. } | MaterialError::NoCrl { path } => config
                        .crl
                        .iter()
                        .find(|c| &c.value == path)
                        .map_or(&config.trust_bundle.site, |c| &c.site),
                    _ => &config.trust_bundle.site,
                };
                problems.push(Problem::at(site, errors::chain(&e)));
            })
            .ok();
        let mut sources = vec![Source::new(
            Owner::Node,
            config.node.spiffe_id.clone(),
            NODE_ROLES,
            config.node.credential.clone(),
        )];
        for workload in &config.workloads {
            sources.push(Source::new(
                Owner::Workload(workload.name.clone()),
                workload.spiffe_id.clone(),
                WORKLOAD_ROLES,
                workload.credential.clone(),
            ));
        }
        let mut node = None;
        let mut workloads = HashMap::new();
        for source in &mut sources {
            source.seen = read_files(&source.config.files());
            match source.first_load() {
                Ok(credential) => match &source.owner {
                    Owner::Node => node = Some(Arc::new(credential)),
                    Owner::Workload(name) => {
                        workloads.insert(name.clone(), Arc::new(credential));
                    }
                },
                Err(e) => problems.push(source.problem(&e)),
            }
        }
        let spec = Arc::new(spec);
        let (Some(trust), Some(node), true) = (trust, node, problems.is_empty()) else {
            return Err(ConfigError::new(&config.file, problems));
        };
        let snapshot =
            Snapshot::build(1, spec.clone(), Arc::new(trust), node, workloads).map_err(|e| {
                ConfigError::new(
                    &config.file,
                    vec![Problem::at(
                        &config.trust_bundle.site,
                        format!("cannot build the TLS configuration: {e}"),
                    )],
                )
            })?;
        let trust_seen = read_files(&trust_files(&bundle, &crl_files));
        Ok(Self {
            snapshots: watch::Sender::new(Arc::new(snapshot)),
            state: Mutex::new(State {
                sources,
                trust_seen,
            }),
            spec,
            bundle,
            crl_files,
            renewals_changed: Notify::new(),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
        })
    }

    /// The material in force.
    pub fn current(&self) -> Arc<Snapshot> {
        self.snapshots.borrow().clone()
    }

    /// The material in force, and every later one.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshots.subscribe()
    }

    /// Every file the material is read from, to watch for changes.
    pub fn files(&self) -> Vec<PathBuf> {
        let state = self.state.lock().expect("credentials lock poisoned");
        let mut files = trust_files(&self.bundle, &self.crl_files);
        for source in &state.sources {
            files.extend(source.config.files());
        }
        files
    }

    /// The certificates the daemon must not start with, each at the key that names it: one
    /// that breaks the X.509-SVID rules for its role (a CA certificate, a node certificate
    /// without serverAuth, a workload's without clientAuth...) or is for another identity
    /// than configured, which no peer will ever accept; and a node certificate outside its
    /// validity, which makes every peer refuse every tunnel to this host. A workload
    /// certificate outside its validity is only warned about
    /// ([`Credentials::workload_problems`]): the other workloads and the inbound side keep
    /// working, and the outbound side says why that workload's calls are refused.
    pub fn refusals(&self, config: &Config) -> Vec<Problem> {
        let snapshot = self.current();
        let mut refusals = Vec::new();
        let node = &config.node;
        for problem in snapshot.node.problems(&node.spiffe_id, Purpose::ServerAuth) {
            refusals.push(refusal(&node.credential, &problem, "the node"));
        }
        for workload in &config.workloads {
            let who = format!("workload {:?}", workload.name);
            let credential = &snapshot.workloads[&workload.name];
            for problem in credential.problems(&workload.spiffe_id, Purpose::ClientAuth) {
                if !matches!(problem, CertificateProblem::Validity(_)) {
                    refusals.push(refusal(&workload.credential, &problem, &who));
                }
            }
        }
        refusals
    }

    /// What peers will object to in a workload's certificate now.
    pub fn workload_problems(&self, name: &str, id: &SpiffeId) -> Vec<String> {
        self.current()
            .workloads
            .get(name)
            .map(|c| c.problems(id, Purpose::ClientAuth))
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// When each identity's certificate in force expires (unix seconds), for metrics and
    /// status.
    pub fn expiries(&self) -> Vec<(Owner, SpiffeId, i64)> {
        let snapshot = self.current();
        let state = self.state.lock().expect("credentials lock poisoned");
        state
            .sources
            .iter()
            .filter_map(|s| {
                let credential = snapshot.credential(&s.owner)?;
                Some((s.owner.clone(), s.id.clone(), credential.leaf.not_after))
            })
            .collect()
    }

    /// Reloads and renewals so far: (taken, failed).
    pub fn reload_counts(&self) -> (u64, u64) {
        (
            self.reloads_ok.load(Ordering::Relaxed),
            self.reloads_failed.load(Ordering::Relaxed),
        )
    }

    fn count_reload(&self, ok: bool) {
        let counter = if ok {
            &self.reloads_ok
        } else {
            &self.reloads_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads every file again and puts what changed and passes the checks in force, in one
    /// new snapshot. Returns how many certificates (and the trust, counted as one) changed.
    pub fn reload(&self, trigger: &str) -> usize {
        let mut state = self.state.lock().expect("credentials lock poisoned");
        let old = self.current();
        let mut trust = old.trust.clone();
        let mut changed = 0;
        let files = trust_files(&self.bundle, &self.crl_files);
        let seen = read_files(&files);
        if seen != state.trust_seen {
            state.trust_seen = seen;
            match Trust::load(&self.bundle, &self.crl_files) {
                Ok(new) => {
                    let crl_entries: usize = new.crls.iter().map(|crl| crl.summary().entries).sum();
                    info!(
                        trigger, bundle = %self.bundle.display(), roots = new.roots.len(), crls = new.crls.len(),
                        crl_entries, "trust bundle and CRLs reloaded"
                    );
                    trust = Arc::new(new);
                    changed += 1;
                    self.count_reload(true);
                }
                Err(e) => {
                    self.count_reload(false);
                    error!(
                        trigger,
                        "trust reload failed, the trust in force stays: {}; tried again when the file changes",
                        errors::chain(&e)
                    )
                }
            }
        }
        let mut next = InForce::of(&old);
        let mut renewals_changed = false;
        for source in &mut state.sources {
            let current = next.get_mut(&source.owner);
            let seen = read_files(&source.config.files());
            if seen == source.seen {
                continue;
            }
            source.seen = seen;
            let candidate = match &mut source.issuer {
                Some(issuer) => {
                    renewals_changed = true;
                    issuer.reload().and_then(|()| issuer.issue(&source.id))
                }
                None => source.read_files(),
            };
            let judged = candidate
                .and_then(|c| judge(&c, &source.id, source.roles, &trust, &self.spec).map(|()| c));
            match judged {
                Ok(credential) => {
                    log_replaced(&source.owner, current, &credential, trigger);
                    *current = Arc::new(credential);
                    changed += 1;
                    self.count_reload(true);
                }
                Err(e) => {
                    self.count_reload(false);
                    error!(
                        trigger, owner = %source.owner, source = %source.config.origin(),
                        in_force = %describe(current),
                        "certificate reload failed, the certificate in force stays: {}; tried again when the file changes",
                        errors::chain(&e)
                    )
                }
            }
        }
        if renewals_changed {
            self.renewals_changed.notify_one();
        }
        if changed == 0 {
            return 0;
        }
        if !Arc::ptr_eq(&trust, &old.trust) {
            // The new trust is in force either way (it is what peers are judged by); say
            // which of our own certificates it no longer covers, since peers with the same
            // bundle will refuse them.
            for source in &state.sources {
                let credential = next.get(&source.owner);
                if let Err(e) = judge(credential, &source.id, source.roles, &trust, &self.spec) {
                    warn!(owner = %source.owner, "after the trust reload: our certificate {}: {}", describe(credential), errors::chain(&e));
                }
            }
        }
        self.publish(trust, next, trigger);
        drop(state);
        changed
    }

    /// Loads (files) or issues (an issuer) the certificate of `id` (a registered pod's),
    /// judges it as a caller's and a server's (a pod is both), and puts it in force under `Owner::Workload(name)`; it is
    /// reloaded or renewed like the configured ones. Replaces an earlier one of the name.
    pub fn add(
        &self,
        name: &str,
        id: &SpiffeId,
        source: CertSource,
    ) -> Result<(), CredentialsError> {
        let mut source = Source::new(Owner::Workload(name.into()), id.clone(), POD_ROLES, source);
        let credential = source.first_load()?;
        let mut state = self.state.lock().expect("credentials lock poisoned");
        let old = self.current();
        judge(&credential, id, POD_ROLES, &old.trust, &self.spec)?;
        source.seen = read_files(&source.config.files());
        state.sources.retain(|s| s.owner != source.owner);
        state.sources.push(source);
        let mut next = InForce::of(&old);
        next.workloads.insert(name.into(), Arc::new(credential));
        // Published under the lock: a reload or renewal deciding at the same time starts
        // from this snapshot, not from the one before, so neither change is lost.
        self.publish(old.trust.clone(), next, "pod added");
        drop(state);
        self.renewals_changed.notify_one();
        Ok(())
    }

    /// Takes a certificate added by [`Credentials::add`] out of force: connections
    /// made with it take no new streams (its snapshot entry is gone). Whether it was there.
    pub fn remove(&self, name: &str) -> bool {
        let owner = Owner::Workload(name.into());
        let mut state = self.state.lock().expect("credentials lock poisoned");
        let before = state.sources.len();
        state.sources.retain(|s| s.owner != owner);
        let removed = state.sources.len() != before;
        let old = self.current();
        let mut next = InForce::of(&old);
        next.workloads.remove(name);
        if removed {
            self.publish(old.trust.clone(), next, "pod removed");
            drop(state);
            self.renewals_changed.notify_one();
        }
        removed
    }

    /// Builds and publishes the next snapshot (an error keeps the current one, logged).
    fn publish(&self, trust: Arc<Trust>, next: InForce, trigger: &str) {
        let generation = self.current().generation() + 1;
        let InForce { node, workloads } = next;
        match Snapshot::build(generation, self.spec.clone(), trust, node, workloads) {
            Ok(snapshot) => {
                self.snapshots.send_replace(Arc::new(snapshot));
            }
            Err(e) => error!(
                trigger,
                "cannot build the TLS configuration, the one in force stays: {e}"
            ),
        }
    }
}

/// The certificates of the next snapshot, while a reload or a renewal decides them: those in
/// force, each replaced as its new one passes.
struct InForce {
    node: Arc<Credential>,
    workloads: HashMap<String, Arc<Credential>>,
}

impl InForce {
    fn of(snapshot: &Snapshot) -> Self {
        Self {
            node: snapshot.node.clone(),
            workloads: snapshot.workloads.clone(),
        }
    }

    fn get(&self, owner: &Owner) -> &Arc<Credential> {
        match owner {
            Owner::Node => &self.node,
            Owner::Workload(name) => &self.workloads[name],
        }
    }

    /// Every configured owner has one: the first load refuses to start without it.
    fn get_mut(&mut self, owner: &Owner) -> &mut Arc<Credential> {
        match owner {
            Owner::Node => &mut self.node,
            Owner::Workload(name) => self
                .workloads
                .get_mut(name)
                .expect("every configured workload has a certificate in force"),
        }
    }
}

fn log_replaced(owner: &Owner, old: &Credential, new: &Credential, trigger: &str) {
    info!(
        trigger, %owner,
        old_serial = %old.leaf.serial, serial = %new.leaf.serial,
        not_after = %timestamp(new.leaf.not_after),
        "certificate replaced: new handshakes use it now; connections made with the old one take no new streams and close as they finish"
    );
}

/// A certificate in a log line: serial and expiry.
fn describe(credential: &Credential) -> String {
    format!(
        "serial {}, valid until {}",
        credential.leaf.serial,
        timestamp(credential.leaf.not_after)
    )
}

#[cfg(test)]
mod tests;
