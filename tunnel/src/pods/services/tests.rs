use serde_json::{Value, json};

use super::*;

fn service(name: &str, cluster_ips: &[&str], spec: Value) -> Service {
    let mut object = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "namespace": "shop", "name": name, "uid": format!("svc-{name}") },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ips[0],
            "clusterIPs": cluster_ips,
            "ports": [{ "name": "http", "port": 80, "protocol": "TCP", "targetPort": "web" }],
        },
    });
    for (key, value) in spec.as_object().unwrap() {
        object["spec"][key] = value.clone();
    }
    serde_json::from_value(object).unwrap()
}

/// An endpoint: `(address, node, ready)`.
fn slice(
    uid: &str,
    service: &str,
    family: &str,
    endpoints: &[(&str, &str, bool)],
) -> EndpointSlice {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(ip, node, ready)| {
            json!({
                "addresses": [ip],
                "conditions": { "ready": ready, "serving": ready, "terminating": false },
                "nodeName": node,
                "zone": if *node == "n1" { "zone-a" } else { "zone-b" },
            })
        })
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "namespace": "shop", "name": uid, "uid": uid,
            "labels": { "kubernetes.io/service-name": service },
        },
        "addressType": family,
        "endpoints": endpoints,
        "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
    }))
    .unwrap()
}

fn view_with(services: &[Service], slices: &[EndpointSlice]) -> ServiceView {
    let view = ServiceView::new(Some("n1"));
    {
        let mut state = view.write();
        for s in services {
            let name = state.intern(&format!(
                "{}/{}",
                s.metadata.namespace.as_deref().unwrap(),
                s.metadata.name.as_deref().unwrap()
            ));
            state.put_service(name, ServiceView::held(s));
        }
        for s in slices {
            let kept = ServiceView::slice(&mut state, s);
            state.put_slice(s.metadata.uid.as_deref().unwrap().into(), kept, Some("n1"));
        }
    }
    view
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

const CALLER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 1, 9));

fn endpoints(answer: Option<ServiceAnswer>) -> Vec<SocketAddr> {
    match answer {
        Some(ServiceAnswer::Endpoints { endpoints, .. }) => {
            endpoints.into_iter().map(|(t, _)| t).collect()
        }
        other => panic!("expected endpoints, got {other:?}"),
    }
}

fn refusal(answer: Option<ServiceAnswer>) -> String {
    match answer {
        Some(ServiceAnswer::NoEndpoint { service, why }) => format!("{service}: {why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_cluster_ip_port_resolves_to_ready_endpoints_at_the_slices_port() {
    let view = view_with(
        &[service("orders", &["10.96.0.10"], json!({}))],
        &[slice(
            "orders-1",
            "orders",
            "IPv4",
            &[
                ("10.1.1.2", "n1", true),
                ("10.1.2.2", "n2", true),
                ("10.1.2.3", "n2", false),
            ],
        )],
    );
    assert!(view.is_service_address("10.96.0.10".parse().unwrap()));
    assert!(!view.is_service_address("10.1.1.2".parse().unwrap()));
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..300 {
        let order = endpoints(view.resolve(CALLER, addr("10.96.0.10:80")));
        assert_eq!(order.len(), 2, "the not-ready endpoint is never tried");
        *seen.entry(order[0]).or_insert(0) += 1;
        assert_ne!(order[0], order[1], "a retry goes elsewhere");
    }
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        [addr("10.1.1.2:8080"), addr("10.1.2.2:8080")]
    );
    assert!(seen.values().all(|n| *n >= 90), "spread: {seen:?}");
    assert_eq!(
        view.resolve(CALLER, addr("10.96.0.11:80")),
        None,
        "not a Service"
    );
    assert_eq!(
        refusal(view.resolve(CALLER, addr("10.96.0.10:81"))),
        "shop/orders: no TCP port 81"
    );
}

#[test]
fn the_endpoint_with_fewer_open_connections_is_picked_of_two() {
    let view = view_with(
        &[service("orders", &["10.96.0.10"], json!({}))],
        &[slice(
            "s",
            "orders",
            "IPv4",
            &[("10.1.1.2", "n1", true), ("10.1.2.2", "n2", true)],
        )],
    );
    let busy = view.read().open[&"10.1.1.2".parse::<IpAddr>().unwrap()]
        .1
        .clone();
    let _held: Vec<_> = (0..5).map(|_| busy.hold()).collect();
    for _ in 0..50 {
        let order = endpoints(view.resolve(CALLER, addr("10.96.0.10:80")));
        assert_eq!(order[0], addr("10.1.2.2:8080"));
    }
}

#[test]
fn with_no_ready_endpoint_the_service_is_refused_and_terminating_ones_serve_as_a_last_resort() {
    let view = view_with(
        &[service("orders", &["10.96.0.10"], json!({}))],
        &[slice("s", "orders", "IPv4", &[("10.1.1.2", "n1", false)])],
    );
    assert_eq!(
        refusal(view.resolve(CALLER, addr("10.96.0.10:80"))),
        "shop/orders: no ready endpoint"
    );
    // A Service without any slice yet is refused the same way.
    let empty = view_with(&[service("new", &["10.96.0.12"], json!({}))], &[]);
    assert_eq!(
        refusal(empty.resolve(CALLER, addr("10.96.0.12:80"))),
        "shop/new: no ready endpoint"
    );
    let mut terminating = slice("t", "orders", "IPv4", &[("10.1.2.2", "n2", true)]);
    terminating.endpoints[0].conditions = Some(
        serde_json::from_value(json!({"ready": false, "serving": true, "terminating": true}))
            .unwrap(),
    );
    let view = view_with(
        &[service("orders", &["10.96.0.10"], json!({}))],
        &[terminating],
    );
    assert_eq!(
        endpoints(view.resolve(CALLER, addr("10.96.0.10:80"))),
        [addr("10.1.2.2:8080")]
    );
}

#[test]
fn internal_traffic_policy_local_keeps_calls_on_this_node() {
    let local = json!({ "internalTrafficPolicy": "Local" });
    let view = view_with(
        &[service("orders", &["10.96.0.10"], local.clone())],
        &[slice(
            "s",
            "orders",
            "IPv4",
            &[("10.1.1.2", "n1", true), ("10.1.2.2", "n2", true)],
        )],
    );
    for _ in 0..20 {
        assert_eq!(
            endpoints(view.resolve(CALLER, addr("10.96.0.10:80"))),
            [addr("10.1.1.2:8080")]
        );
    }
    let elsewhere = view_with(
        &[service("orders", &["10.96.0.10"], local)],
        &[slice("s", "orders", "IPv4", &[("10.1.2.2", "n2", true)])],
    );
    assert_eq!(
        refusal(elsewhere.resolve(CALLER, addr("10.96.0.10:80"))),
        "shop/orders: no ready endpoint on this node (internalTrafficPolicy: Local)"
    );
}

#[test]
fn prefer_close_keeps_calls_in_this_nodes_zone_while_it_has_endpoints() {
    let close = json!({ "trafficDistribution": "PreferClose" });
    // n1 is in zone-a (learnt from its own endpoint); 10.1.3.2 on n3 is in zone-a too.
    let view = view_with(
        &[service("orders", &["10.96.0.10"], close)],
        &[slice(
            "s",
            "orders",
            "IPv4",
            &[("10.1.1.2", "n1", true), ("10.1.2.2", "n2", true)],
        )],
    );
    for _ in 0..20 {
        assert_eq!(
            endpoints(view.resolve(CALLER, addr("10.96.0.10:80"))),
            [addr("10.1.1.2:8080")]
        );
    }
}

#[test]
fn client_ip_affinity_keeps_a_caller_on_its_endpoint_while_it_is_ready() {
    let sticky = json!({ "sessionAffinity": "ClientIP" });
    let three = [
        ("10.1.1.2", "n1", true),
        ("10.1.2.2", "n2", true),
        ("10.1.2.3", "n2", true),
    ];
    let view = view_with(
        &[service("orders", &["10.96.0.10"], sticky.clone())],
        &[slice("s", "orders", "IPv4", &three)],
    );
    let first = endpoints(view.resolve(CALLER, addr("10.96.0.10:80")))[0];
    for _ in 0..50 {
        assert_eq!(
            endpoints(view.resolve(CALLER, addr("10.96.0.10:80")))[0],
            first
        );
    }
    // Another caller is balanced on its own; over many callers, every endpoint is used.
    let picked: std::collections::BTreeSet<SocketAddr> = (1..=60u8)
        .map(|i| {
            let caller = IpAddr::from([10, 1, 2, i]);
            endpoints(view.resolve(caller, addr("10.96.0.10:80")))[0]
        })
        .collect();
    assert_eq!(picked.len(), 3);
    // The kept endpoint stops being ready: the caller moves, and stays on the new one.
    let remaining: Vec<_> = three
        .iter()
        .map(|(ip, node, _)| (*ip, *node, addr(&format!("{ip}:8080")) != first))
        .collect();
    {
        let mut state = view.write();
        let kept = ServiceView::slice(&mut state, &slice("s", "orders", "IPv4", &remaining));
        state.put_slice("s".into(), kept, Some("n1"));
    }
    let moved = endpoints(view.resolve(CALLER, addr("10.96.0.10:80")))[0];
    assert_ne!(moved, first);
    for _ in 0..20 {
        assert_eq!(
            endpoints(view.resolve(CALLER, addr("10.96.0.10:80")))[0],
            moved
        );
    }
}

#[test]
fn an_ipv6_cluster_ip_gets_the_ipv6_slices_endpoints() {
    let view = view_with(
        &[service("orders", &["10.96.0.10", "fd00:96::10"], json!({}))],
        &[
            slice("v4", "orders", "IPv4", &[("10.1.2.2", "n2", true)]),
            slice("v6", "orders", "IPv6", &[("fd01:2::2", "n2", true)]),
        ],
    );
    assert_eq!(
        endpoints(view.resolve(CALLER, addr("[fd00:96::10]:80"))),
        [addr("[fd01:2::2]:8080")]
    );
    assert_eq!(
        endpoints(view.resolve(CALLER, addr("10.96.0.10:80"))),
        [addr("10.1.2.2:8080")]
    );
}

#[test]
fn headless_and_external_name_services_are_not_resolved_and_a_deleted_service_goes() {
    let headless = service("db", &["None"], json!({}));
    let external: Service = serde_json::from_value(json!({
        "metadata": { "namespace": "shop", "name": "ext", "uid": "e" },
        "spec": { "type": "ExternalName", "externalName": "example.org" },
    }))
    .unwrap();
    assert_eq!(ServiceView::held(&headless), None);
    assert_eq!(ServiceView::held(&external), None);
    let view = view_with(&[service("orders", &["10.96.0.10"], json!({}))], &[]);
    view.write().put_service("shop/orders".into(), None);
    assert!(!view.is_service_address("10.96.0.10".parse().unwrap()));
    assert!(view.read().by_cluster_ip.is_empty());
}

#[test]
fn a_slice_port_of_another_name_is_not_this_service_ports_endpoint() {
    let mut other_port = slice("s", "orders", "IPv4", &[("10.1.2.2", "n2", true)]);
    other_port.ports = Some(vec![
        serde_json::from_value(json!({ "name": "metrics", "port": 9090, "protocol": "TCP" }))
            .unwrap(),
    ]);
    let view = view_with(
        &[service("orders", &["10.96.0.10"], json!({}))],
        &[other_port],
    );
    assert_eq!(
        refusal(view.resolve(CALLER, addr("10.96.0.10:80"))),
        "shop/orders: no ready endpoint"
    );
}

#[test]
fn removing_every_slice_leaves_no_endpoint_state_behind() {
    let view = view_with(
        &[service("orders", &["10.96.0.10"], json!({}))],
        &[
            slice("a", "orders", "IPv4", &[("10.1.1.2", "n1", true)]),
            slice(
                "b",
                "orders",
                "IPv4",
                &[("10.1.1.2", "n1", true), ("10.1.2.2", "n2", true)],
            ),
        ],
    );
    assert_eq!(view.len(), (1, 2, 2));
    view.write().put_slice("a".into(), None, Some("n1"));
    assert_eq!(view.len(), (1, 1, 2), "10.1.1.2 is still in slice b");
    view.write().put_slice("b".into(), None, Some("n1"));
    let state = view.read();
    assert!(state.open.is_empty() && state.slices.is_empty() && state.slices_of.is_empty());
}

/// A figure, not a limit: what 1,000 Services with 10 endpoints each cost the view
/// (`-- --nocapture --test-threads 1` for a clean reading).
#[test]
fn the_view_of_1000_services_with_10000_endpoints() {
    use crate::test_support::rss_kib;
    let services: Vec<Service> = (0..1000u32)
        .map(|i| {
            let [_, _, hi, lo] = i.to_be_bytes();
            service(
                &format!("service-{i}"),
                &[&format!("10.96.{hi}.{lo}")],
                json!({}),
            )
        })
        .collect();
    let slices: Vec<EndpointSlice> = (0..1000u32)
        .map(|i| {
            let ips: Vec<String> = (0..10u32)
                .map(|j| {
                    let [_, _, hi, lo] = (i * 10 + j).to_be_bytes();
                    format!("10.64.{hi}.{lo}")
                })
                .collect();
            let endpoints: Vec<(&str, &str, bool)> =
                ips.iter().map(|ip| (ip.as_str(), "n2", true)).collect();
            slice(
                &format!("slice-{i}"),
                &format!("service-{i}"),
                "IPv4",
                &endpoints,
            )
        })
        .collect();
    let before = rss_kib();
    let view = view_with(&services, &slices);
    let after = rss_kib();
    drop((services, slices));
    assert_eq!(view.len(), (1000, 1000, 10_000));
    println!(
        "service view: 1000 Services, 1000 slices, 10000 endpoints: RSS {before} -> {after} KiB \
         ({} bytes a Service with its endpoints)",
        (after.saturating_sub(before)) * 1024 / 1000
    );
}
