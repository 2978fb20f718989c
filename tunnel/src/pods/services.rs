//! The cluster's Services as the outbound side needs them, so that a connection to a
//! ClusterIP is resolved here (as Cilium's socket load balancer and ztunnel do), not left
//! to kube-proxy after the connection has already been captured: each Service's virtual
//! addresses and TCP ports, and its endpoints from the EndpointSlices
//! (discovery.k8s.io/v1) that name it. Kept by a list+watch of both kinds through kube-rs's
//! watcher (as `pods/view` keeps Pods). Only what is used is kept.
//!
//! How an endpoint is picked for `ClusterIP:port`, in kube-proxy's terms:
//! - the Service port is the one whose `port` is the destination's (TCP); a slice's port of
//!   the same name gives the endpoint's port, so named `targetPort`s come resolved by the
//!   EndpointSlice controller;
//! - endpoints of the destination's address family, ready and not terminating; with none,
//!   those still serving while terminating (as kube-proxy falls back);
//! - `internalTrafficPolicy: Local`: only this node's endpoints (none: refused, as
//!   kube-proxy drops);
//! - `trafficDistribution: PreferClose` (or `PreferSameZone`): the endpoints hinted for
//!   this node's zone, or in it, when there are any (the node's zone is learnt from the
//!   slices: the zone of its own endpoints);
//! - `sessionAffinity: ClientIP`: a caller keeps its endpoint while it stays usable, for
//!   the Service's timeout;
//! - otherwise the power of two choices: of two endpoints taken at random, the one with
//!   fewer connections open from this node.
//!
//! A few other endpoints follow the pick, for the caller to try if the pick cannot be
//! reached.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{Api, Client, runtime::watcher};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::proxy::destination::{OpenCount, ServiceName};

/// How many endpoints a connection tries in all before it is refused.
pub const MAX_ATTEMPTS: usize = 3;
/// Callers remembered for `ClientIP` affinity, over every Service; past it, expired
/// entries are swept, and a caller that still finds no room is balanced as if without
/// affinity (the table must not grow with the number of callers an attacker can make up).
const AFFINITY_ENTRIES: usize = 65_536;
/// kube-proxy's default `sessionAffinityConfig.clientIP.timeoutSeconds`.
const DEFAULT_AFFINITY: Duration = Duration::from_secs(10_800);
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What is kept of a Service.
#[derive(Debug, PartialEq)]
struct Held {
    cluster_ips: Vec<IpAddr>,
    /// TCP ports: the port, and its name ("" for an unnamed one).
    ports: Vec<(u16, Arc<str>)>,
    /// `sessionAffinity: ClientIP`, with its timeout.
    affinity: Option<Duration>,
    /// `internalTrafficPolicy: Local`.
    local_only: bool,
    /// `trafficDistribution: PreferClose`/`PreferSameZone`.
    prefer_close: bool,
}

/// What is kept of one endpoint of a slice.
#[derive(Debug)]
struct Endpoint {
    /// The first address (all of an endpoint's addresses are fungible; consumers use the
    /// first, the API says).
    ip: IpAddr,
    ready: bool,
    serving: bool,
    terminating: bool,
    node: Option<Arc<str>>,
    zone: Option<Arc<str>>,
    for_zones: Vec<Arc<str>>,
}

/// What is kept of an EndpointSlice.
#[derive(Debug)]
struct Slice {
    service: ServiceName,
    ipv6: bool,
    /// TCP ports: name ("" for an unnamed one) and number.
    ports: Vec<(Arc<str>, u16)>,
    endpoints: Vec<Endpoint>,
}

/// The kept state. Names (services, nodes, zones, port names) are interned: a cluster has
/// few distinct ones, repeated in every slice.
#[derive(Debug, Default)]
struct State {
    services: HashMap<ServiceName, Held>,
    by_cluster_ip: HashMap<IpAddr, ServiceName>,
    slices: HashMap<Arc<str>, Slice>,
    /// Slice uids by Service.
    slices_of: HashMap<ServiceName, Vec<Arc<str>>>,
    /// Open connections per endpoint address, and how many slices name it.
    open: HashMap<IpAddr, (usize, OpenCount)>,
    names: HashMap<Arc<str>, ()>,
    /// This node's zone, from the slices' endpoints on it.
    our_zone: Option<Arc<str>>,
}

impl State {
    fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some((kept, ())) = self.names.get_key_value(name) {
            return kept.clone();
        }
        let kept: Arc<str> = name.into();
        self.names.insert(kept.clone(), ());
        kept
    }

    fn put_service(&mut self, name: ServiceName, held: Option<Held>) {
        if let Some(old) = self.services.remove(&name) {
            for ip in &old.cluster_ips {
                if self.by_cluster_ip.get(ip) == Some(&name) {
                    self.by_cluster_ip.remove(ip);
                }
            }
        }
        if let Some(held) = held {
            for ip in &held.cluster_ips {
                self.by_cluster_ip.insert(*ip, name.clone());
            }
            self.services.insert(name, held);
        }
    }

    fn put_slice(&mut self, uid: Arc<str>, slice: Option<Slice>, our_node: Option<&str>) {
        if let Some(old) = self.slices.remove(&uid) {
            if let Some(uids) = self.slices_of.get_mut(&old.service) {
                uids.retain(|u| *u != uid);
                if uids.is_empty() {
                    self.slices_of.remove(&old.service);
                }
            }
            for endpoint in &old.endpoints {
                if let Some((slices, _)) = self.open.get_mut(&endpoint.ip) {
                    *slices -= 1;
                    if *slices == 0 {
                        self.open.remove(&endpoint.ip);
                    }
                }
            }
        }
        let Some(slice) = slice else { return };
        for endpoint in &slice.endpoints {
            self.open.entry(endpoint.ip).or_default().0 += 1;
            if endpoint
                .node
                .as_deref()
                .is_some_and(|n| Some(n) == our_node)
                && endpoint.zone.is_some()
            {
                self.our_zone = endpoint.zone.clone();
            }
        }
        self.slices_of
            .entry(slice.service.clone())
            .or_default()
            .push(uid.clone());
        self.slices.insert(uid, slice);
    }
}

/// An endpoint that may serve a call, as the pick sees it.
struct Candidate<'a> {
    target: SocketAddr,
    endpoint: &'a Endpoint,
}

/// The answer for a Service address.
#[derive(Debug, PartialEq)]
pub enum ServiceAnswer {
    /// The endpoints to try, in order; never empty.
    Endpoints {
        service: ServiceName,
        endpoints: Vec<(SocketAddr, OpenCount)>,
    },
    NoEndpoint {
        service: ServiceName,
        why: String,
    },
}

impl PartialEq for OpenCount {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

/// The view, shared by the watch tasks that fill it and the calls that read it.
pub struct ServiceView {
    state: RwLock<State>,
    /// (Service, caller) → the endpoint it keeps, until when.
    affinity: Mutex<HashMap<(ServiceName, IpAddr), (SocketAddr, Instant)>>,
    node: Option<Arc<str>>,
    synced: watch::Sender<(bool, bool)>,
}

impl ServiceView {
    /// `node`: this node's name, for `internalTrafficPolicy: Local` and its zone.
    pub fn new(node: Option<&str>) -> Self {
        Self {
            state: RwLock::default(),
            affinity: Mutex::default(),
            node: node.map(Into::into),
            synced: watch::Sender::new((false, false)),
        }
    }

    /// Whether `ip` is a Service's virtual address.
    pub fn is_service_address(&self, ip: IpAddr) -> bool {
        self.read().by_cluster_ip.contains_key(&ip.to_canonical())
    }

    /// Services, slices and endpoint addresses held, for logs and figures.
    pub fn len(&self) -> (usize, usize, usize) {
        let state = self.read();
        (state.services.len(), state.slices.len(), state.open.len())
    }

    /// Waits for the first complete list of both kinds.
    pub async fn synced(&self) {
        let mut synced = self.synced.subscribe();
        let _ = synced.wait_for(|(s, e)| *s && *e).await;
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().expect("service view poisoned")
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().expect("service view poisoned")
    }

    /// What `dst` is, if it is a Service's virtual address; `caller` keys affinity.
    pub fn resolve(&self, caller: IpAddr, dst: SocketAddr) -> Option<ServiceAnswer> {
        let state = self.read();
        let ip = dst.ip().to_canonical();
        let name = state.by_cluster_ip.get(&ip)?;
        let service = state.services.get(name)?;
        let no_endpoint = |why: String| {
            Some(ServiceAnswer::NoEndpoint {
                service: name.clone(),
                why,
            })
        };
        let Some((_, port_name)) = service.ports.iter().find(|(port, _)| *port == dst.port())
        else {
            return no_endpoint(format!("no TCP port {}", dst.port()));
        };
        let mut candidates = candidates(&state, name, port_name, ip.is_ipv6());
        if service.local_only {
            candidates.retain(|c| c.endpoint.node.as_deref() == self.node.as_deref());
        }
        let usable = |c: &Candidate| c.endpoint.ready && !c.endpoint.terminating;
        let fallback = |c: &Candidate| c.endpoint.serving && c.endpoint.terminating;
        if candidates.iter().any(usable) {
            candidates.retain(usable);
        } else {
            candidates.retain(fallback);
        }
        if candidates.is_empty() {
            let why = if service.local_only {
                "no ready endpoint on this node (internalTrafficPolicy: Local)"
            } else {
                "no ready endpoint"
            };
            return no_endpoint(why.into());
        }
        if service.prefer_close
            && let Some(zone) = &state.our_zone
        {
            let close = |c: &Candidate| {
                if c.endpoint.for_zones.is_empty() {
                    c.endpoint.zone.as_ref() == Some(zone)
                } else {
                    c.endpoint.for_zones.contains(zone)
                }
            };
            if candidates.iter().any(close) {
                candidates.retain(close);
            }
        }
        let open = |target: SocketAddr| {
            state
                .open
                .get(&target.ip())
                .map(|(_, count)| count.clone())
                .unwrap_or_default()
        };
        let mut order: Vec<SocketAddr> = candidates.iter().map(|c| c.target).collect();
        fastrand::shuffle(&mut order);
        let kept = service
            .affinity
            .and_then(|_| self.affinity_for(name, caller, &order));
        let first = kept.unwrap_or_else(|| power_of_two(&order, |t| open(t).get()));
        order.retain(|t| *t != first);
        order.insert(0, first);
        order.truncate(MAX_ATTEMPTS);
        if let Some(timeout) = service.affinity {
            self.keep_affinity(name, caller, first, timeout);
        }
        Some(ServiceAnswer::Endpoints {
            service: name.clone(),
            endpoints: order.into_iter().map(|t| (t, open(t))).collect(),
        })
    }

    /// The endpoint `caller` keeps for the Service, if it is still among `usable`.
    fn affinity_for(
        &self,
        name: &ServiceName,
        caller: IpAddr,
        usable: &[SocketAddr],
    ) -> Option<SocketAddr> {
        let table = self.affinity.lock().expect("affinity table poisoned");
        let (endpoint, until) = table.get(&(name.clone(), caller))?;
        (*until > Instant::now() && usable.contains(endpoint)).then_some(*endpoint)
    }

    fn keep_affinity(&self, name: &ServiceName, caller: IpAddr, at: SocketAddr, timeout: Duration) {
        let mut table = self.affinity.lock().expect("affinity table poisoned");
        let now = Instant::now();
        let key = (name.clone(), caller);
        if table.len() >= AFFINITY_ENTRIES && !table.contains_key(&key) {
            table.retain(|_, (_, until)| *until > now);
            if table.len() >= AFFINITY_ENTRIES {
                return;
            }
        }
        table.insert(key, (at, now + timeout));
    }

    fn held(service: &Service) -> Option<Held> {
        let spec = service.spec.as_ref()?;
        if spec.type_.as_deref() == Some("ExternalName") {
            return None;
        }
        let mut cluster_ips: Vec<IpAddr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .filter_map(|ip| ip.parse::<IpAddr>().ok())
            .map(|ip| ip.to_canonical())
            .collect();
        cluster_ips.sort();
        cluster_ips.dedup();
        if cluster_ips.is_empty() {
            // Headless ("None"): callers reach the pods' own addresses.
            return None;
        }
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .filter_map(|p| {
                let port = u16::try_from(p.port).ok()?;
                Some((port, Arc::from(p.name.as_deref().unwrap_or_default())))
            })
            .collect();
        let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|s| u64::try_from(s).ok())
                .map_or(DEFAULT_AFFINITY, Duration::from_secs)
        });
        Some(Held {
            cluster_ips,
            ports,
            affinity,
            local_only: spec.internal_traffic_policy.as_deref() == Some("Local"),
            prefer_close: matches!(
                spec.traffic_distribution.as_deref(),
                Some("PreferClose" | "PreferSameZone")
            ),
        })
    }

    fn slice(state: &mut State, slice: &EndpointSlice) -> Option<Slice> {
        let ipv6 = match slice.address_type.as_str() {
            "IPv4" => false,
            "IPv6" => true,
            _ => return None, // FQDN: nothing to dial by address
        };
        let namespace = slice.metadata.namespace.as_deref()?;
        let service = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
        let service = state.intern(&format!("{namespace}/{service}"));
        let ports = slice
            .ports
            .iter()
            .flatten()
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .filter_map(|p| {
                let port = u16::try_from(p.port?).ok()?;
                Some((state.intern(p.name.as_deref().unwrap_or_default()), port))
            })
            .collect();
        let endpoints = slice
            .endpoints
            .iter()
            .filter_map(|e| {
                let ip = e.addresses.first()?.parse::<IpAddr>().ok()?.to_canonical();
                let conditions = e.conditions.as_ref();
                let condition = |f: fn(
                    &k8s_openapi::api::discovery::v1::EndpointConditions,
                ) -> Option<bool>| { conditions.and_then(f) };
                // Unset `ready` means ready ("unknown state, interpreted as ready");
                // unset `serving` follows `ready`.
                let ready = condition(|c| c.ready).unwrap_or(true);
                Some(Endpoint {
                    ip,
                    ready,
                    serving: condition(|c| c.serving).unwrap_or(ready),
                    terminating: condition(|c| c.terminating).unwrap_or(false),
                    node: e.node_name.as_deref().map(|n| state.intern(n)),
                    zone: e.zone.as_deref().map(|z| state.intern(z)),
                    for_zones: e
                        .hints
                        .iter()
                        .flat_map(|h| h.for_zones.iter().flatten())
                        .map(|z| state.intern(&z.name))
                        .collect(),
                })
            })
            .collect();
        Some(Slice {
            service,
            ipv6,
            ports,
            endpoints,
        })
    }

    /// Keeps the view for good: both watches list, watch, resume and relist by themselves;
    /// an error is logged and retried with back-off while the last view keeps serving.
    pub async fn follow(&self, client: Client) {
        tokio::join!(
            self.follow_services(client.clone()),
            self.follow_slices(client)
        );
    }

    async fn follow_services(&self, client: Client) {
        let api: Api<Service> = Api::all(client);
        let mut events = super::kube::watch(api, watcher::Config::default()).boxed();
        // A relist builds the set of Services anew beside the one serving, then swaps it.
        let mut relist: Option<Vec<(ServiceName, Held)>> = None;
        while let Some(event) = events.next().await {
            let name = |s: &Service| -> Option<ServiceName> {
                Some(
                    format!(
                        "{}/{}",
                        s.metadata.namespace.as_deref()?,
                        s.metadata.name.as_deref()?
                    )
                    .into(),
                )
            };
            match event {
                Ok(watcher::Event::Init) => relist = Some(Vec::new()),
                Ok(watcher::Event::InitApply(service)) => {
                    if let (Some(building), Some(name), Some(held)) =
                        (relist.as_mut(), name(&service), Self::held(&service))
                    {
                        building.push((name, held));
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    if let Some(built) = relist.take() {
                        let mut state = self.write();
                        let count = built.len();
                        state.services.clear();
                        state.by_cluster_ip.clear();
                        for (name, held) in built {
                            let name = state.intern(&name);
                            state.put_service(name, Some(held));
                        }
                        drop(state);
                        info!(services = count, "service view listed its Services");
                    }
                    self.synced.send_modify(|(services, _)| *services = true);
                }
                Ok(watcher::Event::Apply(service)) => {
                    if let Some(name) = name(&service) {
                        let held = Self::held(&service);
                        let mut state = self.write();
                        let name = state.intern(&name);
                        state.put_service(name, held);
                    }
                }
                Ok(watcher::Event::Delete(service)) => {
                    if let Some(name) = name(&service) {
                        let mut state = self.write();
                        let name = state.intern(&name);
                        state.put_service(name, None);
                    }
                }
                Err(e) => {
                    warn!(error = %crate::errors::chain(&e), "service view: the watch of Services failed; the last view serves while it is retried");
                }
            }
        }
    }

    async fn follow_slices(&self, client: Client) {
        let api: Api<EndpointSlice> = Api::all(client);
        let config = watcher::Config::default().labels(SERVICE_NAME_LABEL);
        let mut events = super::kube::watch(api, config).boxed();
        let mut relist: Option<Vec<EndpointSlice>> = None;
        let node = self.node.as_deref();
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Init) => relist = Some(Vec::new()),
                Ok(watcher::Event::InitApply(slice)) => {
                    if let Some(building) = relist.as_mut() {
                        building.push(slice);
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    if let Some(built) = relist.take() {
                        let mut state = self.write();
                        let uids: Vec<Arc<str>> = state.slices.keys().cloned().collect();
                        for uid in uids {
                            state.put_slice(uid, None, node);
                        }
                        let count = built.len();
                        for slice in &built {
                            if let Some(uid) = slice.metadata.uid.as_deref() {
                                let kept = Self::slice(&mut state, slice);
                                state.put_slice(uid.into(), kept, node);
                            }
                        }
                        drop(state);
                        info!(slices = count, "service view listed its EndpointSlices");
                    }
                    self.synced.send_modify(|(_, slices)| *slices = true);
                }
                Ok(watcher::Event::Apply(slice)) => {
                    if let Some(uid) = slice.metadata.uid.as_deref() {
                        let mut state = self.write();
                        let kept = Self::slice(&mut state, &slice);
                        state.put_slice(uid.into(), kept, node);
                    }
                }
                Ok(watcher::Event::Delete(slice)) => {
                    if let Some(uid) = slice.metadata.uid.as_deref() {
                        self.write().put_slice(uid.into(), None, node);
                    }
                }
                Err(e) => {
                    warn!(error = %crate::errors::chain(&e), "service view: the watch of EndpointSlices failed; the last view serves while it is retried");
                }
            }
        }
    }
}

/// Every endpoint of `service`'s slices of one family that serves `port_name`, with the
/// port the slice gives it; an address named by two slices (as during a slice's
/// replacement) once.
fn candidates<'a>(
    state: &'a State,
    service: &ServiceName,
    port_name: &str,
    ipv6: bool,
) -> Vec<Candidate<'a>> {
    let mut found: Vec<Candidate> = Vec::new();
    for uid in state.slices_of.get(service).into_iter().flatten() {
        let Some(slice) = state.slices.get(uid) else {
            continue;
        };
        if slice.ipv6 != ipv6 {
            continue;
        }
        let Some((_, port)) = slice.ports.iter().find(|(name, _)| &**name == port_name) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let target = SocketAddr::new(endpoint.ip, *port);
            if !found.iter().any(|c| c.target == target) {
                found.push(Candidate { target, endpoint });
            }
        }
    }
    found
}

/// Of two endpoints taken at random (`order` is already shuffled: its first two), the one
/// with fewer open connections.
fn power_of_two(order: &[SocketAddr], open: impl Fn(SocketAddr) -> usize) -> SocketAddr {
    match order {
        [only] => *only,
        [a, b, ..] => {
            if open(*b) < open(*a) {
                *b
            } else {
                *a
            }
        }
        [] => unreachable!("a pick is made among candidates only"),
    }
}

#[cfg(test)]
#[path = "services/tests.rs"]
mod tests;
