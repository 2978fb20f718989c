//! Registered pods' identities by address, for the outbound side: a pod calling another
//! pod of this node expects exactly that pod's identity.

use std::{collections::HashMap, net::IpAddr, sync::RwLock};

use crate::identity::SpiffeId;

#[derive(Debug, Default)]
pub struct Directory {
    by_ip: RwLock<HashMap<IpAddr, SpiffeId>>,
}

impl Directory {
    pub fn identity(&self, ip: IpAddr) -> Option<SpiffeId> {
        self.by_ip
            .read()
            .expect("pod directory poisoned")
            .get(&ip.to_canonical())
            .cloned()
    }

    pub fn insert(&self, ips: &[IpAddr], id: &SpiffeId) {
        let mut by_ip = self.by_ip.write().expect("pod directory poisoned");
        for ip in ips {
            by_ip.insert(ip.to_canonical(), id.clone());
        }
    }

    /// Removes `ips`, unless another pod has taken one of them since (its entry stays).
    pub fn remove(&self, ips: &[IpAddr], id: &SpiffeId) {
        let mut by_ip = self.by_ip.write().expect("pod directory poisoned");
        for ip in ips {
            if by_ip.get(&ip.to_canonical()) == Some(id) {
                by_ip.remove(&ip.to_canonical());
            }
        }
    }

    pub fn len(&self) -> usize {
        self.by_ip.read().expect("pod directory poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
