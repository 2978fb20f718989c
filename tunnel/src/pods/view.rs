//! The cluster's pods as the daemon needs them: every address of every pod that holds its
//! own (not a host-network pod, which shares its node's, and not one that has ended), mapped
//! to the identity its service account gives it. Kept by a list+watch of Pods in all
//! namespaces through kube-rs's `watcher` (list, then watch from the list's resourceVersion,
//! bookmarks, a relist when the server answers 410 Gone, back-off on errors), so a call's
//! expectation is a map lookup, never an API call. Only what is used is kept: per pod its
//! uid, addresses and identity, and for a pod of this node (`[kubernetes] node_name`) its
//! namespace and name too, which enrolling the pods already running needs (`pods/enrol`).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, RwLock},
};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, runtime::watcher};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::identity::{IdTemplate, PodNames, SpiffeId, TrustDomain};

/// What is kept of one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Held {
    ips: Vec<IpAddr>,
    identity: Arc<SpiffeId>,
    /// Its names, for a pod of this node that is not being deleted; other nodes' pods cost
    /// a null pointer here.
    here: Option<Box<Names>>,
}

/// A pod's namespace and name.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Names {
    namespace: String,
    name: String,
}

/// A pod of this node with an address of its own, as the API says it: what enrolling it
/// starts from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// Its addresses, canonical (an IPv4-mapped IPv6 address as IPv4), sorted.
    pub ips: Vec<IpAddr>,
}

/// The pods by uid, and who holds each address: usually one pod, two while an address is
/// reused before the API has caught up. Identities and uids are shared, not copied, between
/// the two maps (about 300 bytes a pod with two addresses).
#[derive(Debug, Default)]
struct Pods {
    by_uid: HashMap<Arc<str>, Held>,
    by_ip: HashMap<IpAddr, Vec<Holder>>,
}

/// A pod holding an address: its uid and identity.
type Holder = (Arc<str>, Arc<SpiffeId>);

impl Pods {
    fn put(&mut self, uid: &str, held: Option<Held>) {
        if let Some((_, old)) = self.by_uid.remove_entry(uid) {
            for ip in &old.ips {
                if let Some(holders) = self.by_ip.get_mut(ip) {
                    holders.retain(|(holder, _)| &**holder != uid);
                    if holders.is_empty() {
                        self.by_ip.remove(ip);
                    }
                }
            }
        }
        if let Some(held) = held {
            let uid: Arc<str> = uid.into();
            for ip in &held.ips {
                self.by_ip
                    .entry(*ip)
                    .or_default()
                    .push((uid.clone(), held.identity.clone()));
            }
            self.by_uid.insert(uid, held);
        }
    }

    fn node_pods(&self) -> Vec<NodePod> {
        self.by_uid
            .iter()
            .filter_map(|(uid, held)| {
                let names = held.here.as_deref()?;
                Some(NodePod {
                    namespace: names.namespace.clone(),
                    name: names.name.clone(),
                    uid: uid.to_string(),
                    ips: held.ips.clone(),
                })
            })
            .collect()
    }

    /// The identity at `ip`, if every pod holding it has the same one.
    fn identity(&self, ip: IpAddr) -> Option<SpiffeId> {
        let holders = self.by_ip.get(&ip)?;
        let (_, first) = holders.first()?;
        holders
            .iter()
            .all(|(_, id)| id == first)
            .then(|| SpiffeId::clone(first))
    }
}

/// How pods become identities, and which node is this one.
pub struct Naming {
    pub template: IdTemplate,
    pub trust_domain: TrustDomain,
    /// `[kubernetes] node_name`: without it no pod is known as this node's.
    pub node_name: Option<String>,
}

/// The view, shared by the watch task that fills it and the calls that read it.
pub struct PodView {
    pods: RwLock<Pods>,
    naming: Naming,
    synced: watch::Sender<bool>,
}

impl PodView {
    pub fn new(naming: Naming) -> Self {
        Self {
            pods: RwLock::default(),
            naming,
            synced: watch::Sender::new(false),
        }
    }

    /// The identity expected at `ip`, if the view knows exactly one.
    pub fn identity(&self, ip: IpAddr) -> Option<SpiffeId> {
        self.pods
            .read()
            .expect("pod view poisoned")
            .identity(ip.to_canonical())
    }

    /// This node's pods that hold an address of their own and are not being deleted (not
    /// host-network pods, not pods that have ended), in no particular order.
    pub fn node_pods(&self) -> Vec<NodePod> {
        self.pods.read().expect("pod view poisoned").node_pods()
    }

    /// Whether the view can tell this node's pods (`[kubernetes] node_name` is set).
    pub fn knows_this_node(&self) -> bool {
        self.naming.node_name.is_some()
    }

    /// Pods and addresses held, for logs and figures.
    pub fn len(&self) -> (usize, usize) {
        let pods = self.pods.read().expect("pod view poisoned");
        (pods.by_uid.len(), pods.by_ip.len())
    }

    /// Waits for the first complete list (readiness waits for it).
    pub async fn synced(&self) {
        let mut synced = self.synced.subscribe();
        let _ = synced.wait_for(|done| *done).await;
    }

    /// What is kept of `pod`, or `None` when it holds no address of its own.
    fn held(&self, pod: &Pod) -> Option<Held> {
        let spec = pod.spec.as_ref()?;
        if spec.host_network == Some(true) {
            return None;
        }
        let status = pod.status.as_ref()?;
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            return None;
        }
        let mut ips: Vec<IpAddr> = status
            .pod_ips
            .iter()
            .flatten()
            .filter_map(|a| a.ip.parse().ok())
            .chain(status.pod_ip.as_deref().and_then(|ip| ip.parse().ok()))
            .map(|ip: IpAddr| ip.to_canonical())
            .collect();
        ips.sort();
        ips.dedup();
        if ips.is_empty() {
            return None;
        }
        let service_account = spec
            .service_account_name
            .as_deref()
            .filter(|sa| !sa.is_empty())
            .unwrap_or("default");
        let identity = self
            .naming
            .template
            .render(&PodNames {
                trust_domain: &self.naming.trust_domain,
                namespace: pod.metadata.namespace.as_deref().unwrap_or_default(),
                name: pod.metadata.name.as_deref().unwrap_or_default(),
                service_account: Some(service_account),
            })
            .ok()?;
        // A pod being deleted is still called (its address stays until it has gone), but it
        // is never enrolled: its sandbox may be torn down already.
        let here = (self.naming.node_name.is_some()
            && spec.node_name == self.naming.node_name
            && pod.metadata.deletion_timestamp.is_none())
        .then(|| {
            Box::new(Names {
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                name: pod.metadata.name.clone().unwrap_or_default(),
            })
        });
        Some(Held {
            ips,
            identity: Arc::new(identity),
            here,
        })
    }

    /// Keeps the view for good: the watcher lists, watches, resumes and relists by itself;
    /// an error is logged and retried with back-off while the last view keeps serving.
    pub async fn follow(&self, client: Client) {
        let pods: Api<Pod> = Api::all(client);
        let mut events = super::kube::watch(pods, watcher::Config::default()).boxed();
        // A relist builds a new view beside the one serving, and swaps it in whole.
        let mut relist: Option<Pods> = None;
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Init) => relist = Some(Pods::default()),
                Ok(watcher::Event::InitApply(pod)) => {
                    let held = self.held(&pod);
                    if let (Some(building), Some(uid)) = (relist.as_mut(), &pod.metadata.uid) {
                        building.put(uid, held);
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    if let Some(built) = relist.take() {
                        let counts = (built.by_uid.len(), built.by_ip.len());
                        *self.pods.write().expect("pod view poisoned") = built;
                        info!(pods = counts.0, addresses = counts.1, "pod view listed");
                    }
                    self.synced.send_replace(true);
                }
                Ok(watcher::Event::Apply(pod)) => {
                    let held = self.held(&pod);
                    if let Some(uid) = &pod.metadata.uid {
                        self.pods.write().expect("pod view poisoned").put(uid, held);
                    }
                }
                Ok(watcher::Event::Delete(pod)) => {
                    if let Some(uid) = &pod.metadata.uid {
                        self.pods.write().expect("pod view poisoned").put(uid, None);
                    }
                }
                Err(e) => {
                    warn!(error = %crate::errors::chain(&e), "pod view: the watch failed; the last view serves while it is retried");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(sa: &str) -> SpiffeId {
        format!("spiffe://example.org/ns/shop/sa/{sa}")
            .parse()
            .unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn every_address_of_a_pod_maps_to_its_identity_until_it_goes() {
        let mut pods = Pods::default();
        pods.put(
            "a",
            Some(Held {
                ips: vec![ip("10.1.2.2"), ip("fd01:2::2")],
                identity: id("orders").into(),
                here: None,
            }),
        );
        assert_eq!(pods.identity(ip("10.1.2.2")), Some(id("orders")));
        assert_eq!(pods.identity(ip("fd01:2::2")), Some(id("orders")));
        // Its service account changes: the new identity at once.
        pods.put(
            "a",
            Some(Held {
                ips: vec![ip("10.1.2.2")],
                identity: id("payments").into(),
                here: None,
            }),
        );
        assert_eq!(pods.identity(ip("10.1.2.2")), Some(id("payments")));
        assert_eq!(
            pods.identity(ip("fd01:2::2")),
            None,
            "an address it no longer holds"
        );
        pods.put("a", None);
        assert_eq!(pods.identity(ip("10.1.2.2")), None);
        assert!(pods.by_ip.is_empty() && pods.by_uid.is_empty());
    }

    #[test]
    fn two_pods_with_different_identities_at_one_address_give_no_exact_expectation() {
        let mut pods = Pods::default();
        let at = |sa: &str| {
            Some(Held {
                ips: vec![ip("10.1.2.2")],
                identity: id(sa).into(),
                here: None,
            })
        };
        pods.put("old", at("orders"));
        pods.put("new", at("audit"));
        assert_eq!(pods.identity(ip("10.1.2.2")), None);
        pods.put("old", None);
        assert_eq!(pods.identity(ip("10.1.2.2")), Some(id("audit")));
    }

    fn view_of(node: Option<&str>) -> PodView {
        let trust_domain: TrustDomain = "example.org".parse().unwrap();
        PodView::new(Naming {
            template: IdTemplate::parse(IdTemplate::ISTIO, &trust_domain).unwrap(),
            trust_domain,
            node_name: node.map(Into::into),
        })
    }

    /// A Pod as the API server returns it (the fields the view reads).
    fn api_pod(uid: &str, node: &str, extra: serde_json::Value) -> Pod {
        let mut pod = serde_json::json!({
            "metadata": {"namespace": "shop", "name": format!("pod-{uid}"), "uid": uid},
            "spec": {"nodeName": node, "serviceAccountName": "orders", "containers": []},
            "status": {"phase": "Running", "podIP": "10.1.1.2",
                       "podIPs": [{"ip": "10.1.1.2"}, {"ip": "fd01:1::2"}]},
        });
        for (part, fields) in extra.as_object().unwrap() {
            for (key, value) in fields.as_object().unwrap() {
                pod[part][key] = value.clone();
            }
        }
        serde_json::from_value(pod).unwrap()
    }

    #[test]
    fn this_nodes_pods_are_kept_with_their_names_and_no_other_nodes_are() {
        let view = view_of(Some("n1"));
        let mut pods = Pods::default();
        let none = serde_json::json!({});
        for (uid, node, extra) in [
            ("here", "n1", none.clone()),
            ("there", "n2", none.clone()),
            (
                "leaving",
                "n1",
                serde_json::json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
            ),
            (
                "host",
                "n1",
                serde_json::json!({"spec": {"hostNetwork": true}}),
            ),
            (
                "ended",
                "n1",
                serde_json::json!({"status": {"phase": "Succeeded"}}),
            ),
        ] {
            let pod = api_pod(uid, node, extra);
            pods.put(uid, view.held(&pod));
        }
        assert_eq!(
            pods.node_pods(),
            vec![NodePod {
                namespace: "shop".into(),
                name: "pod-here".into(),
                uid: "here".into(),
                ips: vec![ip("10.1.1.2"), ip("fd01:1::2")],
            }]
        );
        // Other nodes' pods, and one being deleted, are still expected at their addresses.
        assert!(pods.by_uid["there"].here.is_none());
        assert!(pods.by_uid["leaving"].here.is_none());
        assert!(!pods.by_uid.contains_key("host") && !pods.by_uid.contains_key("ended"));
        // Without a node name no pod is this node's.
        let pod = api_pod("here", "n1", none);
        assert!(view_of(None).held(&pod).unwrap().here.is_none());
    }

    /// A figure, not a limit: what 10,000 dual-stack pods cost the view (`-- --nocapture
    /// --test-threads 1` for a clean reading; other tests running beside it add to the RSS).
    #[test]
    fn the_view_of_10000_dual_stack_pods() {
        use crate::test_support::rss_kib;
        let before = rss_kib();
        let mut pods = Pods::default();
        for i in 0..10_000u32 {
            let [_, _, hi, lo] = i.to_be_bytes();
            pods.put(
                &format!("6f1c2a9e-1b7e-4c1e-9d7a-{i:012}"),
                Some(Held {
                    ips: vec![
                        IpAddr::from([10, 64, hi, lo]),
                        IpAddr::from([0xfd01, 0, 0, 0, 0, 0, u16::from(hi), u16::from(lo)]),
                    ],
                    identity: id(&format!("service-{}", i % 1000)).into(),
                    here: None,
                }),
            );
        }
        let after = rss_kib();
        assert_eq!(pods.by_uid.len(), 10_000);
        assert_eq!(pods.by_ip.len(), 20_000);
        println!(
            "pod view: 10000 pods, 20000 addresses: RSS {before} -> {after} KiB ({} bytes a pod)",
            (after.saturating_sub(before)) * 1024 / 10_000
        );
    }
}
