//! `[pods]` and `[kubernetes]`: pods registered at run time, and how their service account
//! is read.

use std::path::PathBuf;

use super::{Checker, at};
use crate::{
    config::{
        ApiServer, DEFAULT_ISSUED_TTL, DEFAULT_POD_STATE_DIR, Kubernetes, PodCertificates, Pods,
        raw::{RawKubernetes, RawPods},
    },
    errors,
    identity::{IdTemplate, TrustDomain},
};

impl Checker<'_> {
    pub(super) fn pods(&mut self, raw: &RawPods, td: Option<&TrustDomain>) -> Option<Pods> {
        let path = at("pods");
        let socket = match &raw.socket {
            Some(text) => self
                .absolute_path(&path.key("socket"), text)
                .map(|l| l.value),
            None => Some(PathBuf::from(tunnel_pod_api::DEFAULT_SOCKET)),
        };
        let state_dir = match &raw.state_dir {
            Some(text) => self
                .absolute_path(&path.key("state_dir"), text)
                .map(|l| l.value),
            None => Some(PathBuf::from(DEFAULT_POD_STATE_DIR)),
        };
        let template = raw.spiffe_id.as_deref().unwrap_or(IdTemplate::ISTIO);
        let spiffe_id = td.and_then(|td| match IdTemplate::parse(template, td) {
            Ok(template) => Some(template),
            Err(e) => {
                self.problem(&path.key("spiffe_id"), errors::chain(&e));
                None
            }
        });
        let certificates = match (&raw.issuer, &raw.cert_dir) {
            (Some(issuer), None) => {
                let issuer = self.file_path(&path.key("issuer"), issuer);
                let ttl =
                    self.duration(&path.key("ttl"), raw.ttl.as_deref(), DEFAULT_ISSUED_TTL)?;
                if ttl < super::credentials::MIN_ISSUED_TTL {
                    self.problem(
                        &path.key("ttl"),
                        format!(
                            "at least {}s: the certificate is renewed at half its lifetime",
                            super::credentials::MIN_ISSUED_TTL.as_secs()
                        ),
                    );
                    return None;
                }
                PodCertificates::Issuer { dir: issuer?, ttl }
            }
            (None, Some(dir)) => {
                if raw.ttl.is_some() {
                    self.problem(
                        &path.key("ttl"),
                        "ttl applies to certificates the daemon issues itself (`issuer`); files \
                         in `cert_dir` have the validity they were issued with",
                    );
                    return None;
                }
                PodCertificates::Files {
                    dir: self.file_path(&path.key("cert_dir"), dir)?,
                }
            }
            (Some(_), Some(_)) => {
                self.problem(
                    &path.key("cert_dir"),
                    "either `issuer` (the daemon issues each pod's certificate) or `cert_dir` \
                     (files per identity), not both",
                );
                return None;
            }
            (None, None) => {
                self.problem(
                    &path,
                    "no pod certificates: set `issuer` (an intermediate CA directory: the daemon \
                     issues and renews each pod's certificate) or `cert_dir` (files laid out as \
                     <cert_dir>/<identity path>/cert.pem and key.pem)",
                );
                return None;
            }
        };
        Some(Pods {
            socket: socket?,
            state_dir: state_dir?,
            spiffe_id: spiffe_id?,
            certificates,
        })
    }

    /// `pods`: whether `[pods]` is set (Services are resolved only in pod mode).
    pub(super) fn kubernetes(&mut self, raw: &RawKubernetes, pods: bool) -> Option<Kubernetes> {
        let path = at("kubernetes");
        let mut ok = true;
        let service_cidrs = self.cidrs(&path.key("service_cidrs"), &raw.service_cidrs);
        if !raw.service_cidrs.is_empty() && !pods {
            self.problem(
                &path.key("service_cidrs"),
                "needs [pods]: a ClusterIP is resolved to its endpoints from the cluster's \
                 Services, which the daemon watches in pod mode only",
            );
            ok = false;
        }
        let api_server = match raw.api_server.as_deref().map(str::parse::<ApiServer>) {
            None => None,
            Some(Ok(server)) => Some(server),
            Some(Err(e)) => {
                self.problem(&path.key("api_server"), e.to_string());
                ok = false;
                None
            }
        };
        let mut file = |key: &str, value: &Option<String>| -> Option<Option<PathBuf>> {
            match value {
                Some(text) => {
                    let located: Option<_> = self.file_path(&path.key(key), text);
                    located.map(|l| Some(l.value))
                }
                None => Some(None),
            }
        };
        let token_file = file("token_file", &raw.token_file);
        let ca_file = file("ca_file", &raw.ca_file);
        if raw.node_name.as_deref() == Some("") {
            self.problem(&path.key("node_name"), "the node name is empty");
            ok = false;
        }
        ok.then_some(())?;
        Some(Kubernetes {
            api_server,
            token_file: token_file?,
            ca_file: ca_file?,
            node_name: raw.node_name.clone(),
            service_cidrs: service_cidrs?,
        })
    }
}
