//! The identity a pod must present at an address, for a registered pod calling it: exactly
//! that pod's, when this node knows which pod holds the address (its own pods, registered
//! here; other nodes' pods, from the Kubernetes API's pod IP → service account). Where it
//! knows none, the caller falls back to `[outbound] peer_identity`.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, OnceLock, RwLock},
    time::{Duration, Instant},
};

use tokio::sync::OnceCell;
use tracing::{debug, warn};

use super::kube::KubeClient;
use crate::{
    identity::{IdTemplate, PodNames, SpiffeId, TrustDomain},
    proxy::destination::{CallerKind, Destination, Destinations, Resolving},
};

/// How long an answer of the API is used: pod addresses are reused, so not long.
const FOUND_TTL: Duration = Duration::from_secs(30);
/// How long a failed lookup (the API unreachable, forbidden...) stands before it is tried
/// again; meanwhile the pattern applies.
const FAILED_TTL: Duration = Duration::from_secs(5);
/// Remote addresses remembered at most; past it, the expired ones go, then all.
const MAX_REMOTE: usize = 16384;

#[derive(Default)]
pub struct Directory {
    local: RwLock<HashMap<IpAddr, SpiffeId>>,
    remote: OnceLock<RemoteLookup>,
}

/// Other nodes' pods, by asking the API (one call per address at a time, shared by every
/// connection waiting for it).
pub struct RemoteLookup {
    kube: Arc<KubeClient>,
    template: IdTemplate,
    trust_domain: TrustDomain,
    cache: Mutex<HashMap<IpAddr, Arc<Entry>>>,
}

struct Entry {
    created: Instant,
    answer: OnceCell<(Option<SpiffeId>, Duration)>,
}

impl Entry {
    fn fresh(&self) -> bool {
        match self.answer.get() {
            Some((_, ttl)) => self.created.elapsed() < *ttl,
            None => true, // being looked up
        }
    }
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field(
                "local",
                &self.local.read().expect("pod directory poisoned").len(),
            )
            .field("remote", &self.remote.get().is_some())
            .finish()
    }
}

impl Directory {
    /// Asks the API about addresses that are not this node's pods (set once, with `[pods]`
    /// and an API to ask).
    pub fn look_up_remote(
        &self,
        kube: Arc<KubeClient>,
        template: IdTemplate,
        trust_domain: TrustDomain,
    ) {
        let _ = self.remote.set(RemoteLookup {
            kube,
            template,
            trust_domain,
            cache: Mutex::default(),
        });
    }

    /// A pod of this node at `ip`.
    fn identity(&self, ip: IpAddr) -> Option<SpiffeId> {
        self.local
            .read()
            .expect("pod directory poisoned")
            .get(&ip.to_canonical())
            .cloned()
    }

    /// The identity expected at `ip`: this node's pod there, else the API's; `None` when
    /// neither knows one.
    pub async fn expected(&self, ip: IpAddr) -> Option<SpiffeId> {
        if let Some(id) = self.identity(ip) {
            return Some(id);
        }
        self.remote.get()?.expected(ip.to_canonical()).await
    }

    pub fn insert(&self, ips: &[IpAddr], id: &SpiffeId) {
        let mut local = self.local.write().expect("pod directory poisoned");
        for ip in ips {
            local.insert(ip.to_canonical(), id.clone());
        }
    }

    /// Removes `ips`, unless another pod has taken one of them since (its entry stays).
    pub fn remove(&self, ips: &[IpAddr], id: &SpiffeId) {
        let mut local = self.local.write().expect("pod directory poisoned");
        for ip in ips {
            if local.get(&ip.to_canonical()) == Some(id) {
                local.remove(&ip.to_canonical());
            }
        }
    }
}

/// For a pod caller, the exact identity of the pod at the destination; a host workload's
/// calls go to peer daemons, under the peer pattern.
impl Destinations for Directory {
    fn resolve(&self, caller: CallerKind, dst: SocketAddr) -> Resolving<'_> {
        Box::pin(async move {
            let identity = match caller {
                CallerKind::Pod => self.expected(dst.ip()).await,
                CallerKind::Host => None,
            };
            Destination {
                target: dst,
                identity,
            }
        })
    }
}

impl RemoteLookup {
    async fn expected(&self, ip: IpAddr) -> Option<SpiffeId> {
        let entry = {
            let mut cache = self.cache.lock().expect("pod address cache poisoned");
            match cache.get(&ip) {
                Some(entry) if entry.fresh() => entry.clone(),
                _ => {
                    if cache.len() >= MAX_REMOTE {
                        cache.retain(|_, e| e.fresh());
                        if cache.len() >= MAX_REMOTE {
                            cache.clear();
                        }
                    }
                    let entry = Arc::new(Entry {
                        created: Instant::now(),
                        answer: OnceCell::new(),
                    });
                    cache.insert(ip, entry.clone());
                    entry
                }
            }
        };
        let (id, _) = entry.answer.get_or_init(|| self.ask(ip)).await;
        id.clone()
    }

    async fn ask(&self, ip: IpAddr) -> (Option<SpiffeId>, Duration) {
        let pods = match self.kube.pods_at(ip).await {
            Ok(pods) => pods,
            Err(e) => {
                warn!(%ip, "cannot learn which pod holds this address, so the peer pattern applies: {e}");
                return (None, FAILED_TTL);
            }
        };
        let ids: Vec<SpiffeId> = pods
            .iter()
            .filter_map(|pod| {
                self.template
                    .render(&PodNames {
                        trust_domain: &self.trust_domain,
                        namespace: &pod.namespace,
                        name: &pod.name,
                        service_account: Some(&pod.service_account),
                    })
                    .ok()
            })
            .collect();
        let id = match ids.split_first() {
            Some((first, rest)) if rest.iter().all(|id| id == first) => Some(first.clone()),
            Some(_) => {
                // Two live pods with one address and different identities (a reuse the API
                // has not caught up with): no exact expectation is safe to make.
                debug!(%ip, pods = ?pods, "several identities at one pod address: the peer pattern applies");
                None
            }
            None => None,
        };
        (id, FOUND_TTL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pod_caller_expects_exactly_the_pod_at_the_address() {
        let directory = Directory::default();
        let orders: SpiffeId = "spiffe://example.org/ns/shop/sa/orders".parse().unwrap();
        let ip: IpAddr = "10.1.2.2".parse().unwrap();
        directory.insert(&[ip], &orders);
        let dst = SocketAddr::new(ip, 8080);
        let from_pod = directory.resolve(CallerKind::Pod, dst).await;
        assert_eq!(from_pod.identity, Some(orders.clone()));
        assert_eq!(from_pod.target, dst);
        let from_host = directory.resolve(CallerKind::Host, dst).await;
        assert_eq!(from_host.identity, None, "a host workload expects a node");
        // Unknown addresses, with no API to ask: the peer pattern applies.
        let elsewhere = SocketAddr::new("10.1.3.3".parse().unwrap(), 8080);
        assert_eq!(
            directory.resolve(CallerKind::Pod, elsewhere).await.identity,
            None
        );
        directory.remove(&[ip], &orders);
        assert_eq!(directory.resolve(CallerKind::Pod, dst).await.identity, None);
    }
}
