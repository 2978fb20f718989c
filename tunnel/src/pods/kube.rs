//! The Kubernetes API calls the daemon makes: `GET /api/v1/namespaces/{ns}/pods/{name}` at a
//! pod's registration, for its service account (its identity) and to check that the pod is
//! the one registered (uid) and runs on this node; and `GET /api/v1/pods?fieldSelector=
//! status.podIP=<ip>`, for the identity a caller must expect of a pod on another node.
//!
//! Written over hyper and rustls, which the daemon already has, rather than with the `kube`
//! crate: one GET needs neither watches nor typed resources, and `kube` + `k8s-openapi` would
//! add a second HTTP and TLS stack to the build for it. The objects' shapes are in
//! `kube/objects`.

mod objects;

use std::{
    io,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore, pki_types::ServerName};
use rustls_pki_types::{CertificateDer, pem::PemObject as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use self::objects::{Pod, PodList, Status, holders};
use crate::{
    config::{ApiServer, Kubernetes},
    tls::provider,
};

/// In-cluster defaults (what every pod, the DaemonSet's included, is given).
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// One call, connection included.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// A Pod object is a few KiB; anything far larger is not one.
const MAX_BODY: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The in-cluster environment names no usable API server.
    #[error("{url:?}: {why}")]
    BadAddress { url: String, why: String },
    #[error("cannot read the API server's CA {path}")]
    ReadCa {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("the API server's CA {path}")]
    BadCa {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("cannot make a TLS configuration for the API server")]
    Tls(#[source] rustls::Error),
    #[error("cannot read the API token {path}")]
    Token { path: PathBuf, source: io::Error },
    #[error("cannot connect to {at}")]
    Connect { at: String, source: io::Error },
    #[error("{at}: {host:?} is not a TLS server name")]
    ServerName {
        at: String,
        host: String,
        source: rustls_pki_types::InvalidDnsNameError,
    },
    #[error("TLS with {at}")]
    Handshake { at: String, source: io::Error },
    #[error("HTTP with {at}")]
    Http { at: String, source: hyper::Error },
    #[error("GET {path} from {at}")]
    Get {
        path: String,
        at: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("GET {path} from {at}: HTTP {status}: {message}")]
    Status {
        path: String,
        at: String,
        status: StatusCode,
        message: String,
    },
    #[error("the Kubernetes API did not answer GET {path} within {CALL_TIMEOUT:?}")]
    Timeout { path: String },
    #[error("the Kubernetes API's answer to GET {path} is not {what}")]
    NotJson {
        path: String,
        what: &'static str,
        source: serde_json::Error,
    },
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
    server: ApiServer,
    token_file: PathBuf,
    tls: Arc<ClientConfig>,
    node_name: Option<String>,
}

impl KubeClient {
    /// From `[kubernetes]` and the in-cluster environment; `Ok(None)` when neither names an
    /// API server (the daemon then needs `--spiffe-id` for pods whose template asks for a
    /// service account).
    pub fn new(config: &Kubernetes) -> Result<Option<Self>, KubeError> {
        let server = match &config.api_server {
            Some(server) => server.clone(),
            None => match (
                std::env::var("KUBERNETES_SERVICE_HOST"),
                std::env::var("KUBERNETES_SERVICE_PORT"),
            ) {
                (Ok(host), Ok(port)) => ApiServer {
                    port: port.trim().parse().map_err(|_| KubeError::BadAddress {
                        url: format!("KUBERNETES_SERVICE_PORT={port}"),
                        why: "not a port".into(),
                    })?,
                    host,
                },
                _ => return Ok(None),
            },
        };
        let ca_file = config
            .ca_file
            .clone()
            .unwrap_or_else(|| Path::new(SERVICE_ACCOUNT_DIR).join("ca.crt"));
        let token_file = config
            .token_file
            .clone()
            .unwrap_or_else(|| Path::new(SERVICE_ACCOUNT_DIR).join("token"));
        let tls = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(KubeError::Tls)?
            .with_root_certificates(api_roots(&ca_file)?)
            .with_no_client_auth();
        Ok(Some(Self {
            server,
            token_file,
            tls: Arc::new(tls),
            node_name: config.node_name.clone(),
        }))
    }

    /// The pod's service account, once the API confirms it is the pod registered (same uid)
    /// and runs on this node.
    pub async fn pod(&self, namespace: &str, name: &str, uid: &str) -> Result<PodFacts, KubeError> {
        let path = format!("/api/v1/namespaces/{namespace}/pods/{name}");
        let pod: Pod = self.get_json(&path, "a Pod").await?;
        if pod.metadata.uid != uid {
            return Err(KubeError::OtherUid {
                namespace: namespace.into(),
                name: name.into(),
                found: pod.metadata.uid,
                uid: uid.into(),
            });
        }
        if let (Some(ours), Some(theirs)) = (&self.node_name, &pod.spec.node_name)
            && ours != theirs
        {
            return Err(KubeError::OtherNode {
                namespace: namespace.into(),
                name: name.into(),
                theirs: theirs.clone(),
                ours: ours.clone(),
            });
        }
        Ok(PodFacts {
            service_account: pod.spec.service_account(),
        })
    }

    /// The pods the API has at `ip` that hold it (not host-network pods, which share their
    /// node's address, and not pods that have ended).
    pub async fn pods_at(&self, ip: IpAddr) -> Result<Vec<PodAtAddress>, KubeError> {
        let path = format!("/api/v1/pods?fieldSelector=status.podIP%3D{ip}");
        let list: PodList = self.get_json(&path, "a PodList").await?;
        Ok(holders(list))
    }

    /// `GET path`, within [`CALL_TIMEOUT`], read as JSON of the kind `what` names.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        what: &'static str,
    ) -> Result<T, KubeError> {
        let body = tokio::time::timeout(CALL_TIMEOUT, self.get(path))
            .await
            .map_err(|_| KubeError::Timeout { path: path.into() })??;
        serde_json::from_slice(&body).map_err(|source| KubeError::NotJson {
            path: path.into(),
            what,
            source,
        })
    }

    async fn get(&self, path: &str) -> Result<Bytes, KubeError> {
        let at = format!("the Kubernetes API at {}", self.server);
        // Read per call: projected service-account tokens are rotated on disk.
        let token =
            std::fs::read_to_string(&self.token_file).map_err(|source| KubeError::Token {
                path: self.token_file.clone(),
                source,
            })?;
        let tcp = TcpStream::connect((self.server.host.as_str(), self.server.port))
            .await
            .map_err(|source| KubeError::Connect {
                at: at.clone(),
                source,
            })?;
        let server_name = ServerName::try_from(self.server.host.clone()).map_err(|source| {
            KubeError::ServerName {
                at: at.clone(),
                host: self.server.host.clone(),
                source,
            }
        })?;
        let tls = TlsConnector::from(self.tls.clone())
            .connect(server_name, tcp)
            .await
            .map_err(|source| KubeError::Handshake {
                at: at.clone(),
                source,
            })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|source| KubeError::Http {
                at: at.clone(),
                source,
            })?;
        tokio::spawn(connection);
        let failed = |source: Box<dyn std::error::Error + Send + Sync>| KubeError::Get {
            path: path.into(),
            at: at.clone(),
            source,
        };
        let request = Request::get(path)
            .header(header::HOST, self.server.to_string())
            .header(header::AUTHORIZATION, format!("Bearer {}", token.trim()))
            .header(header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| failed(e.into()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| failed(e.into()))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(failed)?
            .to_bytes();
        if !status.is_success() {
            // The API's Status object says why (forbidden by RBAC, not found...).
            let message = serde_json::from_slice::<Status>(&body)
                .map(|s| s.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body[..body.len().min(200)]).into());
            return Err(KubeError::Status {
                path: path.into(),
                at,
                status,
                message,
            });
        }
        Ok(body)
    }
}

/// The API server's CA bundle as roots.
fn api_roots(ca_file: &Path) -> Result<RootCertStore, KubeError> {
    let read = |source| KubeError::ReadCa {
        path: ca_file.into(),
        source,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(read)? {
        roots
            .add(cert.map_err(read)?)
            .map_err(|source| KubeError::BadCa {
                path: ca_file.into(),
                source,
            })?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_wrapper_prints_its_cause_once() {
        let io = || io::Error::other("the cause");
        let at = || "the Kubernetes API at 10.96.0.1:443".to_string();
        let cases = [
            KubeError::Token {
                path: "/var/run/token".into(),
                source: io(),
            },
            KubeError::Connect {
                at: at(),
                source: io(),
            },
            KubeError::Handshake {
                at: at(),
                source: io(),
            },
            KubeError::Get {
                path: "/api/v1/pods".into(),
                at: at(),
                source: "the cause".into(),
            },
        ];
        for error in cases {
            let text = crate::errors::chain(&error);
            assert_eq!(text.matches("the cause").count(), 1, "{text}");
        }
        assert_eq!(
            crate::errors::chain(&KubeError::Connect {
                at: at(),
                source: io()
            }),
            "cannot connect to the Kubernetes API at 10.96.0.1:443: the cause"
        );
    }
}
