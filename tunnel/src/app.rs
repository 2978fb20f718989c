//! The daemon's life: check the host, resolve the config against it (cgroups, certificates),
//! bind every listener and attach every program (so a failure stops startup instead of
//! half-running), serve, drain.

mod reload;
mod runtimes;
pub mod upgrade;
pub(crate) mod wiring;

use std::{
    collections::BTreeSet, future::Future, net::SocketAddr, path::PathBuf, sync::Arc,
    time::Duration,
};

use tracing::{debug, info, warn};

use runtimes::{RuntimeListeners, Runtimes};

use crate::{
    admin::{self, AdminError, AdminListener, ControlSocket, HealthListener, Readiness},
    cgroup::{self, CgroupDir},
    config::{Config, ConfigError, Located, Problem},
    credentials::Credentials,
    drain::{self, DrainOutcome},
    ebpf::{self, Capture, CaptureParts, CaptureSpec, CaptureState, EbpfError},
    errors,
    kernel::{self, Missing},
    mounts::MountTable,
    pods::{self, PodApi, PodApiError, PodManager, PodServing, PodsError},
    policy::LivePolicy,
    proxy::budget::BufferBudget,
    proxy::{
        destination::{self, Destinations},
        inbound::{Inbound, InboundError, InboundService, nonlocal_bind},
        outbound::{Outbound, OutboundError, OutboundInputs},
        plaintext::{Plaintext, PlaintextError, PlaintextInputs},
    },
    systemd,
    telemetry::Telemetry,
};

/// Why the daemon could not start; each maps to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("this host cannot run tunnel:\n{}", .0.iter().map(|m| format!("  - {m}")).collect::<Vec<_>>().join("\n"))]
    Kernel(Vec<Missing>),
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error("failed to install capture")]
    Ebpf(#[from] EbpfError),
    #[error(transparent)]
    Outbound(#[from] OutboundError),
    #[error(transparent)]
    Inbound(#[from] InboundError),
    #[error(transparent)]
    Plaintext(#[from] PlaintextError),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error(transparent)]
    PodApi(#[from] PodApiError),
    #[error(transparent)]
    Pods(#[from] PodsError),
    #[error("cannot start the data-plane runtimes ([runtime] threads)")]
    Runtimes(#[source] std::io::Error),
    #[error("cannot attach migrate_queued to the listener {addr}")]
    MigrateQueue {
        addr: String,
        source: std::io::Error,
    },
}

impl StartError {
    /// sysexits(3): 64 for a bad config, 69 for a host that lacks what we need, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) => 64,
            Self::Kernel(_) | Self::Cgroup(_) => 69,
            Self::Ebpf(_)
            | Self::Outbound(_)
            | Self::Inbound(_)
            | Self::Plaintext(_)
            | Self::Admin(_)
            | Self::PodApi(_)
            | Self::Pods(_)
            | Self::Runtimes(_)
            | Self::MigrateQueue { .. } => 1,
        }
    }
}

/// A started daemon: listeners bound, capture installed, ready to serve.
pub struct Daemon {
    outbound: Outbound,
    outbound_inputs: Arc<OutboundInputs>,
    inbound: Inbound,
    inbound_service: InboundService,
    /// The policy in force (the admin API shows it).
    policy: Arc<LivePolicy>,
    plaintext: Plaintext,
    plaintext_inputs: Arc<PlaintextInputs>,
    reload: reload::Reload,
    credentials: Arc<Credentials>,
    telemetry: Arc<Telemetry>,
    /// Bound with the other listeners, served once the daemon is ready.
    admin: AdminListener,
    /// The probes' listener, likewise.
    health: HealthListener,
    /// The admin API for root, likewise.
    control: ControlSocket,
    /// The pod registration API and the registry behind it, with `[pods]`.
    pods: Option<(PodApi, Arc<PodManager>)>,
    config: Arc<Config>,
    capture: CaptureState,
    /// The data-plane runtimes beside the main one, waiting to serve.
    runtimes: Runtimes,
}

impl Daemon {
    pub async fn start(config: Config, telemetry: Arc<Telemetry>) -> Result<Self, StartError> {
        // Beside the rest of the start (BPF, certificates, listeners), so it adds no time.
        let crypto_warm_up = std::thread::Builder::new()
            .name("tunnel-warm-up".into())
            .spawn(crate::tls::warm_up);
        let mounts = MountTable::read().map_err(|e| {
            StartError::Kernel(vec![Missing {
                what: "mounts",
                detail: e.to_string(),
            }])
        })?;
        let missing = kernel::check(&mounts);
        if !missing.is_empty() {
            return Err(StartError::Kernel(missing));
        }
        refuse_nonlocal_bind()?;
        let own = cgroup::own(&mounts)?;
        let Resolved {
            capture_cgroup,
            workload_cgroups,
            credentials,
        } = resolve(&config, &mounts, &own)?;
        let credentials = Arc::new(credentials);
        let pattern = &config.outbound.peer_identity;
        // With only pods, callers reach pods (which present their own identities), never
        // this node's listener as a peer: the node's identity need not match.
        let pods_only = config.pods.is_some() && config.workloads.is_empty();
        if !pattern.matches(&config.node.spiffe_id) && !pods_only {
            // Peers usually share this setting, so they will refuse this daemon's certificate.
            warn!(
                "node identity {} does not match [outbound] peer_identity {pattern}: peers configured like this host will refuse this daemon",
                config.node.spiffe_id
            );
        }
        for workload in &config.workloads {
            for problem in credentials.workload_problems(&workload.name, &workload.spiffe_id) {
                warn!(workload = %workload.name, cert = %workload.credential.origin(), "workload certificate: {problem}");
            }
        }
        match crate::sys::raise_open_files_limit() {
            Ok(limit) if limit < 4096 => warn!(
                limit,
                "the open-files limit caps the daemon at about {} connections",
                limit / 2
            ),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "cannot raise the open-files limit"),
        }

        let mut outbound_addrs = vec![SocketAddr::V4(config.listen.outbound)];
        outbound_addrs.extend(config.listen.outbound_v6.map(SocketAddr::V6));
        let outbound = Outbound::bind(&outbound_addrs, config.listen.backlog)?;
        let mut inbound_addrs = vec![config.listen.inbound];
        inbound_addrs.extend(config.listen.inbound_v6.map(SocketAddr::V6));
        let inbound = Inbound::bind(&inbound_addrs, config.listen.backlog)?;
        let mut more_runtimes = Vec::new();
        for _ in 1..config.runtime.threads {
            more_runtimes.push(RuntimeListeners {
                outbound: Outbound::bind(&outbound_addrs, config.listen.backlog)?,
                inbound: Inbound::bind(&inbound_addrs, config.listen.backlog)?,
            });
        }
        let plaintext = Plaintext::bind(
            config.listen.inbound_plaintext,
            config.listen.inbound_plaintext_v6,
            config.listen.backlog,
        )?;
        let admin = AdminListener::bind(config.listen.admin, config.listen.backlog).await?;
        let health = HealthListener::bind(config.listen.health, config.listen.backlog).await?;
        let control = ControlSocket::bind(&config.listen.control)?;
        let pod_api = match &config.pods {
            Some(pods) => Some(PodApi::bind(&pods.socket)?),
            None => None,
        };

        let spec = CaptureSpec {
            cgroup: capture_cgroup,
            bpf_dir: config.capture.bpf_dir.value.clone(),
            listener_v4: config.listen.outbound,
            listener_v6: config.listen.outbound_v6,
            destinations: config.capture.destinations.clone(),
            exclude: config.capture.exclude.clone(),
            ports: config.capture.ports.clone(),
            exempt_cgroups: BTreeSet::from([own.id]),
            daemon_cgroup: own.path.clone(),
            sockmap: config.capture.sockmap,
            workload_cgroups: workload_cgroups.iter().map(|(_, id)| *id).collect(),
            steer_ports: config
                .workloads
                .iter()
                .flat_map(|w| w.ports.iter().copied())
                .collect(),
        };
        let capture = Capture::install(&spec, &plaintext.sockets())?;
        if !capture.retired_generations().is_empty() {
            info!(previous = ?capture.retired_generations(), "took over capture from an earlier run");
        }
        let CaptureParts {
            original_dst,
            delivery_marks,
            state: capture,
            pod_steering,
            queue_migration,
        } = capture.into_parts();
        // A takeover closes the old daemon's listeners while this one's serve beside them:
        // what is queued on those then moves here instead of being reset.
        let more_listening = more_runtimes
            .iter()
            .flat_map(|r| r.outbound.listening().chain(r.inbound.listening()));
        let listening = (outbound.listening())
            .chain(inbound.listening())
            .chain(more_listening)
            .chain(plaintext.listening())
            .chain([admin.listening(), health.listening()]);
        for listener in listening {
            queue_migration
                .attach(listener)
                .map_err(|source| StartError::MigrateQueue {
                    addr: listener
                        .local_addr()
                        .map_or_else(|e| format!("(unknown: {e})"), |a| a.to_string()),
                    source,
                })?;
        }
        // With pods, the outbound side asks their directory what a pod address is.
        let pod_directory = Arc::new(pods::Directory::default());
        let destinations: Arc<dyn Destinations> = match &config.pods {
            Some(_) => pod_directory.clone(),
            None => Arc::new(destination::Unknown),
        };
        // One budget for what both sides buffer (`proxy::budget`).
        let budget = BufferBudget::new(config.limits.max_buffered_bytes);
        telemetry.metrics.buffers.follow(budget.clone());
        let outbound_inputs = wiring::outbound_inputs(
            &config,
            &credentials,
            &workload_cgroups,
            original_dst,
            destinations,
            &telemetry,
            &budget,
        );
        let inbound_inputs =
            wiring::inbound_inputs(&config, &credentials, &telemetry, &budget, delivery_marks);
        telemetry.metrics.certificates.follow(&credentials);
        let plaintext_inputs = Arc::new(wiring::plaintext_inputs(&config, &inbound_inputs));
        let outbound_inputs = Arc::new(outbound_inputs);
        let policy = inbound_inputs.policy.clone();
        let reload = reload::Reload::new(
            &config,
            inbound_inputs.policy.clone(),
            inbound_inputs.live.clone(),
            credentials.clone(),
        );
        let inbound_service = InboundService::new(inbound_inputs)?;
        let runtimes = Runtimes::start(
            more_runtimes,
            &outbound_inputs,
            &inbound_service,
            &telemetry,
        )
        .await
        .map_err(StartError::Runtimes)?;
        let pods = match (pod_api, &config.pods) {
            (Some(api), Some(settings)) => {
                let manager = PodManager::new(
                    &config,
                    settings,
                    credentials.clone(),
                    PodServing {
                        outbound: outbound_inputs.clone(),
                        directory: pod_directory,
                        inbound: inbound_service.clone(),
                        plaintext: plaintext_inputs.clone(),
                        steering: pod_steering,
                        queue_migration,
                    },
                    telemetry.metrics.pods.clone(),
                )?;
                Some((api, Arc::new(manager)))
            }
            _ => None,
        };
        match crypto_warm_up.map(std::thread::JoinHandle::join) {
            Ok(Ok(took)) => debug!(took_ms = took.as_millis(), "crypto warmed up"),
            _ => warn!("crypto warm-up did not run; the first handshake will be slower"),
        }
        // What the start allocated and let go (the capture object's parse, the certificates'
        // PEM, the warm-up thread's arena) goes back to the system rather than stay resident
        // for the daemon's life.
        crate::sys::release_free_heap();
        info!(
            outbound = ?outbound.addresses(),
            inbound = ?inbound.addresses(),
            inbound_plaintext = ?plaintext.addresses(),
            admin = %config.listen.admin,
            health = %config.listen.health,
            control = %config.listen.control.display(),
            steered_ports = ?spec.steer_ports,
            node = %config.node.spiffe_id,
            workloads = config.workloads.len(),
            capture_cgroup = %spec.cgroup.path.display(),
            destinations = ?spec.destinations,
            bpf_dir = %spec.bpf_dir.display(),
            "tunnel ready"
        );
        Ok(Self {
            outbound,
            outbound_inputs,
            inbound,
            inbound_service,
            policy,
            plaintext,
            plaintext_inputs,
            reload,
            credentials,
            telemetry,
            admin,
            health,
            control,
            pods,
            config: Arc::new(config),
            capture,
            runtimes,
        })
    }

    /// Serves until `shutdown` resolves, then stops accepting and drains connections for up
    /// to `drain_deadline`. Capture stays installed: captured connects are refused until the
    /// next run takes over.
    ///
    /// Under a service manager (systemd's `Type=notify`), says when it is ready, reloading
    /// and stopping, pings its watchdog, and on SIGUSR2 starts the binary again beside itself
    /// to hand over to it (`app/upgrade`).
    pub async fn run(self, shutdown: impl Future<Output = ()>, drain_deadline: Duration) {
        let predecessor = upgrade::predecessor();
        let readiness = Arc::new(Readiness::new());
        let watchdog = systemd::watchdog().map(tokio::spawn);
        let upgrades = tokio::spawn(upgrade::on_sigusr2());
        let capture = Arc::new(self.capture);
        let map_counts = tokio::spawn(
            self.telemetry
                .metrics
                .capture
                .clone()
                .refresh_forever(capture.clone()),
        );
        let admin_state = Arc::new(admin::State {
            config: self.config,
            telemetry: self.telemetry,
            credentials: self.credentials.clone(),
            policy: self.policy,
            capture: Some(capture),
            readiness: readiness.clone(),
        });
        let health = tokio::spawn(self.health.serve(admin_state.clone()));
        let control = tokio::spawn(self.control.serve(admin_state.clone()));
        let admin = tokio::spawn(self.admin.serve(admin_state));
        let (trigger, watcher) = drain::channel();
        let pods_watcher = watcher.clone();
        let give_back = tokio::spawn(self.outbound_inputs.budget.clone().give_back_forever());
        let runtimes = self.runtimes.serve(&watcher);
        let outbound = tokio::spawn(self.outbound.run(self.outbound_inputs, watcher.clone()));
        let inbound = tokio::spawn(self.inbound.run(self.inbound_service, watcher.clone()));
        let plaintext = tokio::spawn(self.plaintext.run(self.plaintext_inputs, watcher));
        let reload = tokio::spawn(self.reload.run());
        let renewals = tokio::spawn(self.credentials.clone().renew_forever());
        let expiry = tokio::spawn(self.credentials.watch_expiry());
        // Ready once the recorded pods are served again: when another daemon is being
        // replaced (a rolling update), it is stopped only after this one is ready.
        let mut cluster_view = None;
        let mut cluster_synced = None;
        let mut enrol_with = None;
        let mut enrolling = None;
        let pods = match self.pods {
            Some((api, manager)) => {
                cluster_synced = manager.follow_cluster().map(|(synced, following)| {
                    cluster_view = Some(tokio::spawn(following));
                    synced
                });
                manager.restore(&pods_watcher).await;
                info!(socket = %api.path().display(), "pod API ready");
                let serving = tokio::spawn(api.serve(manager.clone(), pods_watcher.clone()));
                enrol_with = Some((manager, pods_watcher));
                Some(serving)
            }
            None => {
                // Held, it would keep the drain waiting for its whole deadline.
                drop(pods_watcher);
                None
            }
        };
        // Ready once the cluster's pods and Services are known too: until then a call to
        // another node's pod could only expect the peer pattern, and one to a Service would
        // be refused. Then the pods of this node that run without a registration (a
        // DaemonSet installed into a running cluster, a state directory lost) are enrolled
        // before readiness, so a node reported ready serves all its pods. Registrations are
        // served meanwhile, and a shutdown is not held up by an API server that never
        // answers.
        let became_ready = async {
            if let Some(synced) = &cluster_synced {
                synced.wait().await;
                if let Some((manager, watcher)) = enrol_with.take() {
                    let enrolment = manager.enrol_running(&watcher).await;
                    enrolling = Some(tokio::spawn(manager.enrol_forever(enrolment, watcher)));
                }
            }
            readiness.set_ready();
            upgrade::announce_ready(predecessor).await;
            std::future::pending::<()>().await;
        };
        tokio::select! {
            () = shutdown => {}
            () = became_ready => {}
        }
        // A shutdown before the cluster view was listed: the enrolment never started, and its
        // drain watcher must not hold the drain up.
        drop(enrol_with);
        readiness.set_draining();
        // Stopped by the daemon that took over, this one is no longer the service: the service
        // goes on.
        if !upgrade::handing_over() {
            systemd::stopping();
        }
        upgrades.abort();
        info!(deadline = ?drain_deadline, "shutting down: no new connections, draining open ones");
        match trigger.drain(drain_deadline).await {
            DrainOutcome::Complete => info!("drained"),
            DrainOutcome::TimedOut => {
                warn!("drain deadline passed; closing the remaining connections")
            }
        }
        runtimes.stop().await;
        outbound.abort();
        inbound.abort();
        plaintext.abort();
        reload.abort();
        if let Some(pods) = pods {
            pods.abort();
        }
        if let Some(view) = cluster_view {
            view.abort();
        }
        if let Some(enrolling) = enrolling {
            enrolling.abort();
        }
        renewals.abort();
        give_back.abort();
        map_counts.abort();
        expiry.abort();
        admin.abort();
        health.abort();
        control.abort();
        if let Some(watchdog) = watchdog {
            watchdog.abort();
        }
    }
}

/// The inbound side proves locality by binding; with non-local binds allowed that proof
/// would pass for any address (see `proxy::inbound::nonlocal_bind`).
fn refuse_nonlocal_bind() -> Result<(), StartError> {
    let set = nonlocal_bind::set_sysctls().map_err(|e| {
        StartError::Kernel(vec![Missing {
            what: "readable net.ipv4/ipv6.ip_nonlocal_bind",
            detail: e.to_string(),
        }])
    })?;
    if set.is_empty() {
        return Ok(());
    }
    Err(StartError::Kernel(vec![Missing {
        what: "non-local binds disabled",
        detail: format!(
            "{} set: the daemon proves a CONNECT's destination is this host's by binding to it, which \
             these sysctls make succeed for any address. Set them to 0 in the daemon's network namespace",
            set.join(" and ")
        ),
    }]))
}

/// What the config names on this host, checked against it.
struct Resolved {
    capture_cgroup: CgroupDir,
    /// Workload name and cgroup id, for workloads that call out.
    workload_cgroups: Vec<(String, u64)>,
    credentials: Credentials,
}

/// Resolves every path of the config on this host (cgroups, the pin directory, certificates
/// and keys) and judges what it finds, reporting every problem at once, each at its key, before
/// anything is bound or attached.
fn resolve(config: &Config, mounts: &MountTable, own: &CgroupDir) -> Result<Resolved, ConfigError> {
    let mut problems = Vec::new();
    let mut open_cgroup = |located: &Located<PathBuf>| {
        cgroup::open(&located.value, mounts)
            .map_err(|e| problems.push(Problem::at(&located.site, errors::chain(&e))))
            .ok()
    };
    let capture_cgroup = open_cgroup(&config.capture.cgroup);
    let mut workload_cgroups = Vec::new();
    for workload in &config.workloads {
        if let Some(dir) = workload.cgroup.as_ref().and_then(&mut open_cgroup) {
            workload_cgroups.push((workload.name.clone(), dir.id));
        }
    }
    if let Some(capture) = &capture_cgroup {
        problems.extend(shared_cgroup(config, own, capture, &workload_cgroups));
    }
    if let Err(e) = ebpf::check_bpf_dir(&config.capture.bpf_dir.value, mounts) {
        problems.push(Problem::at(&config.capture.bpf_dir.site, errors::chain(&e)));
    }
    let credentials = match Credentials::load(config, wiring::credentials_spec(config)) {
        Ok(credentials) => {
            problems.extend(credentials.refusals(config));
            Some(credentials)
        }
        Err(e) => {
            problems.extend(e.problems);
            None
        }
    };
    // In the order of the file, as the operator reads it.
    problems.sort_by_key(|p| p.line);
    match (capture_cgroup, credentials) {
        (Some(capture_cgroup), Some(credentials)) if problems.is_empty() => Ok(Resolved {
            capture_cgroup,
            workload_cgroups,
            credentials,
        }),
        _ => Err(ConfigError::new(&config.file, problems)),
    }
}

/// The daemon's own cgroup is exempt from capture; if it were the capture cgroup itself or a
/// workload's, those processes would silently go out uncaptured. Compared by cgroup id, as
/// the kernel programs see them: two paths can name one cgroup (a symlink, another mount of
/// the hierarchy, a trailing `/.`).
fn shared_cgroup(
    config: &Config,
    own: &CgroupDir,
    capture: &CgroupDir,
    workload_cgroups: &[(String, u64)],
) -> Option<Problem> {
    let shared_with = if own.id == capture.id {
        "the capture cgroup".to_string()
    } else {
        let (name, _) = workload_cgroups.iter().find(|(_, id)| *id == own.id)?;
        format!("the cgroup of workload {name:?}")
    };
    Some(Problem::at(
        &config.capture.cgroup.site,
        format!(
            "the daemon runs in cgroup {}, which is {shared_with}; the daemon's cgroup is exempt from capture, so \
             those processes would go out in plaintext. Run tunnel in a cgroup of its own (a systemd \
             service has one; by hand: mkdir CG/tunnel && echo $$ > CG/tunnel/cgroup.procs)",
            own.path.display()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const CONFIG: &str = r#"
trust_domain = "example.org"
trust_bundle = "bundle.pem"
[node]
spiffe_id = "spiffe://example.org/node/a"
cert = "node.pem"
key = "node.key"
[capture]
cgroup = "/sys/fs/cgroup/workloads"
destinations = ["10.0.0.0/24"]
[[workload]]
name = "frontend"
spiffe_id = "spiffe://example.org/frontend"
cert = "frontend.pem"
key = "frontend.key"
cgroup = "/sys/fs/cgroup/workloads/frontend"
"#;

    fn dir(path: &str, id: u64) -> CgroupDir {
        CgroupDir {
            path: path.into(),
            id,
        }
    }

    #[test]
    fn the_daemon_may_not_share_a_cgroup_it_exempts() {
        let config = Config::parse(CONFIG, Path::new("/etc/tunnel/tunnel.toml")).unwrap();
        let capture = dir("/sys/fs/cgroup/workloads", 10);
        let workloads = [("frontend".to_string(), 11)];
        let refused =
            |own: &CgroupDir| shared_cgroup(&config, own, &capture, &workloads).map(|p| p.message);
        assert_eq!(refused(&dir("/sys/fs/cgroup/tunnel", 12)), None);
        let message = refused(&dir("/sys/fs/cgroup/workloads", 10)).unwrap();
        assert!(message.contains("which is the capture cgroup"), "{message}");
        // Another path to the workload's cgroup (here: the hierarchy mounted elsewhere) is
        // the same cgroup.
        let message = refused(&dir("/mnt/cgroup2/workloads/frontend", 11)).unwrap();
        assert!(
            message.starts_with(
                "the daemon runs in cgroup /mnt/cgroup2/workloads/frontend, which is the cgroup \
                 of workload \"frontend\""
            ),
            "{message}"
        );
    }
}
