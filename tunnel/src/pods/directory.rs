//! The identity a pod must present at an address, for a registered pod calling it: exactly
//! that pod's, when this node knows which pod holds the address (its own pods, registered
//! here; other nodes' pods, from the cluster view kept by a watch of the Kubernetes API,
//! `pods/view`). Where it knows none, the caller falls back to `[outbound] peer_identity`.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, OnceLock, RwLock},
};

use super::view::PodView;
use crate::{
    identity::SpiffeId,
    proxy::destination::{CallerKind, Destination, Destinations},
};

#[derive(Default)]
pub struct Directory {
    local: RwLock<HashMap<IpAddr, SpiffeId>>,
    cluster: OnceLock<Arc<PodView>>,
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

/// For a pod caller, the exact identity of the pod at the destination; a host workload's
/// calls go to peer daemons, under the peer pattern.
impl Destinations for Directory {
    fn resolve(&self, caller: CallerKind, dst: SocketAddr) -> Destination {
        let identity = match caller {
            CallerKind::Pod => self.expected(dst.ip()),
            CallerKind::Host => None,
        };
        Destination {
            target: dst,
            identity,
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
        let from_pod = directory.resolve(CallerKind::Pod, dst);
        assert_eq!(from_pod.identity, Some(orders.clone()));
        assert_eq!(from_pod.target, dst);
        let from_host = directory.resolve(CallerKind::Host, dst);
        assert_eq!(from_host.identity, None, "a host workload expects a node");
        // Unknown addresses, with no API to ask: the peer pattern applies.
        let elsewhere = SocketAddr::new("10.1.3.3".parse().unwrap(), 8080);
        assert_eq!(directory.resolve(CallerKind::Pod, elsewhere).identity, None);
        directory.remove(&[ip], &orders);
        assert_eq!(directory.resolve(CallerKind::Pod, dst).identity, None);
    }
}
