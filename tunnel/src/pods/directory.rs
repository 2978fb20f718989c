//! The identity a pod must present at an address, for a registered pod calling it: exactly
//! that pod's, when this node knows which pod holds the address (its own pods, registered
//! here; other nodes' pods, from the cluster view kept by a watch of the Kubernetes API,
//! `pods/view`). Where it knows none, the caller falls back to `[outbound] peer_identity`.
//! A Service's virtual address is resolved to its endpoints first (`pods/services`), each
//! expected to be the pod it is.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, OnceLock, RwLock},
};

use super::{
    services::{ServiceAnswer, ServiceView},
    view::PodView,
};
use crate::{
    identity::SpiffeId,
    proxy::destination::{Caller, CallerKind, Destination, Destinations, Resolution},
};

#[derive(Default)]
pub struct Directory {
    local: RwLock<HashMap<IpAddr, SpiffeId>>,
    cluster: OnceLock<Arc<PodView>>,
    services: OnceLock<Arc<ServiceView>>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field(
                "local",
                &self.local.read().expect("pod directory poisoned").len(),
            )
            .field("cluster", &self.cluster.get().map(|view| view.len()))
            .finish()
    }
}

impl Directory {
    /// Answers for addresses that are not this node's pods from `view` (set once, with
    /// `[pods]` and an API to watch).
    pub fn follow_cluster(&self, view: Arc<PodView>) {
        let _ = self.cluster.set(view);
    }

    /// Resolves Services' virtual addresses from `view` (set once, as the cluster view).
    pub fn follow_services(&self, view: Arc<ServiceView>) {
        let _ = self.services.set(view);
    }

    /// The identity expected at `ip`: this node's pod there, else the cluster view's; `None`
    /// when neither knows exactly one.
    pub fn expected(&self, ip: IpAddr) -> Option<SpiffeId> {
        let ip = ip.to_canonical();
        if let Some(id) = self.local.read().expect("pod directory poisoned").get(&ip) {
            return Some(id.clone());
        }
        self.cluster.get()?.identity(ip)
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

/// A Service's address becomes its endpoints; then, for a pod caller, the exact identity of
/// the pod at each destination; a host workload's calls go to peer daemons, under the peer
/// pattern.
impl Destinations for Directory {
    fn resolve(&self, caller: Caller, dst: SocketAddr) -> Resolution {
        let identity = |ip: IpAddr| match caller.kind {
            CallerKind::Pod => self.expected(ip),
            CallerKind::Host => None,
        };
        let answer = self
            .services
            .get()
            .and_then(|services| services.resolve(caller.address, dst));
        match answer {
            None => Resolution::Direct(Destination {
                target: dst,
                identity: identity(dst.ip()),
                open: None,
            }),
            Some(ServiceAnswer::NoEndpoint { service, why }) => {
                Resolution::NoEndpoint { service, why }
            }
            Some(ServiceAnswer::Endpoints { service, endpoints }) => Resolution::Service {
                service,
                endpoints: endpoints
                    .into_iter()
                    .map(|(target, open)| Destination {
                        target,
                        identity: identity(target.ip()),
                        open: Some(open),
                    })
                    .collect(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_caller_expects_exactly_the_pod_at_the_address() {
        let directory = Directory::default();
        let orders: SpiffeId = "spiffe://example.org/ns/shop/sa/orders".parse().unwrap();
        let ip: IpAddr = "10.1.2.2".parse().unwrap();
        directory.insert(&[ip], &orders);
        let dst = SocketAddr::new(ip, 8080);
        let resolve = |kind: CallerKind, dst: SocketAddr| {
            let caller = Caller {
                kind,
                address: "10.1.1.9".parse().unwrap(),
            };
            match directory.resolve(caller, dst) {
                Resolution::Direct(destination) => destination,
                other => panic!("a pod address is itself, not {other:?}"),
            }
        };
        let from_pod = resolve(CallerKind::Pod, dst);
        assert_eq!(from_pod.identity, Some(orders.clone()));
        assert_eq!(from_pod.target, dst);
        let from_host = resolve(CallerKind::Host, dst);
        assert_eq!(from_host.identity, None, "a host workload expects a node");
        // Unknown addresses, with no API to ask: the peer pattern applies.
        let elsewhere = SocketAddr::new("10.1.3.3".parse().unwrap(), 8080);
        assert_eq!(resolve(CallerKind::Pod, elsewhere).identity, None);
        directory.remove(&[ip], &orders);
        assert_eq!(resolve(CallerKind::Pod, dst).identity, None);
    }
}
