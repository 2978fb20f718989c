//! Pods: workloads in network namespaces of their own (Kubernetes), registered while the
//! daemon runs through the registration API (`tunnel-cni` on ADD/DEL, `tunnel pod`).
//!
//! For each pod the daemon opens, inside the pod's namespace (see [`crate::netns`]):
//!
//! - the outbound listener on `127.0.0.1:<listen.outbound port>`, where `connect4` sends the
//!   pod's captured connects (the rewrite target is the same in every namespace, and each
//!   namespace has its own loopback); the listener that accepts a connection says which pod
//!   made it, so no per-connection lookup is needed;
//! - the HBONE listener on each pod address `:<outbound.peer_port>`, which presents the
//!   pod's own certificate, so callers (ours, or an Istio ztunnel) can check they reached
//!   the workload they meant;
//!
//! and it makes the pod's connections from inside the namespace: HBONE to other pods goes
//! pod IP → pod IP:15008, and deliveries reach the pod's application at its own address.
//! Pods on one node are tunnelled between each other like pods on two.
//!
//! Each pod's identity comes from the registration (`spiffe_id`) or from `[pods] spiffe_id`,
//! a template whose `{service_account}` is read from the Kubernetes API. Its certificate is
//! issued in memory from `[pods] issuer` and renewed like any issued certificate, or read
//! from `[pods] cert_dir`/<identity path>/{cert,key}.pem, written by an outside issuer and
//! reloaded when it changes. Either way it is held in the credentials' snapshot with the
//! node's, so rotation, revocation and the connection-lifetime rules apply unchanged.

mod api;
mod directory;
mod enrol;
mod error;
mod kube;
mod listeners;
/// Public for the fuzz targets (fuzz/), which check what the pod API lets through.
pub mod names;
mod records;
mod services;
mod view;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    str::FromStr as _,
    sync::Arc,
};

pub use api::{ApiError as PodApiError, PodApi};
pub use directory::Directory;
pub use enrol::Enrolment;
pub use error::{EnrolError, PodError, PodsError};
pub use kube::KubeClient;
use listeners::Opened;
use names::check_names;
use services::ServiceView;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use tunnel_pod_api::{PodSpec, PodStatus};
pub use view::PodView;

use crate::{
    config::{Config, PodCertificates, Pods as PodsConfig},
    credentials::Credentials,
    drain::DrainWatcher,
    ebpf::{PodSteering, QueueMigration, Steered},
    errors,
    identity::{PodNames, SpiffeId, TrustDomain},
    netns::{Netns, NetnsThread, PodNetwork},
    proxy::{inbound::InboundService, outbound::OutboundInputs, plaintext::PlaintextInputs},
    telemetry::PodMetrics,
};

/// The cluster view's two halves, to wait for their first sync and say what they hold.
pub struct ClusterSynced {
    pods: Arc<PodView>,
    services: Arc<ServiceView>,
}

impl ClusterSynced {
    /// Waits for the first complete list of Pods, Services and EndpointSlices, and logs
    /// what they hold.
    pub async fn wait(&self) {
        tokio::join!(self.pods.synced(), self.services.synced());
        let (pods, addresses) = self.pods.len();
        let (services, slices, endpoints) = self.services.len();
        info!(
            pods,
            addresses, services, slices, endpoints, "cluster view synced"
        );
    }
}

/// Where a pod's listeners go, from the node's config.
#[derive(Clone, Debug)]
struct Ports {
    outbound: u16,
    outbound_v6: Option<u16>,
    hbone: u16,
    plaintext: u16,
    backlog: u32,
}

/// The node's proxies and steering, which serve each pod's listeners too, and the directory
/// the outbound side asks about pod addresses.
pub struct PodServing {
    pub outbound: Arc<OutboundInputs>,
    pub directory: Arc<Directory>,
    pub inbound: InboundService,
    pub plaintext: Arc<PlaintextInputs>,
    pub steering: PodSteering,
    /// Attached to each pod listener's group, as to the node's listeners.
    pub queue_migration: QueueMigration,
}

/// The registered pods and what serving one takes.
pub struct PodManager {
    settings: PodsConfig,
    trust_domain: TrustDomain,
    ports: Ports,
    credentials: Arc<Credentials>,
    outbound: Arc<OutboundInputs>,
    inbound: InboundService,
    plaintext: Arc<PlaintextInputs>,
    steering: PodSteering,
    queue_migration: QueueMigration,
    thread: NetnsThread,
    directory: Arc<Directory>,
    kube: Option<Arc<KubeClient>>,
    /// The cluster's pods, kept by a watch, when there is an API to watch.
    view: Option<Arc<PodView>>,
    /// The cluster's Services and their endpoints, kept by a watch beside `view`.
    services: Option<Arc<ServiceView>>,
    records: records::Records,
    /// Enrolments of pods found running (`pods/enrol`).
    metrics: PodMetrics,
    /// By uid. One registration at a time: each is a handful of syscalls on the namespace
    /// thread and at most one API call.
    registered: tokio::sync::Mutex<BTreeMap<String, Registered>>,
}

/// A pod being served. Dropping it closes its listeners (their tasks are aborted).
struct Registered {
    spec: PodSpec,
    status: PodStatus,
    name: String,
    id: SpiffeId,
    ips: Vec<IpAddr>,
    netns: Arc<Netns>,
    tasks: Vec<JoinHandle<()>>,
    steered: Steered,
}

impl Drop for Registered {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl PodManager {
    pub fn new(
        config: &Config,
        settings: &PodsConfig,
        credentials: Arc<Credentials>,
        serving: PodServing,
        metrics: PodMetrics,
    ) -> Result<Self, PodsError> {
        let PodServing {
            outbound,
            directory,
            inbound,
            plaintext,
            steering,
            queue_migration,
        } = serving;
        let records =
            records::Records::open(&settings.state_dir).map_err(|source| PodsError::StateDir {
                dir: settings.state_dir.clone(),
                source,
            })?;
        if let PodCertificates::Files { dir } = &settings.certificates {
            // Watched for changes from the start, before an outside issuer has written to it.
            std::fs::create_dir_all(&dir.value).map_err(|source| PodsError::StateDir {
                dir: dir.value.clone(),
                source,
            })?;
        }
        let kube = KubeClient::new(&config.kubernetes)
            .map_err(PodsError::Kubernetes)?
            .map(Arc::new);
        // Other nodes' pods are known from a watch of the API (started by `follow_cluster`).
        let view = kube.as_ref().map(|_| {
            Arc::new(PodView::new(view::Naming {
                template: settings.spiffe_id.clone(),
                trust_domain: config.trust_domain.clone(),
                node_name: config.kubernetes.node_name.clone(),
            }))
        });
        if let Some(view) = &view {
            directory.follow_cluster(view.clone());
        }
        let services = kube
            .as_ref()
            .map(|_| Arc::new(ServiceView::new(config.kubernetes.node_name.as_deref())));
        if let Some(services) = &services {
            directory.follow_services(services.clone());
        }
        Ok(Self {
            settings: settings.clone(),
            trust_domain: config.trust_domain.clone(),
            ports: Ports {
                outbound: config.listen.outbound.port(),
                outbound_v6: config.listen.outbound_v6.map(|a| a.port()),
                hbone: config.outbound.peer_port,
                plaintext: config.listen.inbound_plaintext.port(),
                backlog: config.listen.backlog,
            },
            credentials,
            directory,
            outbound,
            inbound,
            plaintext,
            steering,
            queue_migration,
            thread: NetnsThread::start().map_err(PodsError::Thread)?,
            kube,
            view,
            services,
            records,
            metrics,
            registered: tokio::sync::Mutex::default(),
        })
    }

    /// Keeps the cluster view for good (a watch of every Pod, Service and EndpointSlice),
    /// if there is an API to watch: what calls to other nodes' pods expect, and where calls
    /// to a Service go. The future returned with it waits for the first complete sync.
    pub fn follow_cluster(&self) -> Option<(ClusterSynced, impl Future<Output = ()> + use<>)> {
        let (view, services, kube) = (
            self.view.clone()?,
            self.services.clone()?,
            self.kube.as_ref()?,
        );
        let client = kube.client();
        let (pods, following) = (view.clone(), services.clone());
        let synced = ClusterSynced { pods, services };
        Some((synced, async move {
            tokio::join!(view.follow(client.clone()), following.follow(client));
        }))
    }

    /// Takes back the pods recorded by an earlier run. A pod whose namespace is gone (it
    /// was deleted while no daemon ran) is forgotten; one that fails otherwise is kept on
    /// record and said, so a later restart tries again.
    pub async fn restore(&self, drain: &DrainWatcher) {
        let records::Loaded { pods, unreadable } = match self.records.load() {
            Ok(loaded) => loaded,
            Err(e) => {
                warn!(dir = %self.settings.state_dir.display(), error = %e, "cannot read the pod records: no pod taken back");
                return;
            }
        };
        for (path, error) in unreadable {
            warn!(file = %path.display(), %error, "not a pod record; left alone");
        }
        // An earlier run's steering stays in place while each pod is taken back (its
        // plaintext is dropped meanwhile); then what no pod claims goes.
        for spec in pods {
            let pod = format!("{}/{}", spec.namespace, spec.name);
            if !spec.netns.exists() {
                info!(%pod, uid = %spec.uid, netns = %spec.netns.display(), "recorded pod's network namespace is gone: forgotten");
                let _ = self.records.remove(&spec.uid);
                continue;
            }
            match self.add(spec.clone(), drain).await {
                Ok(status) => {
                    info!(%pod, uid = %status.uid, spiffe_id = %status.spiffe_id, "pod taken back from the records")
                }
                Err(e) => {
                    warn!(%pod, uid = %spec.uid, "recorded pod not taken back: {}", errors::chain(&e))
                }
            }
        }
        let registered = self.registered.lock().await;
        let keep: BTreeSet<String> = registered.keys().cloned().collect();
        let addresses: Vec<IpAddr> = registered.values().flat_map(|p| p.ips.clone()).collect();
        drop(registered);
        self.steering.forget_addresses_except(&addresses);
        let swept = self.steering.sweep(&keep);
        if !swept.is_empty() {
            info!(pods = ?swept, "steering of pods not taken back removed");
        }
    }

    /// Registers a pod: opens its listeners, issues its certificate, records it. A pod
    /// already registered with the same uid and namespace is answered as it is.
    pub async fn add(&self, spec: PodSpec, drain: &DrainWatcher) -> Result<PodStatus, PodError> {
        check_names(&spec)?;
        let mut registered = self.registered.lock().await;
        if let Some(existing) = registered.get(&spec.uid) {
            if existing.spec.netns == spec.netns {
                return Ok(existing.status.clone());
            }
            // A new sandbox for the same pod: the old one's listeners go.
            let old = registered.remove(&spec.uid).expect("just seen");
            self.release(&old);
        }
        self.register_and_record(&mut registered, spec, drain, true)
            .await
    }

    /// Registers a pod found running on the node (`pods/enrol`), unless it is registered
    /// by now (a CNI ADD won the race, whatever namespace path it gave): `None` then.
    /// Recorded unless `recorded` is false (see `pods/enrol`).
    async fn add_unless_registered(
        &self,
        spec: PodSpec,
        drain: &DrainWatcher,
        recorded: bool,
    ) -> Result<Option<PodStatus>, PodError> {
        check_names(&spec)?;
        let mut registered = self.registered.lock().await;
        if registered.contains_key(&spec.uid) {
            return Ok(None);
        }
        self.register_and_record(&mut registered, spec, drain, recorded)
            .await
            .map(Some)
    }

    /// What an ADD does once the pod is known not to be registered: serve it, and record it
    /// (if `recorded`).
    async fn register_and_record(
        &self,
        registered: &mut BTreeMap<String, Registered>,
        spec: PodSpec,
        drain: &DrainWatcher,
        recorded: bool,
    ) -> Result<PodStatus, PodError> {
        let registering = self.register(&spec, drain).await?;
        let saved = if recorded {
            self.records.save(&spec)
        } else {
            Ok(())
        };
        if let Err(source) = saved {
            self.release(&registering);
            return Err(PodError::SaveRecord {
                dir: self.settings.state_dir.clone(),
                source,
            });
        }
        let status = registering.status.clone();
        info!(
            pod = %registering.name, uid = %spec.uid, spiffe_id = %registering.id,
            ips = ?registering.ips, netns = %spec.netns.display(), listeners = ?status.listeners,
            "pod registered"
        );
        registered.insert(spec.uid.clone(), registering);
        Ok(status)
    }

    /// Forgets a pod: closes its listeners; its connections take no new streams and end
    /// with their own. Whether it was registered.
    pub async fn del(&self, uid: &str) -> Result<bool, PodError> {
        let removed = self.registered.lock().await.remove(uid);
        let record = self.records.remove(uid);
        let Some(pod) = removed else {
            record.map_err(PodError::RemoveRecord)?;
            return Ok(false);
        };
        self.release(&pod);
        info!(pod = %pod.name, uid, spiffe_id = %pod.id, "pod removed");
        record.map_err(PodError::RecordStays)?;
        Ok(true)
    }

    /// Forgets, every [`VANISHED_CHECK`], the pods whose network namespace is gone without a
    /// DEL (a runtime that crashed, a namespace deleted by hand): the daemon's open
    /// namespace file would otherwise keep the namespace, its listeners and its certificate
    /// alive for good.
    pub async fn forget_vanished_forever(self: Arc<Self>) {
        loop {
            tokio::time::sleep(VANISHED_CHECK).await;
            let vanished: Vec<(String, String, std::path::PathBuf)> = {
                let registered = self.registered.lock().await;
                registered
                    .values()
                    .filter(|pod| !names_its_namespace(pod))
                    .map(|pod| {
                        (
                            pod.spec.uid.clone(),
                            pod.name.clone(),
                            pod.spec.netns.clone(),
                        )
                    })
                    .collect()
            };
            for (uid, name, netns) in vanished {
                info!(pod = %name, %uid, netns = %netns.display(), "the pod's network namespace is gone: the pod is removed");
                if let Err(e) = self.del(&uid).await {
                    warn!(pod = %name, %uid, "removing a vanished pod: {}", errors::chain(&e));
                }
            }
        }
    }

    /// The pod, if it is registered and its listeners are served.
    pub async fn check(&self, uid: &str) -> Result<PodStatus, PodError> {
        let registered = self.registered.lock().await;
        let pod = registered
            .get(uid)
            .ok_or_else(|| PodError::NotRegistered(uid.into()))?;
        if pod.tasks.iter().any(JoinHandle::is_finished) {
            return Err(PodError::ListenerStopped(pod.name.clone()));
        }
        if !names_its_namespace(pod) {
            return Err(PodError::NetnsChanged {
                name: pod.name.clone(),
                netns: pod.spec.netns.clone(),
            });
        }
        Ok(pod.status.clone())
    }

    pub async fn list(&self) -> Vec<PodStatus> {
        self.registered
            .lock()
            .await
            .values()
            .map(|p| p.status.clone())
            .collect()
    }

    fn release(&self, pod: &Registered) {
        // Steering first: the pod's plaintext is dropped from here on, not delivered.
        self.steering.unsteer(&pod.steered);
        if let Err(e) = self.steering.detach(&pod.spec.uid) {
            warn!(pod = %pod.name, "cannot detach the pod's steering: {}", errors::chain(&e));
        }
        for task in &pod.tasks {
            task.abort();
        }
        self.directory.remove(&pod.ips, &pod.id);
        self.credentials.remove(&pod.name);
        self.outbound.pool.forget(&pod.name);
    }

    async fn register(&self, spec: &PodSpec, drain: &DrainWatcher) -> Result<Registered, PodError> {
        let name = format!("{}/{}", spec.namespace, spec.name);
        let netns = Arc::new(
            Netns::open(&spec.netns).map_err(|source| PodError::OpenNetns {
                path: spec.netns.clone(),
                source,
            })?,
        );
        let ips = self
            .thread
            .addresses(&netns)
            .await
            .map_err(PodError::Addresses)?;
        if ips.is_empty() {
            return Err(PodError::NoAddress(spec.netns.clone()));
        }
        let id = self.identity(spec).await?;
        self.credentials
            .add(&name, &id, self.settings.certificates.source(&id))
            .map_err(|source| PodError::Certificate {
                id: id.clone(),
                source: Box::new(source),
            })?;
        let network = PodNetwork {
            netns: netns.clone(),
            thread: self.thread.clone(),
            addresses: ips.clone().into(),
        };
        let uid = spec.uid.as_str();
        match self
            .open_listeners(uid, &name, &id, &ips, &network, drain)
            .await
        {
            Ok(Opened {
                tasks,
                described: listeners,
                steered,
            }) => {
                self.directory.insert(&ips, &id);
                let status = PodStatus {
                    namespace: spec.namespace.clone(),
                    name: spec.name.clone(),
                    uid: spec.uid.clone(),
                    netns: spec.netns.clone(),
                    spiffe_id: id.to_string(),
                    ips: ips.iter().map(ToString::to_string).collect(),
                    listeners,
                };
                Ok(Registered {
                    spec: spec.clone(),
                    status,
                    name,
                    id,
                    ips,
                    netns,
                    tasks,
                    steered,
                })
            }
            Err(e) => {
                self.credentials.remove(&name);
                Err(e)
            }
        }
    }

    async fn identity(&self, spec: &PodSpec) -> Result<SpiffeId, PodError> {
        if let Some(given) = &spec.spiffe_id {
            let id = SpiffeId::from_str(given).map_err(PodError::BadSpiffeId)?;
            if id.trust_domain() != &self.trust_domain {
                return Err(PodError::OtherTrustDomain {
                    id,
                    trust_domain: self.trust_domain.to_string(),
                });
            }
            return Ok(id);
        }
        let template = &self.settings.spiffe_id;
        let service_account = if template.needs_service_account() {
            let kube = self
                .kube
                .as_ref()
                .ok_or_else(|| PodError::NoKubernetesApi {
                    template: template.to_string(),
                })?;
            Some(
                kube.pod(&spec.namespace, &spec.name, &spec.uid)
                    .await?
                    .service_account,
            )
        } else {
            None
        };
        template
            .render(&PodNames {
                trust_domain: &self.trust_domain,
                namespace: &spec.namespace,
                name: &spec.name,
                service_account: service_account.as_deref(),
            })
            .map_err(PodError::Identity)
    }
}

/// How often pods whose namespace vanished without a DEL are looked for.
const VANISHED_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether the pod's netns path still names the namespace it was registered with.
fn names_its_namespace(pod: &Registered) -> bool {
    Netns::open(&pod.spec.netns)
        .and_then(|now| Ok(now.inode()? == pod.netns.inode()?))
        .unwrap_or(false)
}
