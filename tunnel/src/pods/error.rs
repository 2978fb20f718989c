//! What can go wrong with pods: the node's pod support at start ([`PodsError`]), one
//! pod's registration, removal or check ([`PodError`], whose chain the registration API
//! answers with), and enrolling a pod found running on the node ([`EnrolError`]). Both follow the rule in `errors`: a leaf says everything, a wrapper names
//! its own step and leaves the cause to `source()`.

use std::{io, net::SocketAddr, path::PathBuf, sync::Arc};

use super::kube::KubeError;
use crate::{
    credentials::CredentialsError,
    ebpf::EbpfError,
    identity::{IdError, SpiffeId, TemplateError},
    telemetry::EnrolFailure,
};

#[derive(Debug, thiserror::Error)]
pub enum PodsError {
    #[error("cannot use the pod directory {}", .dir.display())]
    StateDir { dir: PathBuf, source: io::Error },
    #[error("cannot start the network namespace thread")]
    Thread(#[source] io::Error),
    #[error("[kubernetes]")]
    Kubernetes(#[source] KubeError),
}

#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("{what} {value:?} is not a Kubernetes name (lowercase letters, digits, '-' and '.')")]
    NotAName { what: &'static str, value: String },
    #[error("uid {0:?} is not a Kubernetes uid (letters, digits and '-')")]
    NotAUid(String),
    #[error("netns {} must be an absolute path", .0.display())]
    RelativeNetns(PathBuf),
    #[error("cannot open the pod's network namespace {}", .path.display())]
    OpenNetns { path: PathBuf, source: io::Error },
    #[error("cannot read the pod's addresses")]
    Addresses(#[source] io::Error),
    #[error(
        "the pod's network namespace {} has no address yet (tunnel-cni must be chained after the plugin that gives the pod its address)",
        .0.display()
    )]
    NoAddress(PathBuf),
    #[error(transparent)]
    BadSpiffeId(IdError),
    #[error("{id} is not of this node's trust domain {trust_domain}")]
    OtherTrustDomain { id: SpiffeId, trust_domain: String },
    #[error(
        "the identity template {template} needs the pod's service account, and no Kubernetes API is configured ([kubernetes] api_server, or in-cluster); register with a spiffe_id instead"
    )]
    NoKubernetesApi { template: String },
    #[error(transparent)]
    Kubernetes(#[from] KubeError),
    #[error(transparent)]
    Identity(TemplateError),
    #[error("cannot load the pod's certificate ({id})")]
    Certificate {
        id: SpiffeId,
        source: Box<CredentialsError>,
    },
    #[error("cannot open the {kind} listener {addr} in the pod")]
    Listen {
        kind: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("cannot attach migrate_queued to the {kind} listener {addr} in the pod")]
    MigrateQueue {
        kind: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("cannot read the pod's network namespace cookie")]
    NetnsCookie(#[source] io::Error),
    #[error("cannot read the node's addresses")]
    NodeAddresses(#[source] io::Error),
    #[error("cannot record the node's addresses")]
    RecordNodeAddresses(#[source] EbpfError),
    #[error("cannot steer the pod's inbound plaintext")]
    Steer(#[source] EbpfError),
    #[error("cannot attach inbound steering in the pod's namespace")]
    AttachSteering(#[source] EbpfError),
    #[error("cannot record the pod in {} (a restarted daemon would lose it)", .dir.display())]
    SaveRecord { dir: PathBuf, source: io::Error },
    #[error("cannot remove the pod's record")]
    RemoveRecord(#[source] io::Error),
    #[error("pod removed, but its record stays")]
    RecordStays(#[source] io::Error),
    #[error("pod uid {0} is not registered")]
    NotRegistered(String),
    #[error("pod {0}: a listener has stopped")]
    ListenerStopped(String),
    #[error("pod {name}: {} no longer names the namespace it was registered with", .netns.display())]
    NetnsChanged { name: String, netns: PathBuf },
}

/// Why a pod the cluster view places on this node, running without a registration, was not
/// enrolled. Each maps to one reason of the `tunnel_pod_enrolments_total` counter.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    /// Shared by every pod of the pass that met it.
    #[error("cannot list the node's processes in {}", .dir.display())]
    Processes {
        dir: PathBuf,
        source: Arc<io::Error>,
    },
    #[error(
        "no process of the node is in the pod's cgroup (none names pod{uid} in /proc/<pid>/cgroup): its sandbox is not running, or the daemon does not see the node's processes (hostPID)"
    )]
    NoProcess { uid: String },
    #[error("cannot read the network namespace of the pod's process {pid}")]
    Namespace { pid: u32, source: io::Error },
    #[error("cannot read the addresses in the network namespace {}", .path.display())]
    Addresses { path: PathBuf, source: io::Error },
    #[error(
        "no network namespace of the pod's processes holds an address the Kubernetes API gives it ({ips}): {found}"
    )]
    NotItsAddress { ips: String, found: String },
    #[error("cannot register the pod")]
    Add(#[source] PodError),
}

impl EnrolError {
    pub fn reason(&self) -> EnrolFailure {
        match self {
            Self::NoProcess { .. } => EnrolFailure::no_process,
            Self::Processes { .. } | Self::Namespace { .. } | Self::Addresses { .. } => {
                EnrolFailure::netns_unreadable
            }
            Self::NotItsAddress { .. } => EnrolFailure::address_not_in_netns,
            Self::Add(_) => EnrolFailure::add_failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::chain;

    fn once(text: &str, fact: &str) {
        assert_eq!(text.matches(fact).count(), 1, "{fact:?} once in {text:?}");
    }

    #[test]
    fn each_wrapper_prints_its_cause_once() {
        let io = || io::Error::other("the cause");
        let cases: Vec<Box<dyn std::error::Error>> = vec![
            Box::new(PodsError::StateDir {
                dir: "/var/lib/tunnel/pods".into(),
                source: io(),
            }),
            Box::new(PodsError::Thread(io())),
            Box::new(PodError::OpenNetns {
                path: "/run/netns/x".into(),
                source: io(),
            }),
            Box::new(PodError::Addresses(io())),
            Box::new(PodError::Certificate {
                id: "spiffe://example.org/ns/shop/sa/a".parse().unwrap(),
                source: Box::new(CredentialsError::Unusable {
                    source: rustls::Error::General("the cause".into()),
                }),
            }),
            Box::new(PodError::Listen {
                kind: "outbound",
                addr: "127.0.0.1:15001".parse().unwrap(),
                source: io(),
            }),
            Box::new(PodError::MigrateQueue {
                kind: "outbound",
                addr: "127.0.0.1:15001".parse().unwrap(),
                source: io(),
            }),
            Box::new(PodError::NetnsCookie(io())),
            Box::new(PodError::NodeAddresses(io())),
            Box::new(PodError::SaveRecord {
                dir: "/var/lib/tunnel/pods".into(),
                source: io(),
            }),
            Box::new(PodError::RemoveRecord(io())),
            Box::new(PodError::RecordStays(io())),
            Box::new(EnrolError::Processes {
                dir: "/proc".into(),
                source: Arc::new(io()),
            }),
            Box::new(EnrolError::Namespace {
                pid: 42,
                source: io(),
            }),
            Box::new(EnrolError::Addresses {
                path: "/proc/42/ns/net".into(),
                source: io(),
            }),
            Box::new(EnrolError::Add(PodError::Addresses(io()))),
        ];
        for error in cases {
            once(&chain(error.as_ref()), "the cause");
        }
        let state_dir = chain(&PodsError::StateDir {
            dir: "/var/lib/tunnel/pods".into(),
            source: io(),
        });
        assert_eq!(
            state_dir,
            "cannot use the pod directory /var/lib/tunnel/pods: the cause"
        );
    }
}
