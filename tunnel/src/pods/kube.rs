//! The Kubernetes API calls the daemon makes: `GET /api/v1/namespaces/{ns}/pods/{name}` at a
//! pod's registration, for its service account (its identity) and to check that the pod is
//! the one registered (uid) and runs on this node; and `GET /api/v1/pods?fieldSelector=
//! status.podIP=<ip>`, for the identity a caller must expect of a pod on another node.
//!
//! Written over hyper and rustls, which the daemon already has, rather than with the `kube`
//! crate: one GET needs neither watches nor typed resources, and `kube` + `k8s-openapi` would
//! add a second HTTP and TLS stack to the build for it.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore, pki_types::ServerName};
use rustls_pki_types::{CertificateDer, pem::PemObject as _};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::{config::Kubernetes, tls::provider};

/// In-cluster defaults (what every pod, the DaemonSet's included, is given).
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// One call, connection included.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// A Pod object is a few KiB; anything far larger is not one.
const MAX_BODY: usize = 1024 * 1024;

/// What the daemon learns of a pod.
#[derive(Debug, PartialEq, Eq)]
pub struct PodFacts {
    pub service_account: String,
}

/// A pod found by its address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodAtAddress {
    pub namespace: String,
    pub name: String,
    pub service_account: String,
}

pub struct KubeClient {
    host: String,
    port: u16,
    token_file: PathBuf,
    tls: Arc<ClientConfig>,
    node_name: Option<String>,
}

impl KubeClient {
    /// From `[kubernetes]` and the in-cluster environment; `Ok(None)` when neither names an
    /// API server (the daemon then needs `--spiffe-id` for pods whose template asks for a
    /// service account).
    pub fn new(config: &Kubernetes) -> Result<Option<Self>, String> {
        let url = match &config.api_server {
            Some(url) => url.clone(),
            None => match (
                std::env::var("KUBERNETES_SERVICE_HOST"),
                std::env::var("KUBERNETES_SERVICE_PORT"),
            ) {
                (Ok(host), Ok(port)) if host.contains(':') => format!("https://[{host}]:{port}"),
                (Ok(host), Ok(port)) => format!("https://{host}:{port}"),
                _ => return Ok(None),
            },
        };
        let (host, port) = host_port(&url)?;
        let ca_file = config
            .ca_file
            .clone()
            .unwrap_or_else(|| Path::new(SERVICE_ACCOUNT_DIR).join("ca.crt"));
        let token_file = config
            .token_file
            .clone()
            .unwrap_or_else(|| Path::new(SERVICE_ACCOUNT_DIR).join("token"));
        let mut roots = RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(&ca_file)
            .map_err(|e| format!("cannot read the API server's CA {}: {e}", ca_file.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| {
                format!("cannot read the API server's CA {}: {e}", ca_file.display())
            })?;
            roots
                .add(cert)
                .map_err(|e| format!("the API server's CA {}: {e}", ca_file.display()))?;
        }
        let tls = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Some(Self {
            host,
            port,
            token_file,
            tls: Arc::new(tls),
            node_name: config.node_name.clone(),
        }))
    }

    /// The pod's service account, once the API confirms it is the pod registered (same uid)
    /// and runs on this node.
    pub async fn pod(&self, namespace: &str, name: &str, uid: &str) -> Result<PodFacts, String> {
        let path = format!("/api/v1/namespaces/{namespace}/pods/{name}");
        let pod: Pod = self.get_json(&path, "a Pod").await?;
        if pod.metadata.uid != uid {
            return Err(format!(
                "the Kubernetes API's pod {namespace}/{name} has uid {}, not {uid}: another pod of that name",
                pod.metadata.uid
            ));
        }
        if let (Some(ours), Some(theirs)) = (&self.node_name, &pod.spec.node_name)
            && ours != theirs
        {
            return Err(format!(
                "the Kubernetes API places pod {namespace}/{name} on node {theirs}, not on this node ({ours})"
            ));
        }
        Ok(PodFacts {
            service_account: pod.spec.service_account(),
        })
    }

    /// The pods the API has at `ip` that hold it (not host-network pods, which share their
    /// node's address, and not pods that have ended).
    pub async fn pods_at(&self, ip: std::net::IpAddr) -> Result<Vec<PodAtAddress>, String> {
        let path = format!("/api/v1/pods?fieldSelector=status.podIP%3D{ip}");
        let list: PodList = self.get_json(&path, "a PodList").await?;
        Ok(holders(list))
    }

    /// `GET path`, within [`CALL_TIMEOUT`], read as JSON of the kind `what` names.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        what: &str,
    ) -> Result<T, String> {
        let body = tokio::time::timeout(CALL_TIMEOUT, self.get(path))
            .await
            .map_err(|_| {
                format!("the Kubernetes API did not answer GET {path} within {CALL_TIMEOUT:?}")
            })??;
        serde_json::from_slice(&body)
            .map_err(|e| format!("the Kubernetes API's answer to GET {path} is not {what}: {e}"))
    }

    async fn get(&self, path: &str) -> Result<Bytes, String> {
        let at = || format!("the Kubernetes API at {}:{}", self.host, self.port);
        // Read per call: projected service-account tokens are rotated on disk.
        let token = std::fs::read_to_string(&self.token_file).map_err(|e| {
            format!(
                "cannot read the API token {}: {e}",
                self.token_file.display()
            )
        })?;
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", at()))?;
        let server_name =
            ServerName::try_from(self.host.clone()).map_err(|e| format!("{}: {e}", at()))?;
        let tls = TlsConnector::from(self.tls.clone())
            .connect(server_name, tcp)
            .await
            .map_err(|e| format!("TLS with {}: {e}", at()))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP with {}: {e}", at()))?;
        tokio::spawn(connection);
        let request = Request::get(path)
            .header(header::HOST, format!("{}:{}", self.host, self.port))
            .header(header::AUTHORIZATION, format!("Bearer {}", token.trim()))
            .header(header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("GET {path} from {}: {e}", at()))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("GET {path} from {}: {e}", at()))?
            .to_bytes();
        if !status.is_success() {
            // The API's Status object says why (forbidden by RBAC, not found...).
            let message = serde_json::from_slice::<Status>(&body)
                .map(|s| s.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body[..body.len().min(200)]).into());
            return Err(format!(
                "GET {path} from {}: HTTP {status}: {message}",
                at()
            ));
        }
        Ok(body)
    }
}

/// The pods of a list that hold their address: not host-network pods (they share their
/// node's), not pods that have ended.
fn holders(list: PodList) -> Vec<PodAtAddress> {
    list.items
        .into_iter()
        .filter(|pod| !pod.spec.host_network.unwrap_or(false))
        .filter(|pod| {
            !matches!(
                pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .map(|pod| PodAtAddress {
            service_account: pod.spec.service_account(),
            namespace: pod.metadata.namespace.unwrap_or_default(),
            name: pod.metadata.name.unwrap_or_default(),
        })
        .collect()
}

fn host_port(url: &str) -> Result<(String, u16), String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("{url:?}: the API server is reached over https:// only"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (
            host,
            port.parse::<u16>()
                .map_err(|_| format!("{url:?}: {port:?} is not a port"))?,
        ),
        _ => (authority, 443),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{url:?} names no host"));
    }
    Ok((host.into(), port))
}

#[derive(Deserialize)]
struct PodList {
    items: Vec<Pod>,
}

#[derive(Deserialize)]
struct Pod {
    metadata: Metadata,
    spec: Spec,
    status: Option<PodStatus>,
}

#[derive(Deserialize)]
struct Metadata {
    uid: String,
    name: Option<String>,
    namespace: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    service_account_name: Option<String>,
    node_name: Option<String>,
    host_network: Option<bool>,
}

impl Spec {
    /// A pod with no service account named runs as `default`, as Kubernetes does.
    fn service_account(&self) -> String {
        self.service_account_name
            .clone()
            .filter(|sa| !sa.is_empty())
            .unwrap_or_else(|| "default".into())
    }
}

#[derive(Deserialize)]
struct PodStatus {
    phase: Option<String>,
}

#[derive(Deserialize)]
struct Status {
    message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_server_urls() {
        assert_eq!(
            host_port("https://10.96.0.1:443").unwrap(),
            ("10.96.0.1".into(), 443)
        );
        assert_eq!(
            host_port("https://[fd00::1]:6443").unwrap(),
            ("fd00::1".into(), 6443)
        );
        assert_eq!(
            host_port("https://api.example").unwrap(),
            ("api.example".into(), 443)
        );
        assert!(host_port("http://10.96.0.1").is_err());
        assert!(host_port("https://h:x").unwrap_err().contains("not a port"));
    }

    #[test]
    fn only_live_pods_of_their_own_network_hold_an_address() {
        let json = r#"{"kind":"PodList","apiVersion":"v1","items":[
            {"metadata":{"name":"orders-1","namespace":"shop","uid":"a"},
             "spec":{"serviceAccountName":"orders"},"status":{"phase":"Running","podIP":"10.1.2.2"}},
            {"metadata":{"name":"old","namespace":"shop","uid":"b"},
             "spec":{"serviceAccountName":"batch"},"status":{"phase":"Succeeded","podIP":"10.1.2.2"}},
            {"metadata":{"name":"node-exporter","namespace":"mon","uid":"c"},
             "spec":{"hostNetwork":true},"status":{"phase":"Running","podIP":"10.1.2.2"}},
            {"metadata":{"name":"web","namespace":"shop","uid":"d"},
             "spec":{},"status":{"phase":"Pending"}}]}"#;
        let list: PodList = serde_json::from_str(json).unwrap();
        let holders = holders(list);
        assert_eq!(
            holders,
            vec![
                PodAtAddress {
                    namespace: "shop".into(),
                    name: "orders-1".into(),
                    service_account: "orders".into()
                },
                PodAtAddress {
                    namespace: "shop".into(),
                    name: "web".into(),
                    service_account: "default".into()
                },
            ]
        );
    }

    #[test]
    fn a_real_pod_object_gives_its_service_account() {
        // Trimmed from `kubectl get pod -o json` (Kubernetes 1.31).
        let json = r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"orders-7d9f","namespace":"shop",
            "uid":"6f1c2a9e-1b7e-4c1e-9d7a-2f5a8e0c3b11","labels":{"app":"orders"}},
            "spec":{"serviceAccountName":"orders","serviceAccount":"orders","nodeName":"node-a",
            "containers":[{"name":"app","image":"nginx"}]},"status":{"phase":"Running","podIP":"10.244.1.5"}}"#;
        let pod: Pod = serde_json::from_str(json).unwrap();
        assert_eq!(pod.spec.service_account_name.as_deref(), Some("orders"));
        assert_eq!(pod.spec.node_name.as_deref(), Some("node-a"));
        assert_eq!(pod.metadata.uid, "6f1c2a9e-1b7e-4c1e-9d7a-2f5a8e0c3b11");
    }
}
