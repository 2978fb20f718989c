//! The parts of the Kubernetes API's objects the daemon reads (Pod, PodList, Status), and
//! which pods of a list hold their address.

use serde::Deserialize;

use super::PodAtAddress;

/// The pods of a list that hold their address: not host-network pods (they share their
/// node's), not pods that have ended.
pub(super) fn holders(list: PodList) -> Vec<PodAtAddress> {
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

#[derive(Deserialize)]
pub(super) struct PodList {
    items: Vec<Pod>,
}

#[derive(Deserialize)]
pub(super) struct Pod {
    pub metadata: Metadata,
    pub spec: Spec,
    status: Option<PodStatus>,
}

#[derive(Deserialize)]
pub(super) struct Metadata {
    pub uid: String,
    name: Option<String>,
    namespace: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Spec {
    service_account_name: Option<String>,
    pub node_name: Option<String>,
    host_network: Option<bool>,
}

impl Spec {
    /// A pod with no service account named runs as `default`, as Kubernetes does.
    pub fn service_account(&self) -> String {
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
pub(super) struct Status {
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

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
