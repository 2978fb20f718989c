//! The daemon's Kubernetes API client, through kube-rs: a pod's Pod object at its
//! registration (its service account is its identity; the uid and node are checked), and
//! the client that `pods/view` watches every Pod with. The address comes from `[kubernetes]
//! api_server` or the in-cluster environment; the CA bundle and the token are files kube-rs
//! reads again as they rotate.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use ::kube::{Api, Client, config::AuthInfo, runtime::watcher};
use k8s_openapi::api::core::v1::Pod;

use crate::config::{ApiServer, ApiServerError, Kubernetes};

/// In-cluster defaults (what every pod, the DaemonSet's included, is given).
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// One call, connection included.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The in-cluster environment names no usable API server.
    #[error("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT")]
    InCluster(#[source] ApiServerError),
    /// kube-rs could not make a client of the configuration. kube-rs's errors print their
    /// cause in their message, so it is kept as text (a leaf), said once.
    #[error("cannot make a Kubernetes API client for {at}: {detail}")]
    Client { at: String, detail: String },
    #[error("GET {path} from {at}: HTTP {code}: {message}")]
    Status {
        path: String,
        at: String,
        code: u16,
        message: String,
    },
    #[error("GET {path} from {at}: {detail}")]
    Get {
        path: String,
        at: String,
        detail: String,
    },
    #[error("the Kubernetes API did not answer GET {path} within {CALL_TIMEOUT:?}")]
    Timeout { path: String },
    #[error(
        "the Kubernetes API's pod {namespace}/{name} has uid {found}, not {uid}: another pod of that name"
    )]
    OtherUid {
        namespace: String,
        name: String,
        found: String,
        uid: String,
    },
    #[error(
        "the Kubernetes API places pod {namespace}/{name} on node {theirs}, not on this node ({ours})"
    )]
    OtherNode {
        namespace: String,
        name: String,
        theirs: String,
        ours: String,
    },
}

/// The cluster view's watch of one kind: kube-rs's watcher (list, then watch from the list's
/// resourceVersion, bookmarks, a relist after 410 Gone), its errors passed on to be logged,
/// and a pause after each error but a 410's, whose relist is the remedy and is made at once.
/// The pause: 0.5 s doubling to at most 8 s, with jitter (at most half as much again), back
/// to 0.5 s after any event. kube-rs's default grows to 30 s with jitter doubling it, and
/// pauses after a 410 too: after a 30 s API outage with its history compacted, a node then
/// took up to a minute to catch up, against seconds now, while a fleet of nodes still asks
/// a recovering API server at most about once per 8 s each, spread by the jitter.
pub fn watch<K>(
    api: Api<K>,
    config: ::kube::runtime::watcher::Config,
) -> impl futures::Stream<Item = ::kube::runtime::watcher::Result<::kube::runtime::watcher::Event<K>>>
+ Send
where
    K: ::kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    use ::kube::runtime::watcher::Error;
    use futures::StreamExt as _;

    const FIRST_PAUSE: Duration = Duration::from_millis(500);
    const LONGEST_PAUSE: Duration = Duration::from_secs(8);
    struct State<S> {
        events: S,
        pause: Duration,
        pause_next: Option<Duration>,
    }
    let state = State {
        events: watcher(api, config).boxed(),
        pause: FIRST_PAUSE,
        pause_next: None,
    };
    futures::stream::unfold(state, |mut state| async move {
        if let Some(pause) = state.pause_next.take() {
            tokio::time::sleep(pause).await;
        }
        let event = state.events.next().await?;
        match &event {
            Err(Error::WatchError(status)) if status.code == 410 => {}
            Err(_) => {
                let jitter = state.pause.mul_f64(fastrand::f64() / 2.0);
                state.pause_next = Some(state.pause + jitter);
                state.pause = (state.pause * 2).min(LONGEST_PAUSE);
            }
            Ok(_) => state.pause = FIRST_PAUSE,
        }
        Some((event, state))
    })
}

/// What the daemon learns of a pod.
#[derive(Debug, PartialEq, Eq)]
pub struct PodFacts {
    pub service_account: String,
}

pub struct KubeClient {
    client: Client,
    /// "the Kubernetes API at host:port", for messages.
    at: String,
    node_name: Option<String>,
}

impl KubeClient {
    /// From `[kubernetes]` and the in-cluster environment; `Ok(None)` when neither names an
    /// API server (the daemon then needs `--spiffe-id` for pods whose template asks for a
    /// service account, and knows no other node's pods).
    pub fn new(config: &Kubernetes) -> Result<Option<Self>, KubeError> {
        let server = match &config.api_server {
            Some(server) => server.clone(),
            None => match (
                std::env::var("KUBERNETES_SERVICE_HOST"),
                std::env::var("KUBERNETES_SERVICE_PORT"),
            ) {
                (Ok(host), Ok(port)) => {
                    let host = if host.contains(':') {
                        format!("[{host}]")
                    } else {
                        host
                    };
                    format!("https://{host}:{}", port.trim())
                        .parse::<ApiServer>()
                        .map_err(KubeError::InCluster)?
                }
                _ => return Ok(None),
            },
        };
        let at = format!("the Kubernetes API at {server}");
        let file = |given: &Option<PathBuf>, name: &str| {
            given
                .clone()
                .unwrap_or_else(|| Path::new(SERVICE_ACCOUNT_DIR).join(name))
        };
        let url: http::Uri =
            format!("https://{server}")
                .parse()
                .map_err(|e: http::uri::InvalidUri| KubeError::Client {
                    at: at.clone(),
                    detail: e.to_string(),
                })?;
        let mut kube_config = ::kube::Config::new(url);
        // Both re-read by kube-rs as they rotate (projected tokens do, hourly).
        let ca_file = file(&config.ca_file, "ca.crt");
        // The certificates themselves too: without them kube-rs first sets up the system's
        // trust store (and fails where there is none, as in the image, which has no CA
        // certificates) before it hands verification to the file's.
        kube_config.root_cert =
            Some(
                ca_certificates(&ca_file).map_err(|detail| KubeError::Client {
                    at: at.clone(),
                    detail,
                })?,
            );
        kube_config.root_cert_file = Some(ca_file);
        kube_config.auth_info = AuthInfo {
            token_file: Some(file(&config.token_file, "token").display().to_string()),
            ..AuthInfo::default()
        };
        kube_config.connect_timeout = Some(CALL_TIMEOUT);
        let client = Client::try_from(kube_config).map_err(|e| KubeError::Client {
            at: at.clone(),
            detail: e.to_string(),
        })?;
        Ok(Some(Self {
            client,
            at,
            node_name: config.node_name.clone(),
        }))
    }

    /// The client, for the pod view's watch.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The pod's service account, once the API confirms it is the pod registered (same uid)
    /// and runs on this node.
    pub async fn pod(&self, namespace: &str, name: &str, uid: &str) -> Result<PodFacts, KubeError> {
        let path = format!("/api/v1/namespaces/{namespace}/pods/{name}");
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let pod = match tokio::time::timeout(CALL_TIMEOUT, pods.get(name)).await {
            Err(_) => return Err(KubeError::Timeout { path }),
            Ok(Err(::kube::Error::Api(status))) => {
                return Err(KubeError::Status {
                    path,
                    at: self.at.clone(),
                    code: status.code,
                    message: status.message.clone(),
                });
            }
            Ok(Err(e)) => {
                return Err(KubeError::Get {
                    path,
                    at: self.at.clone(),
                    detail: e.to_string(),
                });
            }
            Ok(Ok(pod)) => pod,
        };
        let found = pod.metadata.uid.clone().unwrap_or_default();
        if found != uid {
            return Err(KubeError::OtherUid {
                namespace: namespace.into(),
                name: name.into(),
                found,
                uid: uid.into(),
            });
        }
        let spec = pod.spec.unwrap_or_default();
        if let (Some(ours), Some(theirs)) = (&self.node_name, &spec.node_name)
            && ours != theirs
        {
            return Err(KubeError::OtherNode {
                namespace: namespace.into(),
                name: name.into(),
                theirs: theirs.clone(),
                ours: ours.clone(),
            });
        }
        // A pod with no service account named runs as `default`, as Kubernetes does.
        let service_account = spec
            .service_account_name
            .filter(|sa| !sa.is_empty())
            .unwrap_or_else(|| "default".into());
        Ok(PodFacts { service_account })
    }
}

/// The API server's CA certificates (DER) from its PEM file: one at least.
fn ca_certificates(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    use rustls_pki_types::{CertificateDer, pem::PemObject as _};
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(certs.into_iter().map(|c| c.to_vec()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kube_error_is_a_leaf_said_once() {
        let errors = [
            KubeError::Client {
                at: "the Kubernetes API at 10.96.0.1:443".into(),
                detail: "the cause".into(),
            },
            KubeError::Get {
                path: "/api/v1/namespaces/shop/pods/a".into(),
                at: "the Kubernetes API at 10.96.0.1:443".into(),
                detail: "the cause".into(),
            },
        ];
        for error in errors {
            assert!(std::error::Error::source(&error).is_none());
            let text = crate::errors::chain(&error);
            assert_eq!(text.matches("the cause").count(), 1, "{text}");
        }
    }

    #[test]
    fn the_ca_file_gives_its_certificates_or_says_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::ca::init(&crate::ca::InitOptions {
            trust_domain: "example.org".parse().unwrap(),
            out: dir.path().join("ca"),
            force: false,
            root_ttl: crate::ca::DEFAULT_ROOT_TTL,
            intermediate_ttl: crate::ca::DEFAULT_INTERMEDIATE_TTL,
        });
        ca.unwrap();
        let bundle = dir.path().join("ca/bundle.pem");
        assert_eq!(ca_certificates(&bundle).unwrap().len(), 1);
        let empty = dir.path().join("empty.crt");
        std::fs::write(&empty, "").unwrap();
        let error = ca_certificates(&empty).unwrap_err();
        assert!(error.contains("no certificate"), "{error}");
        let missing = ca_certificates(&dir.path().join("missing.crt")).unwrap_err();
        assert!(missing.contains("missing.crt"), "{missing}");
    }

    #[test]
    fn a_bad_in_cluster_address_names_the_variables_then_the_fault() {
        let fault = "https://10.96.0.1:x".parse::<ApiServer>().unwrap_err();
        let text = crate::errors::chain(&KubeError::InCluster(fault));
        assert_eq!(
            text,
            "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT: \"https://10.96.0.1:x\": \"x\" is not a port"
        );
    }
}
