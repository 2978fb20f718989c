//! Where a captured connection goes and whom it must reach there: a `[[peer]]` pin for the
//! destination first; else whatever [`Destinations`] knows (a Service's address becomes the
//! endpoints to try; a pod's, the exact identity); else the configured peer pattern.
//! Addresses that name no single host, and Services with nothing to serve them, are refused
//! here.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use ipnet::IpNet;

use super::{OutboundInputs, OutboundWorkload, PodCaller};
use crate::{
    credentials::{ClientTls, Snapshot},
    identity::SpiffeId,
    proxy::{
        destination::{
            Caller, CallerKind, Destination, Destinations, OpenCount, Resolution, ServiceName,
        },
        pool::PoolKey,
    },
};

/// `[[peer]]` entries: the identity expected of the daemon serving a destination.
#[derive(Clone, Debug, Default)]
pub struct PeerIdentities {
    entries: Vec<(IpNet, SpiffeId)>,
}

impl PeerIdentities {
    pub fn new(entries: Vec<(IpNet, SpiffeId)>) -> Self {
        Self { entries }
    }

    /// The most specific entry containing `ip`.
    pub fn expected(&self, ip: IpAddr) -> Option<&SpiffeId> {
        self.entries
            .iter()
            .filter(|(net, _)| net.contains(&ip))
            .max_by_key(|(net, _)| net.prefix_len())
            .map(|(_, id)| id)
    }
}

/// Why a destination cannot be routed.
pub(super) enum Unroutable {
    /// It names no single host (the reason in words).
    NotAHost(String),
    /// The TLS material in force has no client config for this workload and peer.
    TlsConfigMissing,
    /// A Service with no endpoint that may serve the caller (the reason in words).
    NoEndpoint { service: ServiceName, why: String },
}

/// A routed connection: the address its CONNECT names, the pooled connection it rides and
/// the TLS config that checks whom that connection reached.
pub(super) struct Route {
    pub target: SocketAddr,
    /// The workload known to serve `target` (a pod's identity), for the access log.
    pub workload: Option<SpiffeId>,
    pub key: PoolKey,
    pub tls: Arc<ClientTls>,
    /// The count of connections open to `target`, for a Service's balancing.
    pub open: Option<OpenCount>,
}

/// Where a connection may go: one route for an address that is itself, a few of a
/// Service's endpoints to try in order for a Service's.
pub(super) struct Routes {
    pub service: Option<ServiceName>,
    /// Never empty.
    pub routes: Vec<Route>,
}

/// Refuses a destination that names no host (nothing is dialled for it).
pub(super) fn check_host(dst: SocketAddr, inputs: &OutboundInputs) -> Result<(), Unroutable> {
    match names_no_host(dst.ip(), &inputs.captured) {
        Some(why) => Err(Unroutable::NotAHost(why)),
        None => Ok(()),
    }
}

/// A `[[peer]]` pin first; then what the destinations' source knows: a Service's endpoints,
/// or the exact identity (ztunnel's rule for pods: the caller checks it reached that
/// workload); else the configured peer pattern. `caller` is the caller's own address.
pub(super) fn route(
    dst: SocketAddr,
    caller: IpAddr,
    workload: &OutboundWorkload,
    pod: Option<&PodCaller>,
    inputs: &OutboundInputs,
    snapshot: &Snapshot,
) -> Result<Routes, Unroutable> {
    let caller = Caller {
        kind: match pod {
            Some(_) => CallerKind::Pod,
            None => CallerKind::Host,
        },
        address: caller,
    };
    let (resolution, pinned) = resolve(dst, caller, &inputs.peers, inputs.destinations.as_ref());
    let (service, destinations) = match resolution {
        Resolution::Direct(destination) => (None, vec![destination]),
        Resolution::Service { service, endpoints } => (Some(service), endpoints),
        Resolution::NoEndpoint { service, why } => {
            return Err(Unroutable::NoEndpoint { service, why });
        }
    };
    let routes = destinations
        .into_iter()
        .map(|destination| {
            let tls = match &destination.identity {
                Some(id) => snapshot.client_expecting(&workload.name, id),
                None => snapshot.client(&workload.name, pinned).cloned(),
            };
            let tls = tls.ok_or(Unroutable::TlsConfigMissing)?;
            Ok(Route {
                target: destination.target,
                workload: destination.identity.clone(),
                key: PoolKey {
                    workload: workload.name.clone(),
                    peer: SocketAddr::new(destination.target.ip(), inputs.peer_port),
                    via: pod.map(|p| p.network.clone()),
                    identity: destination.identity.or_else(|| pinned.cloned()),
                },
                tls,
                open: destination.open,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Routes { service, routes })
}

/// What `dst` is for this caller, and the `[[peer]]` pin that decides it if one does (then
/// nothing else is asked: a pin is the operator's word).
fn resolve<'a>(
    dst: SocketAddr,
    caller: Caller,
    peers: &'a PeerIdentities,
    destinations: &dyn Destinations,
) -> (Resolution, Option<&'a SpiffeId>) {
    match peers.expected(dst.ip()) {
        Some(pinned) => (Resolution::Direct(Destination::unknown(dst)), Some(pinned)),
        None => (destinations.resolve(caller, dst), None),
    }
}

/// Why a destination names no single host (so no peer daemon can serve it), if it does
/// not: a broadcast or multicast address, or the network or broadcast address of a
/// captured IPv4 subnet (the kernel lets a process connect() to those).
fn names_no_host(ip: IpAddr, captured: &[IpNet]) -> Option<String> {
    let ip = ip.to_canonical();
    if ip.is_multicast() || ip.is_unspecified() {
        return Some(format!("{ip} is a multicast or unspecified address"));
    }
    if let IpAddr::V4(v4) = ip {
        if v4.is_broadcast() {
            return Some(format!("{ip} is the broadcast address"));
        }
        let subnet = captured.iter().find(|net| {
            net.contains(&ip)
                && net.prefix_len() <= 30
                && (net.network() == ip || net.broadcast() == ip)
        });
        if let Some(net) = subnet {
            return Some(format!(
                "{ip} is the network or broadcast address of the captured subnet {net}"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_and_network_addresses_name_no_host() {
        let captured: Vec<IpNet> = vec![
            "10.240.0.0/24".parse().unwrap(),
            "10.9.9.9/32".parse().unwrap(),
        ];
        for ip in [
            "10.240.0.255",
            "10.240.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "ff02::1",
        ] {
            assert!(
                names_no_host(ip.parse().unwrap(), &captured).is_some(),
                "{ip} names no host"
            );
        }
        for ip in ["10.240.0.1", "10.240.0.254", "10.9.9.9", "fd00::1"] {
            assert_eq!(names_no_host(ip.parse().unwrap(), &captured), None, "{ip}");
        }
    }

    #[test]
    fn the_most_specific_peer_entry_wins() {
        let id = |s: &str| s.parse::<SpiffeId>().unwrap();
        let peers = PeerIdentities::new(vec![
            (
                "10.0.0.0/24".parse().unwrap(),
                id("spiffe://example.org/node/any"),
            ),
            (
                "10.0.0.2/32".parse().unwrap(),
                id("spiffe://example.org/node/b"),
            ),
        ]);
        assert_eq!(
            peers.expected("10.0.0.2".parse().unwrap()),
            Some(&id("spiffe://example.org/node/b"))
        );
        assert_eq!(
            peers.expected("10.0.0.3".parse().unwrap()),
            Some(&id("spiffe://example.org/node/any"))
        );
        assert_eq!(peers.expected("10.9.0.3".parse().unwrap()), None);
    }

    /// Knows one pod, for pod callers only, and counts what it is asked.
    struct OnePod {
        asked: std::sync::atomic::AtomicUsize,
    }

    impl Destinations for OnePod {
        fn resolve(&self, caller: Caller, dst: SocketAddr) -> Resolution {
            self.asked
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let identity = (caller.kind == CallerKind::Pod && dst.ip().to_string() == "10.1.2.2")
                .then(|| "spiffe://example.org/ns/shop/sa/orders".parse().unwrap());
            Resolution::Direct(Destination {
                target: dst,
                identity,
                open: None,
            })
        }
    }

    fn caller(kind: CallerKind) -> Caller {
        Caller {
            kind,
            address: "10.1.1.9".parse().unwrap(),
        }
    }

    fn direct(resolution: Resolution) -> Destination {
        match resolution {
            Resolution::Direct(destination) => destination,
            other => panic!("expected the address itself, got {other:?}"),
        }
    }

    #[test]
    fn a_pin_decides_first_then_the_destinations_source() {
        let node_b: SpiffeId = "spiffe://example.org/node/b".parse().unwrap();
        let peers = PeerIdentities::new(vec![("10.1.2.9/32".parse().unwrap(), node_b.clone())]);
        let pods = OnePod {
            asked: Default::default(),
        };
        let orders = "10.1.2.2:8080".parse().unwrap();
        let (destination, pinned) = resolve(orders, caller(CallerKind::Pod), &peers, &pods);
        let destination = direct(destination);
        assert_eq!(
            destination.identity.unwrap().to_string(),
            "spiffe://example.org/ns/shop/sa/orders"
        );
        assert_eq!(destination.target, orders);
        assert_eq!(pinned, None);
        let (destination, _) = resolve(orders, caller(CallerKind::Host), &peers, &pods);
        assert_eq!(
            direct(destination).identity,
            None,
            "a host's call expects a node"
        );
        let pinned_dst = "10.1.2.9:8080".parse().unwrap();
        let (destination, pinned) = resolve(pinned_dst, caller(CallerKind::Pod), &peers, &pods);
        assert_eq!(pinned, Some(&node_b));
        assert_eq!(direct(destination), Destination::unknown(pinned_dst));
        assert_eq!(
            pods.asked.load(std::sync::atomic::Ordering::Relaxed),
            2,
            "a pinned destination is not asked about"
        );
    }
}
