//! The inbound side: never an open proxy, and every cap on what a peer can make it hold.

use std::{
    io,
    net::IpAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use rustls_pki_types::ServerName;
use tokio::{io::AsyncWriteExt, net::TcpStream};

use super::kit::{
    Daemon, Echo, Ended, H2Client, Kit, Logs, Relay, add_workload_port, connect_from,
    echo_round_trip, limits, pool_settings, request, wait_end,
};
use crate::{
    errors,
    proxy::{admission::Refusal, inbound::InboundLimits, pool::Pool},
};

#[tokio::test]
async fn every_refused_connect_gets_its_status_and_reason_and_nothing_is_delivered() {
    let logs = Logs::capture();
    let kit = Kit::new().await;
    // A port the config gives to a workload but that is also one of the daemon's own: the
    // own-port rule must win.
    let admin = Echo::start().await;
    let stray = Echo::start().await;
    let mut inputs = kit.inputs(limits());
    inputs.own_ports.insert(admin.addr.port());
    add_workload_port(&mut inputs, admin.addr.port(), "orders");
    let daemon = Daemon::start(inputs);
    let mut no_loopback_inputs = kit.inputs(limits());
    no_loopback_inputs.deliver_to_loopback = false;
    let no_loopback = Daemon::start(no_loopback_inputs);

    let client = H2Client::connect(daemon.addr, &kit.frontend.config).await;
    let orders = kit.orders.addr.port();
    let connect = |authority: String| request(Method::CONNECT, &authority);
    let cases = [
        (
            "a workload's own port on an address that is not this host's",
            connect(format!("192.0.2.1:{orders}")),
            StatusCode::FORBIDDEN,
            "192.0.2.1 is not an address of this host".to_string(),
        ),
        (
            "one of the daemon's own ports, although a workload claims it",
            connect(format!("127.0.0.1:{}", admin.addr.port())),
            StatusCode::FORBIDDEN,
            format!(
                "port {} is one of the daemon's own ports",
                admin.addr.port()
            ),
        ),
        (
            "the tunnel port itself",
            connect(daemon.addr.to_string()),
            StatusCode::FORBIDDEN,
            format!(
                "port {} is one of the daemon's own ports",
                daemon.addr.port()
            ),
        ),
        (
            "a port no workload owns",
            connect(format!("127.0.0.1:{}", stray.addr.port())),
            StatusCode::FORBIDDEN,
            format!(
                "port {} of 127.0.0.1 belongs to no workload",
                stray.addr.port()
            ),
        ),
        (
            "a workload whose policy does not admit the caller",
            connect(kit.billing.addr.to_string()),
            StatusCode::FORBIDDEN,
            format!(
                "no policy allows spiffe://example.org/frontend to reach billing ({}): no allow \
                 rule of workload \"billing\" matches spiffe://example.org/frontend",
                kit.billing.addr
            ),
        ),
        (
            "the unspecified address",
            connect(format!("0.0.0.0:{orders}")),
            StatusCode::FORBIDDEN,
            "0.0.0.0 is not a deliverable address".to_string(),
        ),
        (
            "a multicast address",
            connect(format!("224.0.0.1:{orders}")),
            StatusCode::FORBIDDEN,
            "224.0.0.1 is not a deliverable address".to_string(),
        ),
        (
            "the broadcast address",
            connect(format!("255.255.255.255:{orders}")),
            StatusCode::FORBIDDEN,
            "255.255.255.255 is not a deliverable address".to_string(),
        ),
        (
            "another method than CONNECT",
            request(Method::GET, &format!("http://{}/", kit.orders.addr)),
            StatusCode::METHOD_NOT_ALLOWED,
            "method GET (only CONNECT is served)".to_string(),
        ),
        (
            "an authority that is not ip:port",
            connect(format!("orders.example.org:{orders}")),
            StatusCode::BAD_REQUEST,
            format!("authority \"orders.example.org:{orders}\" is not an ip:port"),
        ),
    ];
    for (what, request, status, reason) in cases {
        let (answered, header) = client.answer(request).await;
        println!("{what}: {} ({reason})", answered.as_u16());
        assert_eq!(answered, status, "{what}");
        // The caller gets the same reason, after a code for programs.
        let header = header.unwrap_or_else(|| panic!("{what}: no refusal header"));
        let (code, sentence) = header.split_once("; ").expect("code; sentence");
        assert!(!code.is_empty() && !code.contains(' '), "{what}: {header}");
        assert!(
            reason.starts_with(sentence) || sentence.starts_with(&reason[..reason.len().min(60)]),
            "{what}: {header}"
        );
        let line = logs.wait_for(&reason, Duration::from_secs(1)).await;
        assert!(line.contains("refused CONNECT"), "{what}: {line}");
    }

    // Loopback only for a daemon that delivers there in tests; never in production.
    let strict = H2Client::connect(no_loopback.addr, &kit.frontend.config).await;
    let answered = strict.status(connect(kit.orders.addr.to_string())).await;
    println!("loopback when not allowed: {}", answered.as_u16());
    assert_eq!(answered, StatusCode::FORBIDDEN, "loopback");
    logs.wait_for(
        "127.0.0.1 is not a deliverable address",
        Duration::from_secs(1),
    )
    .await;

    for (name, server) in [
        ("orders", &kit.orders),
        ("billing", &kit.billing),
        ("the daemon's own port", &admin),
        ("a port of no workload", &stray),
    ] {
        assert_eq!(server.accepted(), 0, "nothing was delivered to {name}");
    }
    // The same client, to an allowed destination: the refusals above were not a broken setup.
    let (status, mut send, mut recv) = client
        .send(connect(kit.orders.addr.to_string()))
        .await
        .expect("an allowed CONNECT is answered");
    assert_eq!(status, StatusCode::OK);
    echo_round_trip(&mut send, &mut recv).await;
    assert_eq!(kit.orders.accepted(), 1);
}

#[tokio::test]
async fn connections_that_never_speak_are_capped_per_address_give_way_oldest_first_and_are_closed_by_the_handshake_timeout()
 {
    let kit = Kit::new().await;
    let handshake_timeout = Duration::from_millis(400);
    let daemon = Daemon::start(kit.inputs(InboundLimits {
        max_unauthenticated: 3,
        max_unauthenticated_per_address: 2,
        handshake_timeout,
        ..limits()
    }));
    // Two flooding addresses of one /24; the legitimate caller (the kit's, 127.0.0.1) is
    // in another.
    let (flooder, neighbour): (IpAddr, IpAddr) =
        ("127.0.1.2".parse().unwrap(), "127.0.1.3".parse().unwrap());
    let count = |refusal| daemon.refusals.count(refusal);
    let hold = |source| async move {
        let tcp = connect_from(source, daemon.addr)
            .await
            .unwrap_or_else(|e| panic!("a connection within the caps from {source}: {e}"));
        (tcp, Instant::now())
    };
    // Connects one past the per-address cap and waits for its end: how long the reset took.
    let reset = |source| async move {
        let started = Instant::now();
        let ended = match connect_from(source, daemon.addr).await {
            // Reset before connect() even returned.
            Err(e) => Ended::Error(e.kind()),
            Ok(mut tcp) => {
                wait_end(&mut tcp, Duration::from_secs(1))
                    .await
                    .expect("an extra connection is ended promptly")
                    .0
            }
        };
        assert!(
            matches!(
                ended,
                Ended::Reset | Ended::Error(io::ErrorKind::ConnectionReset)
            ),
            "an extra connection from {source} is reset, got {ended:?}"
        );
        started.elapsed()
    };

    // 5 from one address: 2 are held, 3 are over the per-address cap.
    let mut oldest = hold(flooder).await;
    let mut held = vec![hold(flooder).await];
    let mut resets = Vec::new();
    for _ in 0..3 {
        resets.push(reset(flooder).await);
    }
    assert_eq!(count(Refusal::UnauthenticatedFromAddress), 3);
    // A third slot from the neighbour: all 3 are held.
    held.push(hold(neighbour).await);
    // Full: the neighbour's next connection takes the slot of the oldest of its prefix.
    held.push(hold(neighbour).await);
    let (ended, _) = wait_end(&mut oldest.0, Duration::from_secs(1))
        .await
        .expect("the oldest connection of the busiest prefix is closed at once");
    println!(
        "the oldest of the flood ended ({ended:?}) {:?} after it connected, when a 4th connection came",
        oldest.1.elapsed()
    );
    assert!(
        oldest.1.elapsed() < handshake_timeout,
        "evicted, not timed out"
    );

    // A real caller while every slot is a flooder's gets through: it takes the oldest's.
    let pool = Pool::new(pool_settings());
    let mut stream = kit
        .open(&pool, daemon.addr)
        .await
        .expect("a caller from another prefix gets a slot while the flood holds them all");
    echo_round_trip(&mut stream.send, &mut stream.recv).await;
    assert_eq!(count(Refusal::Evicted), 2);
    assert_eq!(count(Refusal::Unauthenticated), 0);
    let slowest_reset = resets.iter().max().copied().unwrap();
    assert!(
        slowest_reset < Duration::from_millis(200),
        "resets are prompt: {slowest_reset:?}"
    );

    // What is left of the flood is closed by the handshake timeout; one was evicted for
    // the real caller.
    let mut closed_after = Vec::new();
    for (tcp, connected) in &mut held {
        let (ended, _) = wait_end(tcp, Duration::from_secs(2))
            .await
            .expect("a silent connection is closed");
        assert_eq!(ended, Ended::Closed, "closed, not reset");
        closed_after.push(connected.elapsed());
    }
    println!(
        "extra connections reset within {slowest_reset:?} of connecting; the flood's connections closed after \
         {closed_after:?} (handshake timeout {handshake_timeout:?}; the oldest of them evicted for the caller)"
    );
    assert_eq!(count(Refusal::HandshakeTimeout), 2);
    assert!(
        closed_after
            .iter()
            .filter(|after| **after >= handshake_timeout - Duration::from_millis(20))
            .count()
            == 2,
        "two timed out, one was evicted: {closed_after:?}"
    );
}

#[tokio::test]
async fn one_identity_from_one_address_gets_at_most_max_connections_per_peer() {
    let kit = Kit::new().await;
    let daemon = Daemon::start(kit.inputs(InboundLimits {
        max_connections_per_peer: 1,
        ..limits()
    }));
    let first = Pool::new(pool_settings());
    let mut held = kit.open(&first, daemon.addr).await.expect("first pool");

    let second = Pool::new(pool_settings());
    let started = Instant::now();
    let refused = kit
        .open(&second, daemon.addr)
        .await
        .err()
        .expect("a second connection of the same identity is refused");
    println!(
        "second connection refused after {:?}: {}",
        started.elapsed(),
        errors::chain(&refused)
    );
    assert_eq!(daemon.refusals.count(Refusal::ConnectionsPerPeer), 1);
    assert!(
        errors::chain(&refused).contains("max_connections_per_peer"),
        "the caller is told it hit a limit, not that its certificate was refused: {}",
        errors::chain(&refused)
    );
    echo_round_trip(&mut held.send, &mut held.recv).await;

    // Once the first connection is gone, its place is free.
    drop(held);
    drop(first);
    let started = Instant::now();
    let mut stream = loop {
        match kit.open(&second, daemon.addr).await {
            Ok(stream) => break stream,
            Err(e) if started.elapsed() < Duration::from_secs(2) => {
                println!("not yet: {}", errors::chain(&e));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the place was not freed: {}", errors::chain(&e)),
        }
    };
    println!(
        "the place was free {:?} after the first pool let go",
        started.elapsed()
    );
    echo_round_trip(&mut stream.send, &mut stream.recv).await;
}

#[tokio::test]
async fn a_connection_without_streams_is_sent_goaway_and_closed_after_the_idle_timeout() {
    let logs = Logs::capture();
    let kit = Kit::new().await;
    let idle_timeout = Duration::from_millis(200);
    let daemon = Daemon::start(kit.inputs(InboundLimits {
        idle_timeout,
        ..limits()
    }));
    let client = H2Client::connect(daemon.addr, &kit.frontend.config).await;
    let (status, mut send, mut recv) = client
        .send(request(Method::CONNECT, &kit.orders.addr.to_string()))
        .await
        .expect("CONNECT");
    assert_eq!(status, StatusCode::OK);
    echo_round_trip(&mut send, &mut recv).await;
    send.send_data(Bytes::new().into(), true).unwrap();
    while let Some(data) = recv.data().await {
        data.expect("the stream ends cleanly");
    }
    let ended = Instant::now();

    let closed = tokio::time::timeout(Duration::from_secs(2), client.driver)
        .await
        .expect("the daemon closes the idle connection")
        .expect("the driver task");
    let after = ended.elapsed();
    println!(
        "idle connection closed {after:?} after its last stream (idle timeout {idle_timeout:?}): {closed:?}"
    );
    closed.expect("a clean close (GOAWAY), not a broken connection");
    let refused = client
        .sender
        .clone()
        .ready()
        .await
        .expect_err("no new stream on a closed connection");
    assert!(
        refused.is_go_away()
            && refused.is_remote()
            && refused.reason() == Some(h2::Reason::NO_ERROR),
        "the daemon said GOAWAY (NO_ERROR): {refused:?}"
    );
    // The deadline is set when a stream opens and extended while streams are open.
    assert!(
        after < idle_timeout * 2 + Duration::from_millis(300),
        "closed within two idle periods: {after:?}"
    );
    logs.wait_for("closing idle tunnel connection", Duration::from_secs(1))
        .await;
}

#[tokio::test]
async fn a_caller_that_sends_its_client_hello_and_stops_is_cut_off_by_the_handshake_timeout() {
    let kit = Kit::new().await;
    let handshake_timeout = Duration::from_millis(300);
    let daemon = Daemon::start(kit.inputs(InboundLimits {
        handshake_timeout,
        ..limits()
    }));
    let mut hello = Vec::new();
    let mut client = rustls::ClientConnection::new(
        kit.frontend.config.clone(),
        ServerName::IpAddress(daemon.addr.ip().into()),
    )
    .unwrap();
    client.write_tls(&mut hello).unwrap();

    let mut tcp = TcpStream::connect(daemon.addr).await.unwrap();
    tcp.write_all(&hello).await.unwrap();
    let (ended, after) = wait_end(&mut tcp, Duration::from_secs(2))
        .await
        .expect("the daemon ends the handshake");
    println!(
        "a {}-byte ClientHello and silence: {ended:?} after {after:?} (handshake timeout {handshake_timeout:?})",
        hello.len()
    );
    assert!(
        after >= handshake_timeout - Duration::from_millis(20)
            && after < handshake_timeout + Duration::from_millis(500),
        "cut off by the handshake timeout: {after:?}"
    );
    // Counted by the connection's task once the handshake thread gives the verdict back,
    // a moment after that thread closed the socket.
    let counted = async {
        while daemon.refusals.count(Refusal::HandshakeTimeout) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(1), counted)
        .await
        .expect("the timeout is counted");
    assert_eq!(daemon.refusals.count(Refusal::HandshakeTimeout), 1);
}

#[tokio::test]
async fn an_oversized_header_list_is_refused_and_the_connection_keeps_serving() {
    let kit = Kit::new().await;
    let daemon = Daemon::start(kit.inputs(limits()));
    let client = H2Client::connect(daemon.addr, &kit.frontend.config).await;

    let mut big = request(Method::CONNECT, &kit.orders.addr.to_string());
    big.headers_mut().insert(
        "x-padding",
        HeaderValue::from_str(&"a".repeat(32 * 1024)).unwrap(),
    );
    let outcome = client.send(big).await;
    let shown = match &outcome {
        Ok((status, _, _)) => format!("status {}", status.as_u16()),
        Err(e) => format!("stream error {e}"),
    };
    println!("a CONNECT with a 32 KiB header: {shown}");
    match outcome {
        Ok((status, _, _)) => assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        Err(e) => assert!(e.reason().is_some(), "a stream reset, got {e}"),
    }
    assert_eq!(kit.orders.accepted(), 0, "nothing delivered");

    let (status, mut send, mut recv) = client
        .send(request(Method::CONNECT, &kit.orders.addr.to_string()))
        .await
        .expect("the same connection serves a normal CONNECT afterwards");
    assert_eq!(status, StatusCode::OK);
    echo_round_trip(&mut send, &mut recv).await;
}

/// What an Istio ztunnel adds to its CONNECT (seen from a real one): accepted, not needed.
#[tokio::test]
async fn ztunnels_extra_connect_headers_are_accepted() {
    let kit = Kit::new().await;
    let daemon = Daemon::start(kit.inputs(limits()));
    let client = H2Client::connect(daemon.addr, &kit.frontend.config).await;
    let mut connect = request(Method::CONNECT, &kit.orders.addr.to_string());
    for (name, value) in [
        ("baggage", "k8s.namespace.name=shop,k8s.pod.name=frontend-0"),
        ("forwarded", "for=10.1.1.2"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ] {
        connect
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    let (status, mut send, mut recv) = client.send(connect).await.expect("answered");
    assert_eq!(status, StatusCode::OK);
    echo_round_trip(&mut send, &mut recv).await;
}

#[tokio::test]
async fn a_caller_that_stops_reading_is_closed_when_its_pings_go_unanswered() {
    let logs = Logs::capture();
    let kit = Kit::new().await;
    let (interval, timeout) = (Duration::from_millis(200), Duration::from_millis(200));
    let daemon = Daemon::start(kit.inputs(InboundLimits {
        keepalive: interval,
        ..limits()
    }));
    let relay = Relay::start(daemon.addr).await;
    let client = H2Client::connect(relay.addr, &kit.frontend.config).await;
    // An open stream: the connection is busy, not idle, so only the PINGs can end it.
    let (status, mut send, mut recv) = client
        .send(request(Method::CONNECT, &kit.orders.addr.to_string()))
        .await
        .expect("CONNECT");
    assert_eq!(status, StatusCode::OK);
    echo_round_trip(&mut send, &mut recv).await;

    relay.freeze_all();
    let frozen = Instant::now();
    let closed = relay
        .upstream_closed(Duration::from_secs(3))
        .await
        .expect("the daemon closes a connection whose PINGs go unanswered");
    let after = closed - frozen;
    println!(
        "a caller that stopped reading was closed {after:?} later (PING every {interval:?}, {timeout:?} to answer)"
    );
    assert!(
        after < interval + timeout + Duration::from_millis(400),
        "closed within about a second: {after:?}"
    );
    logs.wait_for(
        "closing tunnel connection: PING unanswered",
        Duration::from_secs(1),
    )
    .await;
}
