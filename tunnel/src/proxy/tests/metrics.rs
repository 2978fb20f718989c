//! What `/metrics` and the log streams say about carried, refused and unauthenticated
//! connections, read back as Prometheus reads it (`prometheus-parse`).

use std::{collections::HashMap, time::Duration};

use bytes::Bytes;
use time::OffsetDateTime;

use super::kit::{Daemon, FRONTEND, Kit, Logs, limits, pool_settings};
use crate::{ca::LeafSpec, telemetry::Telemetry};

/// The value of `name` with every label in `labels` (summed over the others).
fn value(telemetry: &Telemetry, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = telemetry.metrics.encode();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("the metrics text parses");
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// Every series of the families the end-to-end tests read, by name.
fn families(telemetry: &Telemetry) -> HashMap<String, usize> {
    let text = telemetry.metrics.encode();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("the metrics text parses");
    let mut names = HashMap::new();
    for sample in scrape.samples {
        *names.entry(sample.metric).or_default() += 1;
    }
    names
}

#[tokio::test]
async fn carried_streams_move_the_opened_closed_and_byte_counters_by_what_they_carried() {
    let logs = Logs::capture();
    let kit = Kit::new().await;
    let daemon = Daemon::start(kit.inputs(limits()));
    let pool = kit.pool(pool_settings());
    let inbound = [("direction", "inbound"), ("source_principal", FRONTEND)];
    let payload = Bytes::from(vec![7u8; 10_000]);
    for _ in 0..3 {
        let mut stream = kit.open(&pool, daemon.addr).await.expect("open a stream");
        stream
            .send
            .send_data(payload.clone().into(), true)
            .expect("send on the stream");
        let mut echoed = 0;
        while let Some(data) = stream.recv.data().await {
            let data = data.expect("read the echo");
            echoed += data.len();
            let _ = stream.recv.flow_control().release_capacity(data.len());
        }
        assert_eq!(echoed, payload.len(), "the workload echoes what it got");
    }
    // The inbound side counts a connection when its copy ends, just after the caller's.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while value(
        &kit.telemetry,
        "tunnel_tcp_connections_closed_total",
        &inbound,
    ) < 3.0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            kit.telemetry.metrics.encode()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let text = kit.telemetry.metrics.encode();
    println!("{text}");
    let get = |name: &str| value(&kit.telemetry, name, &inbound);
    assert_eq!(get("tunnel_tcp_connections_opened_total"), 3.0, "{text}");
    assert_eq!(get("tunnel_tcp_connections_closed_total"), 3.0, "{text}");
    assert_eq!(get("tunnel_tcp_received_bytes_total"), 30_000.0, "{text}");
    assert_eq!(get("tunnel_tcp_sent_bytes_total"), 30_000.0, "{text}");
    let labelled = [
        ("destination_workload", "orders"),
        ("destination_principal", "spiffe://example.org/orders"),
        ("source_workload", "unknown"),
    ];
    assert_eq!(
        value(
            &kit.telemetry,
            "tunnel_tcp_connections_opened_total",
            &labelled
        ),
        3.0,
        "{text}"
    );
    assert_eq!(
        value(
            &kit.telemetry,
            "tunnel_authorization_decisions_total",
            &[("workload", "orders"), ("decision", "allow")]
        ),
        3.0,
        "{text}"
    );
    // One pooled connection carried all three: one handshake each side.
    for direction in ["inbound", "outbound"] {
        let handshakes = [("direction", direction), ("outcome", "ok")];
        assert_eq!(
            value(&kit.telemetry, "tunnel_tls_handshakes_total", &handshakes),
            1.0,
            "{text}"
        );
    }
    let peer = [("peer_principal", super::kit::NODE)];
    assert_eq!(
        value(&kit.telemetry, "tunnel_pool_connections", &peer),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(&kit.telemetry, "tunnel_pool_streams", &peer),
        0.0,
        "{text}"
    );
    assert!(
        kit.telemetry.connections.is_empty(),
        "closed connections leave /connections"
    );

    let access = logs.lines_with("tunnel::access");
    assert_eq!(
        access.len(),
        3,
        "one access line per connection: {access:#?}"
    );
    let line = &access[0];
    println!("{line}");
    for field in [
        "direction=\"inbound\"",
        &format!("src_identity={FRONTEND}"),
        "ssl_client_verify=\"SUCCESS\"",
        "ssl_protocol=\"TLSv1.3\"",
        "ssl_cipher=\"TLS13_",
        "decision=\"allow\"",
        "bytes_sent=10000",
        "bytes_received=10000",
        "close_reason=\"closed\"",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
}

#[tokio::test]
async fn an_open_stream_is_listed_with_its_bytes_while_it_lasts() {
    let kit = Kit::new().await;
    let daemon = Daemon::start(kit.inputs(limits()));
    let pool = kit.pool(pool_settings());
    let mut stream = kit.open(&pool, daemon.addr).await.expect("open a stream");
    super::kit::echo_round_trip(&mut stream.send, &mut stream.recv).await;
    let listed = kit.telemetry.connections.list();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let view = &listed[0];
    assert_eq!(view.info.direction, "inbound");
    assert_eq!(&*view.info.workload, "orders");
    assert_eq!(view.info.src_identity.as_deref(), Some(FRONTEND));
    let hello = "hello through the tunnel".len() as u64;
    assert_eq!((view.bytes_received, view.bytes_sent), (hello, hello));
    assert_eq!(
        value(&kit.telemetry, "tunnel_pool_streams", &[]),
        1.0,
        "the open stream is counted on its pooled connection"
    );
}

#[tokio::test]
async fn a_policy_denial_is_counted_with_its_reason_and_rule() {
    let kit = Kit::new().await;
    let daemon = Daemon::start(kit.inputs(limits()));
    let pool = kit.pool(pool_settings());
    let refused = pool
        .open(
            &kit.key(daemon.addr),
            &kit.frontend,
            kit.billing.addr,
            Bytes::new(),
            None,
        )
        .await
        .err()
        .expect("billing does not admit frontend");
    assert_eq!(
        refused.fail_reason(),
        crate::telemetry::FailReason::policy_denied,
        "the caller's side reads the reason back: {refused}"
    );
    let text = kit.telemetry.metrics.encode();
    assert_eq!(
        value(
            &kit.telemetry,
            "tunnel_tcp_connections_failed_total",
            &[("direction", "inbound"), ("reason", "policy_denied")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(
            &kit.telemetry,
            "tunnel_authorization_decisions_total",
            &[
                ("workload", "billing"),
                ("decision", "deny"),
                ("rule", "mode")
            ]
        ),
        1.0,
        "no allow rule of billing matches: no rule decided\n{text}"
    );
    assert_eq!(
        value(&kit.telemetry, "tunnel_tcp_connections_opened_total", &[]),
        0.0
    );
}

#[tokio::test]
async fn an_expired_caller_certificate_counts_a_failed_handshake_and_gives_one_auth_line() {
    let logs = Logs::capture();
    let kit = Kit::new().await;
    let daemon = Daemon::start(kit.inputs(limits()));
    let mut spec = LeafSpec::workload(&FRONTEND.parse().unwrap(), crate::ca::DEFAULT_LEAF_TTL);
    spec.not_before = OffsetDateTime::now_utc() - time::Duration::days(2);
    spec.not_after = OffsetDateTime::now_utc() - time::Duration::days(1);
    let expired = kit.pki.issue_spec(&spec, "expired");
    let tls = kit.client_config(&expired, None);
    let error = kit
        .pool(pool_settings())
        .open(
            &kit.key(daemon.addr),
            &tls,
            kit.orders.addr,
            Bytes::new(),
            None,
        )
        .await
        .err()
        .expect("an expired caller is refused");
    let line = logs
        .wait_for("authentication failed", Duration::from_secs(2))
        .await;
    println!("{line}\ncaller: {error}");
    // The inbound side counts once its handshake thread has given the verdict back, which
    // can be a moment after the caller saw the refusal.
    let counted = async {
        while value(
            &kit.telemetry,
            "tunnel_tls_handshakes_total",
            &[("direction", "inbound"), ("outcome", "failed")],
        ) < 1.0
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), counted).await;
    let text = kit.telemetry.metrics.encode();
    assert_eq!(
        value(
            &kit.telemetry,
            "tunnel_tcp_connections_failed_total",
            &[("direction", "inbound"), ("reason", "tls_handshake_failed")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(
            &kit.telemetry,
            "tunnel_tls_handshakes_total",
            &[("direction", "inbound"), ("outcome", "failed")]
        ),
        1.0,
        "{text}"
    );
    // Both ends of the refusal are on the auth stream: the daemon's (which knows why) and
    // the caller's pool (which was told by an alert); exactly one line from each.
    let inbound: Vec<_> = logs
        .lines_with("tunnel::auth")
        .into_iter()
        .filter(|l| l.contains("direction=\"inbound\""))
        .collect();
    assert_eq!(inbound.len(), 1, "{inbound:#?}");
    assert!(inbound[0].contains("expired"), "{}", inbound[0]);
    assert!(
        logs.lines_with("refused tunnel connection").is_empty(),
        "a refused handshake is said once, on the auth stream:\n{}",
        logs.text()
    );
    let recent = kit.telemetry.auth_failures.recent();
    assert!(
        recent
            .iter()
            .any(|f| f.direction == "inbound" && f.reason.contains("expired")),
        "{recent:?}"
    );
}

/// Waits (up to 2 s) until `name` with `labels` reaches `at_least`; its value then.
async fn reaches(telemetry: &Telemetry, name: &str, labels: &[(&str, &str)], at_least: f64) -> f64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let now = value(telemetry, name, labels);
        if now >= at_least || tokio::time::Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A handshake that completes but carries nothing is counted `ok` as a handshake and
/// `no_stream` as a connection, never `tls_handshake_failed`: the peer closing after TLS,
/// sending something that is not HTTP/2, or opening no stream before the handshake timeout.
#[tokio::test]
async fn a_completed_handshake_that_opens_no_stream_is_no_stream_not_a_handshake_failure() {
    use tokio::io::AsyncWriteExt as _;
    let kit = Kit::new().await;
    let handshake_timeout = Duration::from_millis(300);
    let daemon = Daemon::start(kit.inputs(crate::proxy::inbound::InboundLimits {
        handshake_timeout,
        ..limits()
    }));
    let tls = |addr: std::net::SocketAddr| {
        let config = kit.frontend.config.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tokio_rustls::TlsConnector::from(config)
                .connect(
                    rustls_pki_types::ServerName::IpAddress(addr.ip().into()),
                    tcp,
                )
                .await
                .expect("the TLS handshake completes")
        }
    };
    let failed = |reason| [("direction", "inbound"), ("reason", reason)];
    let failures = "tunnel_tcp_connections_failed_total";
    // TLS, then closed.
    let mut closed = tls(daemon.addr).await;
    closed.shutdown().await.unwrap();
    drop(closed);
    // TLS, then not HTTP/2.
    let mut garbage = tls(daemon.addr).await;
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    garbage.flush().await.unwrap();
    // TLS and HTTP/2, then no stream.
    let idle = super::kit::H2Client::connect(daemon.addr, &kit.frontend.config).await;
    let no_stream = reaches(&kit.telemetry, failures, &failed("no_stream"), 3.0).await;
    let text = kit.telemetry.metrics.encode();
    println!(
        "{}",
        text.lines()
            .filter(|l| l.starts_with("tunnel_tcp_connections_failed_total")
                || l.starts_with("tunnel_tls_handshakes_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(no_stream, 3.0, "{text}");
    assert_eq!(
        value(&kit.telemetry, failures, &failed("tls_handshake_failed")),
        0.0,
        "{text}"
    );
    assert_eq!(
        value(
            &kit.telemetry,
            "tunnel_tls_handshakes_total",
            &[("direction", "inbound"), ("outcome", "ok")]
        ),
        3.0,
        "{text}"
    );
    assert_eq!(
        value(
            &kit.telemetry,
            "tunnel_tls_handshakes_total",
            &[("direction", "inbound"), ("outcome", "failed")]
        ),
        0.0,
        "{text}"
    );
    drop((garbage, idle));
}

#[tokio::test]
async fn the_metrics_name_every_family_once_the_credentials_are_followed() {
    let kit = Kit::new().await;
    let credentials = std::sync::Arc::new(
        crate::credentials::Credentials::load(
            &kit.config,
            crate::app::wiring::credentials_spec(&kit.config),
        )
        .unwrap(),
    );
    kit.telemetry.metrics.certificates.follow(&credentials);
    let names = families(&kit.telemetry);
    for name in [
        "tunnel_certificate_expiry_timestamp_seconds",
        "tunnel_certificate_reloads_total",
    ] {
        assert!(names.contains_key(name), "{name} in {names:?}");
    }
    assert_eq!(
        names["tunnel_certificate_expiry_timestamp_seconds"], 4,
        "node and three workloads"
    );
    let expiry = value(
        &kit.telemetry,
        "tunnel_certificate_expiry_timestamp_seconds",
        &[("owner", "node"), ("principal", super::kit::NODE)],
    );
    assert!(expiry > 1.7e9, "{expiry}");
}
