//! The pool: connection reuse and its limit, a peer going away, idle reaping, shared dials,
//! the negative cache, and a pooled connection that goes silent.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::task::JoinSet;

use super::kit::{
    Daemon, GoodbyeFirst, Kit, Logs, NODE, Relay, Silent, echo_round_trip, limits, pool_settings,
};
use crate::{
    errors,
    proxy::{
        inbound::InboundLimits,
        pool::{NEGATIVE_CACHE, Pool, PoolError, PoolKey, PoolSettings},
    },
};

#[tokio::test]
async fn streams_share_one_connection_until_its_stream_limit() {
    let kit = Kit::new().await;
    let daemon = Daemon::start(kit.inputs(limits()));
    let pool = Pool::new(PoolSettings {
        max_streams_per_connection: 2,
        ..pool_settings()
    });

    let mut first = kit.open(&pool, daemon.addr).await.expect("first open");
    let mut second = kit.open(&pool, daemon.addr).await.expect("second open");
    let mut third = kit.open(&pool, daemon.addr).await.expect("third open");
    println!(
        "connections of streams 1, 2, 3: {}, {}, {} (max 2 streams per connection)",
        first.connection, second.connection, third.connection
    );
    assert_eq!(
        first.connection, second.connection,
        "the second stream reuses the first stream's connection"
    );
    assert_ne!(
        third.connection, first.connection,
        "the third stream is past the limit of 2 and gets a new connection"
    );
    for stream in [&mut first, &mut second, &mut third] {
        echo_round_trip(&mut stream.send, &mut stream.recv).await;
    }

    // A stream that ends gives its place back.
    let full = first.connection;
    drop(first);
    let fourth = kit.open(&pool, daemon.addr).await.expect("fourth open");
    assert_eq!(
        fourth.connection, full,
        "a freed place on the first connection is used before anything new"
    );
    assert_eq!(kit.orders.accepted(), 4, "each stream was delivered once");
}

#[tokio::test]
async fn a_peer_that_allows_fewer_streams_per_connection_than_the_pool_gets_a_new_connection_at_once()
 {
    let kit = Kit::new().await;
    // Operators lower the inbound limit to bound memory (ARCHITECTURE.md); callers keep 100.
    let daemon = Daemon::start(kit.inputs(InboundLimits {
        max_streams_per_connection: 2,
        ..limits()
    }));
    let pool = Pool::new(pool_settings());
    let mut first = kit.open(&pool, daemon.addr).await.expect("first open");
    let second = kit.open(&pool, daemon.addr).await.expect("second open");

    let started = Instant::now();
    let mut third = kit.open(&pool, daemon.addr).await.expect("third open");
    let took = started.elapsed();
    println!(
        "third stream with the peer's limit at 2: {took:?}, on connection {} (the first two on {})",
        third.connection, first.connection
    );
    // h2 never sends past the peer's SETTINGS_MAX_CONCURRENT_STREAMS: it holds the request
    // back, where it would wait out the connect timeout and be taken for a silent peer.
    assert!(
        took < Duration::from_millis(500),
        "the third stream did not wait for the connect timeout ({:?}): {took:?}",
        pool_settings().connect_timeout
    );
    assert_eq!(second.connection, first.connection);
    assert_ne!(third.connection, first.connection, "a new connection");
    echo_round_trip(&mut third.send, &mut third.recv).await;
    echo_round_trip(&mut first.send, &mut first.recv).await;

    // The first connection is still good, and used again once it has room.
    drop(second);
    let fourth = kit.open(&pool, daemon.addr).await.expect("fourth open");
    assert_eq!(
        fourth.connection, first.connection,
        "the first connection is not abandoned"
    );
}

#[tokio::test]
async fn a_burst_on_a_new_connection_stays_within_the_peers_stream_limit() {
    let kit = Kit::new().await;
    let daemon = Daemon::start(kit.inputs(InboundLimits {
        max_streams_per_connection: 2,
        ..limits()
    }));
    let pool = Pool::new(pool_settings());

    // Ten opens wait on the first dial; the peer's limit is not known until its SETTINGS.
    let started = Instant::now();
    let mut opens = JoinSet::new();
    for _ in 0..10 {
        let (pool, key, tls, dst) = (
            pool.clone(),
            kit.key(daemon.addr),
            kit.frontend.clone(),
            kit.orders.addr,
        );
        opens.spawn(async move { pool.open(&key, &tls, dst, bytes::Bytes::new(), None).await });
    }
    let mut streams = Vec::new();
    while let Some(joined) = opens.join_next().await {
        match joined.expect("an open task") {
            Ok(stream) => streams.push(stream),
            Err(e) => panic!("an open of the burst failed: {e}"),
        }
    }
    let took = started.elapsed();
    let mut per_connection = std::collections::BTreeMap::new();
    for stream in &streams {
        *per_connection.entry(stream.connection).or_insert(0) += 1;
    }
    println!(
        "10 concurrent opens, peer limit 2: all open after {took:?}, streams per connection {per_connection:?}"
    );
    assert!(
        per_connection.values().all(|n| *n <= 2),
        "{per_connection:?}"
    );
    for stream in &mut streams {
        echo_round_trip(&mut stream.send, &mut stream.recv).await;
    }
}

#[tokio::test]
async fn a_peer_that_drains_and_restarts_costs_an_open_one_retry_on_a_fresh_connection() {
    let logs = Logs::capture();
    let kit = Kit::new().await;
    let mut daemon = Daemon::start(kit.inputs(limits()));
    let pool = Pool::new(pool_settings());

    // A long-lived stream keeps the old connection open (and in the pool) after the GOAWAY.
    let mut long_lived = kit.open(&pool, daemon.addr).await.expect("first open");
    daemon.drain().await;
    let restarted = Daemon::start_at(daemon.addr, kit.inputs(limits()));
    // Loopback delivers the GOAWAY in microseconds; this leaves room for a loaded machine.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let mut after = kit
        .open(&pool, restarted.addr)
        .await
        .expect("an open after the peer's GOAWAY succeeds");
    let took = started.elapsed();
    println!(
        "open after GOAWAY: {took:?}, on connection {} (the drained one was {})",
        after.connection, long_lived.connection
    );
    assert_ne!(
        after.connection, long_lived.connection,
        "the open is carried by a fresh connection"
    );
    logs.wait_for(
        "pooled connection is gone; retrying on a new one",
        Duration::from_secs(1),
    )
    .await;
    echo_round_trip(&mut after.send, &mut after.recv).await;
    // A drain only stops new streams: the open one is still served.
    echo_round_trip(&mut long_lived.send, &mut long_lived.recv).await;
}

/// A peer that says goodbye in good order to a connection just dialled (its certificate
/// was replaced, or it began to drain, between our dial and our first stream) has refused
/// nothing: the open is carried by one more dial. Seen in the end-to-end CA rotation, where
/// two of three thousand connections failed this way.
#[tokio::test]
async fn a_new_connection_closed_in_good_order_before_its_first_stream_is_dialled_again() {
    let kit = Kit::new().await;
    let daemon = Daemon::start(kit.inputs(limits()));
    let peer = GoodbyeFirst::start(daemon.addr, kit.pki.issue(NODE), 1).await;
    let pool = kit.pool(pool_settings());

    let mut stream = kit
        .open(&pool, peer.addr)
        .await
        .expect("the open is carried by a second connection");
    echo_round_trip(&mut stream.send, &mut stream.recv).await;
    assert_eq!(
        peer.accepted(),
        2,
        "one goodbye, one connection that carried it"
    );
    assert_eq!(kit.orders.accepted(), 1, "delivered once");

    // A peer that says goodbye to every connection is not dialled without end: each open
    // dials at most twice per attempt, and an open retries at most once.
    let peer = GoodbyeFirst::start(daemon.addr, kit.pki.issue(NODE), usize::MAX).await;
    let Err(error) = kit.open(&pool, peer.addr).await else {
        panic!("an open through a peer that never takes a stream succeeded");
    };
    println!(
        "every connection closed in good order: {} connections, then {}",
        peer.accepted(),
        errors::chain(&error)
    );
    assert!(
        (2..=4).contains(&peer.accepted()),
        "{} connections",
        peer.accepted()
    );
    assert!(
        !matches!(error, PoolError::Timeout { .. }),
        "it fails as soon as the second goodbye comes: {error:?}"
    );
}

#[tokio::test]
async fn a_connection_idle_past_the_idle_timeout_is_reaped_and_the_next_open_dials_anew() {
    let logs = Logs::capture();
    let kit = Kit::new().await;
    let daemon = Daemon::start(kit.inputs(limits()));
    let idle_timeout = Duration::from_millis(200);
    let pool = Pool::new(PoolSettings {
        idle_timeout,
        ..pool_settings()
    });
    tokio::spawn(pool.clone().reap_idle());

    let first = kit.open(&pool, daemon.addr).await.expect("first open");
    let id = first.connection;
    drop(first);
    let again = kit.open(&pool, daemon.addr).await.expect("an open at once");
    assert_eq!(again.connection, id, "not idle yet: reused");
    drop(again);
    let ended = Instant::now();

    // The reaper runs every max(timeout / 4, 100 ms): gone by timeout + one period.
    tokio::time::sleep(idle_timeout + Duration::from_millis(150)).await;
    let later = kit
        .open(&pool, daemon.addr)
        .await
        .expect("open after idling");
    println!(
        "after {:?} idle (idle timeout {idle_timeout:?}): connection {} then {}",
        ended.elapsed(),
        id,
        later.connection
    );
    assert_ne!(
        later.connection, id,
        "the idle connection was reaped and a new one dialled"
    );
    // Reaped means closed, not just forgotten by the pool while its socket stays open.
    logs.wait_for(
        &format!(
            "pooled connection closed peer={} connection={id}",
            daemon.addr
        ),
        Duration::from_secs(1),
    )
    .await;
}

#[tokio::test]
async fn concurrent_opens_to_a_silent_peer_share_one_dial_and_fail_together_within_the_connect_timeout()
 {
    let kit = Kit::new().await;
    let silent = Silent::start().await;
    let connect_timeout = Duration::from_millis(500);
    let pool = Pool::new(PoolSettings {
        connect_timeout,
        ..pool_settings()
    });

    let started = Instant::now();
    let mut opens = JoinSet::new();
    for _ in 0..10 {
        let (pool, key, tls, dst) = (
            pool.clone(),
            kit.key(silent.addr),
            kit.frontend.clone(),
            kit.orders.addr,
        );
        opens.spawn(async move {
            let result = pool.open(&key, &tls, dst, bytes::Bytes::new(), None).await;
            (started.elapsed(), result.err())
        });
    }
    let mut times = Vec::new();
    while let Some(joined) = opens.join_next().await {
        let (took, error) = joined.expect("an open task");
        assert!(
            matches!(error, Some(PoolError::Timeout { .. })),
            "each open fails with the connect timeout, got {error:?}"
        );
        times.push(took);
    }
    let (fastest, slowest) = (times.iter().min().unwrap(), times.iter().max().unwrap());
    println!(
        "10 opens to a silent peer failed after {fastest:?} .. {slowest:?} (spread {:?}; connect timeout {connect_timeout:?}); connections that reached it: {}",
        *slowest - *fastest,
        silent.accepted()
    );
    assert!(
        *slowest < connect_timeout * 2,
        "every open gave up within twice the connect timeout (slowest {slowest:?})"
    );
    assert!(
        *fastest >= connect_timeout - Duration::from_millis(50),
        "none gave up before the timeout (fastest {fastest:?})"
    );
    assert_eq!(silent.accepted(), 1, "one dial, shared by the ten opens");
}

#[tokio::test]
async fn a_failed_dial_is_remembered_for_the_negative_cache_period_then_dialled_again() {
    let kit = Kit::new().await;
    let silent = Silent::start().await;
    let connect_timeout = Duration::from_millis(300);
    let pool = Pool::new(PoolSettings {
        connect_timeout,
        ..pool_settings()
    });
    let open = || kit.open(&pool, silent.addr);

    let first = open().await.err().expect("the first open fails");
    let failed_at = Instant::now();
    assert!(matches!(first, PoolError::Timeout { .. }), "{first:?}");

    let started = Instant::now();
    let cached = open().await.err().expect("an open right after fails too");
    let at_once = started.elapsed();
    assert!(at_once < Duration::from_millis(100), "took {at_once:?}");
    assert_eq!(
        cached.to_string(),
        first.to_string(),
        "it is the dial's own error"
    );
    assert_eq!(silent.accepted(), 1, "without a new dial");

    // Still remembered shortly before the period ends...
    tokio::time::sleep_until((failed_at + NEGATIVE_CACHE - Duration::from_millis(250)).into())
        .await;
    let started = Instant::now();
    open().await.err().expect("still failing from the cache");
    let late = started.elapsed();
    assert!(late < Duration::from_millis(100), "took {late:?}");
    assert_eq!(silent.accepted(), 1, "still no new dial");

    // ...and dialled again after it.
    tokio::time::sleep_until((failed_at + NEGATIVE_CACHE + Duration::from_millis(50)).into()).await;
    let started = Instant::now();
    open().await.err().expect("the peer is still silent");
    let redial = started.elapsed();
    println!(
        "cached failures returned in {at_once:?} and {late:?}; after the {NEGATIVE_CACHE:?} period a new dial took {redial:?}"
    );
    assert!(
        redial >= connect_timeout - Duration::from_millis(50),
        "took {redial:?}"
    );
    assert_eq!(silent.accepted(), 2, "one new dial after the period");
}

#[tokio::test]
async fn an_open_on_a_pooled_connection_that_went_silent_is_retried_within_the_connect_timeout() {
    let kit = Kit::new().await;
    let daemon = Daemon::start(kit.inputs(limits()));
    let relay = Relay::start(daemon.addr).await;
    let connect_timeout = Duration::from_millis(300);
    let pool = Pool::new(PoolSettings {
        connect_timeout,
        ..pool_settings()
    });

    let first = kit.open(&pool, relay.addr).await.expect("first open");
    let silent_id = first.connection;
    drop(first);

    // The pooled connection goes silent; the path to the peer still works for new ones.
    relay.freeze_open();
    let started = Instant::now();
    let mut retried = kit
        .open(&pool, relay.addr)
        .await
        .expect("the open is retried on a fresh connection");
    let took = started.elapsed();
    echo_round_trip(&mut retried.send, &mut retried.recv).await;
    assert_ne!(
        retried.connection, silent_id,
        "not on the silent connection"
    );

    // Now nothing gets through at all: the open gives up, bounded.
    relay.freeze_all();
    let started = Instant::now();
    let error = kit
        .open(&pool, relay.addr)
        .await
        .err()
        .expect("nothing gets through");
    let gave_up = started.elapsed();
    println!(
        "silent pooled connection: retried and carried after {took:?}; with the peer silent to new connections too, gave up after {gave_up:?} ({}); connect timeout {connect_timeout:?}",
        errors::chain(&error)
    );
    assert!(
        took >= connect_timeout && took < connect_timeout + Duration::from_millis(500),
        "the retry came after one connect timeout, took {took:?}"
    );
    assert!(
        gave_up < connect_timeout * 2 + Duration::from_millis(500),
        "an unanswered CONNECT, then one timed-out dial: {gave_up:?}"
    );
}

#[tokio::test]
async fn a_connection_ends_with_its_streams_when_a_certificate_on_it_expires() {
    let logs = Logs::capture();
    let kit = Kit::new().await;
    // The node presents a certificate that expires in about two seconds.
    let spec = crate::ca::LeafSpec::workload(&NODE.parse().unwrap(), Duration::from_secs(2));
    let node = kit.pki.issue_spec(&spec, "short-lived-node");
    let mut inputs = kit.inputs(limits());
    kit.present_node(&mut inputs, &node);
    let daemon = Daemon::start(inputs);
    let pool = Pool::following(
        pool_settings(),
        Some(kit.credentials.subscribe()),
        kit.telemetry.clone(),
    );
    let mut stream = kit
        .open(&pool, daemon.addr)
        .await
        .expect("open while valid");
    echo_round_trip(&mut stream.send, &mut stream.recv).await;
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(6), async {
        while let Some(Ok(_)) = stream.recv.data().await {}
    })
    .await;
    println!(
        "the stream ended {:?} after its last echo",
        started.elapsed()
    );
    assert!(ended.is_ok(), "the stream outlived the node certificate");
    let closed = logs
        .wait_for("closed with its streams", Duration::from_secs(1))
        .await;
    println!("{closed}");
    assert!(closed.contains("expired at"), "{closed}");
    // A new connection is refused: the node's certificate is no longer valid.
    let error = kit.open(&pool, daemon.addr).await.err().expect("refused");
    println!("then: {error}");
    assert!(matches!(error, PoolError::Handshake { .. }), "{error}");
}

/// A pooled connection was verified for one identity: a call that must reach another one at
/// the same address (the pod there changed) dials and checks anew instead of riding it.
#[tokio::test]
async fn a_changed_expected_identity_never_rides_a_connection_made_for_another() {
    let kit = Kit::new().await;
    let daemon = Daemon::start(kit.inputs(limits()));
    let pool = Pool::new(pool_settings());
    let key_for = |identity: &str| PoolKey {
        identity: Some(identity.parse().unwrap()),
        ..kit.key(daemon.addr)
    };
    let expecting_node = kit.client_config(&kit.frontend_key, Some(NODE));
    let other = "spiffe://example.org/ns/shop/sa/audit";
    let expecting_other = kit.client_config(&kit.frontend_key, Some(other));
    let pool = &pool;
    // Opens a stream to orders through the daemon, expecting the peer to be `identity`.
    let open = |identity: &str| {
        let key = key_for(identity);
        let tls = if identity == NODE {
            expecting_node.clone()
        } else {
            expecting_other.clone()
        };
        async move {
            pool.open(&key, &tls, kit.orders.addr, Bytes::new(), None)
                .await
        }
    };

    let mut first = open(NODE).await.expect("the peer is the node expected");
    echo_round_trip(&mut first.send, &mut first.recv).await;
    let error = match open(other).await {
        Ok(stream) => panic!(
            "expecting {other}, the call rode connection {} made for {NODE}",
            stream.connection
        ),
        Err(e) => errors::chain(&e),
    };
    println!("expecting {other} at the same address: {error}");
    assert!(
        error.contains(&format!("expected the peer to be {other}")),
        "{error}"
    );
    // The connection made for the node still serves calls that expect the node.
    let again = open(NODE)
        .await
        .expect("the node's connection still serves");
    assert_eq!(again.connection, first.connection);
}
