//! Pods of this node that run without a registration: every pod when the DaemonSet is
//! installed into a running cluster, every pod again when a daemon starts without its state
//! directory, and any pod whose CNI ADD never reached the daemon (tunnel-cni missing from the
//! conflist for a while). The cluster view says which pods are this node's, with their
//! addresses; the node's processes say where each one runs, as Istio's CNI node agent finds
//! them (its `PodNetnsProcFinder`):
//!
//! 1. every `/proc/<pid>/cgroup` is read for a pod uid: the kubelet puts a pod's containers
//!    under `…/pod<uid>/…` with the cgroupfs driver and under
//!    `…-pod<uid with _ for ->.slice/…` with the systemd driver. The daemon runs in a cgroup
//!    namespace of its own, where other processes' paths read `/../../kubepods…`, so the uid
//!    is looked for in every component of the path, wherever it is;
//! 2. that process's `/proc/<pid>/ns/net` is the pod's namespace, registered by a pinned file
//!    of the same namespace (`/var/run/netns/cni-…`, as the runtime passes it to CNI) when
//!    there is one, else by the `/proc` path;
//! 3. the namespace must hold one of the pod's addresses (read on the namespace thread):
//!    a process of the pod's cgroup in another namespace is not the pod's sandbox.
//!
//! Then the pod is added as a CNI ADD adds it (certificate, listeners, steering, record),
//! with one difference: a pod registered by its `/proc/<pid>/ns/net` path is not recorded.
//! Once that process has gone its pid may name another process, in another namespace, and
//! a restarted daemon taking the record back would serve the pod there; it finds the pod
//! again instead. A pod that cannot be enrolled is logged once per reason and counted
//! (`tunnel_pod_enrolments_total`); it is tried again every [`ENROL_PERIOD`].

use std::{
    collections::{HashMap, HashSet},
    fs, io,
    net::IpAddr,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use tracing::{debug, info, warn};
use tunnel_pod_api::PodSpec;

use super::{EnrolError, PodManager, view::NodePod};
use crate::{drain::DrainWatcher, errors, netns::Netns, telemetry::EnrolFailure};

/// Where the node's processes are listed: the host's `/proc` (the DaemonSet has `hostPID`).
const PROC: &str = "/proc";
/// Where runtimes pin pods' network namespaces: containerd and CRI-O under /var/run/netns,
/// iproute2 under /run/netns (often the same directory). The first name found is used.
const NETNS_DIRS: [&str; 2] = ["/var/run/netns", "/run/netns"];
/// How often pods still unregistered are looked for after start. A pod is tried only once
/// it has been seen unregistered, with the same addresses, a whole period: a sandbox being
/// replaced (DEL, then a new ADD) is not mistaken for a pod to enrol.
pub const ENROL_PERIOD: Duration = Duration::from_secs(30);

/// A network namespace a pod's process is in.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Sandbox {
    /// The first process of the pod found in it.
    pid: u32,
    /// The namespace's (device, inode).
    id: (u64, u64),
    /// What the pod is registered by: a pinned file of the namespace, or `/proc/<pid>/ns/net`.
    path: PathBuf,
}

/// What a scan of the node's processes found of the pods it looked for, by uid.
#[derive(Debug, Default)]
struct Found {
    /// Each distinct namespace of the pod's processes.
    sandboxes: HashMap<String, Vec<Sandbox>>,
    /// The first process of the pod whose namespace could not be read, and why.
    unreadable: HashMap<String, (u32, io::Error)>,
    /// Processes read, for the log.
    processes: usize,
}

/// What enrolment remembers between its passes.
#[derive(Debug, Default)]
pub struct Enrolment {
    /// The reason each pod last failed for: said and counted again only when it changes.
    failed: HashMap<String, EnrolFailure>,
    /// The pods found unregistered by the last pass, with their addresses.
    pending: HashSet<(String, Vec<IpAddr>)>,
}

impl Enrolment {
    /// Of the pods unregistered now, those that were so at the last pass too, with the same
    /// addresses. Forgets the failures of pods no longer unregistered (gone, or registered).
    fn due(&mut self, unregistered: Vec<NodePod>) -> Vec<NodePod> {
        let now: HashSet<(String, Vec<IpAddr>)> = unregistered.iter().map(pending_key).collect();
        self.failed
            .retain(|uid, _| unregistered.iter().any(|pod| &pod.uid == uid));
        let due = unregistered
            .into_iter()
            .filter(|pod| self.pending.contains(&pending_key(pod)))
            .collect();
        self.pending = now;
        due
    }
}

/// How one pass went.
#[derive(Debug, Default)]
struct Pass {
    enrolled: usize,
    failed: usize,
}

impl PodManager {
    /// Enrols every pod the cluster view places on this node that is not registered (after
    /// the records are taken back and the view is listed). What it learnt goes on with
    /// [`PodManager::enrol_forever`].
    pub async fn enrol_running(&self, drain: &DrainWatcher) -> Enrolment {
        let mut enrolment = Enrolment::default();
        let Some(view) = &self.view else {
            return enrolment;
        };
        if !view.knows_this_node() {
            warn!(
                "[kubernetes] node_name is not set: pods already running on this node are not enrolled"
            );
            return enrolment;
        }
        let started = Instant::now();
        let pods = self.unregistered().await;
        enrolment.pending = pods.iter().map(pending_key).collect();
        let pass = self.enrol(pods, &mut enrolment, drain).await;
        info!(
            enrolled = pass.enrolled,
            failed = pass.failed,
            took_ms = started.elapsed().as_millis(),
            "pods already running on this node enrolled"
        );
        enrolment
    }

    /// Every [`ENROL_PERIOD`] until a drain, enrols the pods of this node that are still
    /// not registered a period after they were first seen so (those that failed are tried
    /// again).
    pub async fn enrol_forever(self: Arc<Self>, mut enrolment: Enrolment, mut drain: DrainWatcher) {
        if !self
            .view
            .as_ref()
            .is_some_and(|view| view.knows_this_node())
        {
            return;
        }
        loop {
            tokio::select! {
                () = tokio::time::sleep(ENROL_PERIOD) => {}
                () = drain.signaled() => return,
            }
            let due = enrolment.due(self.unregistered().await);
            if due.is_empty() {
                continue;
            }
            let pass = self.enrol(due, &mut enrolment, &drain).await;
            if pass.enrolled > 0 {
                info!(
                    enrolled = pass.enrolled,
                    failed = pass.failed,
                    "unregistered pods running on this node enrolled"
                );
            }
        }
    }

    /// This node's pods in the view that are not registered.
    async fn unregistered(&self) -> Vec<NodePod> {
        let Some(view) = &self.view else {
            return Vec::new();
        };
        let pods = view.node_pods();
        let registered = self.registered.lock().await;
        pods.into_iter()
            .filter(|pod| !registered.contains_key(&pod.uid))
            .collect()
    }

    async fn enrol(
        &self,
        pods: Vec<NodePod>,
        enrolment: &mut Enrolment,
        drain: &DrainWatcher,
    ) -> Pass {
        let mut pass = Pass::default();
        if pods.is_empty() {
            return pass;
        }
        let uids: HashSet<String> = pods.iter().map(|pod| pod.uid.clone()).collect();
        let started = Instant::now();
        let scanned = tokio::task::spawn_blocking(move || {
            let dirs = NETNS_DIRS.map(Path::new);
            scan(Path::new(PROC), &dirs, &uids)
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
        .map_err(Arc::new);
        if let Ok(found) = &scanned {
            debug!(
                processes = found.processes,
                pods = pods.len(),
                took_us = started.elapsed().as_micros(),
                "the node's processes read for pods to enrol"
            );
        }
        let mut found = scanned;
        for pod in pods {
            let name = format!("{}/{}", pod.namespace, pod.name);
            let outcome = match &mut found {
                Ok(found) => self.enrol_one(&pod, found, drain).await,
                Err(source) => Err(EnrolError::Processes {
                    dir: PROC.into(),
                    source: source.clone(),
                }),
            };
            match outcome {
                Ok(Some((status, sandbox))) => {
                    info!(
                        pod = %name, uid = %pod.uid, spiffe_id = %status.spiffe_id,
                        netns = %sandbox.path.display(), pid = sandbox.pid, ips = ?status.ips,
                        "running pod enrolled"
                    );
                    self.metrics.enrolment(None);
                    enrolment.failed.remove(&pod.uid);
                    pass.enrolled += 1;
                }
                // Registered meanwhile (a CNI ADD, the API).
                Ok(None) => debug!(pod = %name, uid = %pod.uid, "pod registered meanwhile"),
                Err(e) => {
                    pass.failed += 1;
                    let reason = e.reason();
                    if enrolment.failed.insert(pod.uid.clone(), reason) != Some(reason) {
                        warn!(
                            pod = %name, uid = %pod.uid, reason = ?reason,
                            "running pod not enrolled: {}", errors::chain(&e)
                        );
                        self.metrics.enrolment(Some(reason));
                    }
                }
            }
        }
        pass
    }

    /// Finds the pod's sandbox among its processes' namespaces, and adds the pod there.
    /// `None`: it was registered meanwhile.
    async fn enrol_one(
        &self,
        pod: &NodePod,
        found: &mut Found,
        drain: &DrainWatcher,
    ) -> Result<Option<(tunnel_pod_api::PodStatus, Sandbox)>, EnrolError> {
        let Some(sandboxes) = found.sandboxes.remove(&pod.uid) else {
            return Err(match found.unreadable.remove(&pod.uid) {
                Some((pid, source)) => EnrolError::Namespace { pid, source },
                None => EnrolError::NoProcess {
                    uid: pod.uid.clone(),
                },
            });
        };
        let mut unreadable = None;
        let mut seen = Vec::new();
        for sandbox in sandboxes {
            let addresses = match Netns::open(&sandbox.path) {
                Ok(netns) => self.thread.addresses(&Arc::new(netns)).await,
                Err(e) => Err(e),
            };
            let addresses = match addresses {
                Ok(addresses) => addresses,
                Err(source) => {
                    unreadable.get_or_insert(EnrolError::Addresses {
                        path: sandbox.path.clone(),
                        source,
                    });
                    continue;
                }
            };
            if addresses
                .iter()
                .any(|ip| pod.ips.contains(&ip.to_canonical()))
            {
                let spec = PodSpec {
                    namespace: pod.namespace.clone(),
                    name: pod.name.clone(),
                    uid: pod.uid.clone(),
                    netns: sandbox.path.clone(),
                    spiffe_id: None,
                };
                let recorded = !sandbox.path.starts_with(PROC);
                return self
                    .add_unless_registered(spec, drain, recorded)
                    .await
                    .map(|added| added.map(|status| (status, sandbox)))
                    .map_err(EnrolError::Add);
            }
            seen.push(format!(
                "{} (process {}) holds {}",
                sandbox.path.display(),
                sandbox.pid,
                if addresses.is_empty() {
                    "no address".to_string()
                } else {
                    join(&addresses)
                }
            ));
        }
        Err(unreadable.unwrap_or_else(|| EnrolError::NotItsAddress {
            ips: join(&pod.ips),
            found: seen.join("; "),
        }))
    }
}

fn pending_key(pod: &NodePod) -> (String, Vec<IpAddr>) {
    (pod.uid.clone(), pod.ips.clone())
}

fn join(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads every process under `proc` for the pods of `uids`: the distinct network
/// namespaces their processes are in. A process that ends during the scan is passed over.
fn scan(proc: &Path, netns_dirs: &[&Path], uids: &HashSet<String>) -> io::Result<Found> {
    let pinned = pinned_namespaces(netns_dirs);
    let mut found = Found::default();
    for entry in fs::read_dir(proc)? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        // Gone since the directory was listed.
        let Ok(cgroups) = fs::read_to_string(dir.join("cgroup")) else {
            continue;
        };
        found.processes += 1;
        let Some(uid) = pod_in(&cgroups, uids) else {
            continue;
        };
        let netns = dir.join("ns/net");
        match fs::metadata(&netns) {
            Ok(meta) => {
                let id = (meta.dev(), meta.ino());
                let sandboxes = found.sandboxes.entry(uid.clone()).or_default();
                if !sandboxes.iter().any(|s| s.id == id) {
                    let path = pinned.get(&id).cloned().unwrap_or(netns);
                    sandboxes.push(Sandbox { pid, id, path });
                }
            }
            // Exited meanwhile (a zombie has no namespaces either).
            Err(e)
                if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
            }
            Err(e) => {
                found.unreadable.entry(uid.clone()).or_insert((pid, e));
            }
        }
    }
    // A pod with a readable namespace is judged by it, whatever another process said.
    found
        .unreadable
        .retain(|uid, _| !found.sandboxes.contains_key(uid));
    Ok(found)
}

/// The pinned namespace files of `dirs`, by (device, inode); the first name of each.
fn pinned_namespaces(dirs: &[&Path]) -> HashMap<(u64, u64), PathBuf> {
    let mut pinned = HashMap::new();
    for dir in dirs {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if let Ok(meta) = fs::metadata(&path) {
                pinned.entry((meta.dev(), meta.ino())).or_insert(path);
            }
        }
    }
    pinned
}

/// The wanted pod whose cgroup a process's `/proc/<pid>/cgroup` names, if any (every line:
/// cgroup v2's `0::/path`, and v1's on a hybrid host).
fn pod_in<'a>(cgroups: &str, uids: &'a HashSet<String>) -> Option<&'a String> {
    cgroups
        .lines()
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .flat_map(|path| path.split('/'))
        .filter_map(pod_uid)
        .find_map(|uid| uids.get(&uid))
}

/// The pod uid a cgroup path component names: `pod<uid>` (the kubelet's cgroupfs driver),
/// `kubepods-<qos>-pod<uid with _ for ->.slice` (its systemd driver).
fn pod_uid(component: &str) -> Option<String> {
    let component = component.strip_suffix(".slice").unwrap_or(component);
    let uid = match component.strip_prefix("pod") {
        Some(uid) => uid,
        None => &component[component.rfind("-pod")? + "-pod".len()..],
    };
    (!uid.is_empty()).then(|| uid.replace('_', "-"))
}

#[cfg(test)]
mod tests;
