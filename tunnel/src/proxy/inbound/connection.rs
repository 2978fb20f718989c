//! One peer's TLS connection: admission through the handshakes, then HTTP/2 served until
//! the peer closes, the connection idles out, a PING goes unanswered, a drain ends it, or a
//! certificate on it expires or is no longer trusted (a replaced node certificate lets it
//! finish its streams, as a drain does).

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
};

use bytes::Bytes;
use tokio::{
    net::TcpStream,
    time::{Instant, sleep_until, timeout_at},
};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info};

use super::{PodServer, Shared, Unauthenticated, stream};
use crate::{
    credentials::lifetime::{Authenticated, Ending, Watch},
    drain::DrainWatcher,
    identity::Purpose,
    proxy::{
        admission::Refusal,
        copy,
        hbone::{self, TlsParams},
    },
    telemetry::Direction,
    tls::{self, Phase},
};

/// How long a connection refused after its handshake stays open once its GOAWAY is sent.
const GOAWAY_LINGER: std::time::Duration = std::time::Duration::from_millis(500);

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

pub(super) async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    unauthenticated: Unauthenticated,
    pod: Option<Arc<PodServer>>,
    shared: Arc<Shared>,
    mut drain: DrainWatcher,
) {
    let limits = shared.inputs.limits;
    hbone::configure_tunnel_socket(&tcp);
    // One deadline for every step before the connection is served: a slow peer cannot
    // stretch it by being slow in each step in turn.
    let deadline = Instant::now() + limits.handshake_timeout;
    let timed_out = || shared.log_refusal(Refusal::HandshakeTimeout, peer, "");

    let mut first = [0u8; 1];
    match timeout_at(deadline, tcp.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == TLS_HANDSHAKE_RECORD => {}
        Ok(Ok(1)) => {
            copy::reset(&tcp);
            return shared.log_refusal(Refusal::NotTls, peer, "");
        }
        Ok(_) => return, // closed before saying anything
        Err(_) => return timed_out(),
    }
    let Ok(Ok(handshake_permit)) =
        timeout_at(deadline, shared.handshakes.clone().acquire_owned()).await
    else {
        return timed_out();
    };
    let Some((snapshot, watch)) =
        Watch::inbound(&shared.inputs.snapshots, pod.as_ref().map(|p| &p.name))
    else {
        // Its certificate is gone: the pod is being removed.
        copy::reset(&tcp);
        return;
    };
    // A config of this connection's own, so a refusal can name what the caller presented.
    // A pod's listener presents the pod's certificate, so the caller can check it reached
    // that workload (ztunnel does).
    let (server_config, presented) = match tls::recording_server_config(
        watch.own.key.clone(),
        snapshot.client_verifier().clone(),
        snapshot.trust.clone(),
    ) {
        Ok(built) => built,
        Err(e) => {
            let reason = format!("cannot build the TLS configuration: {e}");
            return shared.refuse_handshake(peer, &reason, tls::RefusalKind::Other, None);
        }
    };
    drop(snapshot);
    let acceptor = TlsAcceptor::from(server_config);
    let tls_started = std::time::Instant::now();
    let mut tls_stream = match timeout_at(deadline, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            let presented = presented.get().cloned().unwrap_or_default();
            let reason = match &presented.revoked {
                Some(entry) => format!("the certificate has been revoked: {entry}"),
                None => tls::describe_connection_error(&e, Phase::Handshake),
            };
            let kind = tls::RefusalKind::in_chain(&e);
            return shared.refuse_handshake(peer, &reason, kind, presented.identity);
        }
        Err(_) => return timed_out(),
    };
    drop(handshake_permit);
    let metrics = &shared.inputs.telemetry.metrics.proxy;
    metrics.handshake(Direction::Inbound, Some(tls_started.elapsed()));
    let Some(caller) = tls::peer_identity(tls_stream.get_ref().1, Purpose::ClientAuth) else {
        // The verifier accepted it, so this cannot happen; refuse rather than assume.
        return shared.log_refusal(
            Refusal::HandshakeFailed,
            peer,
            "verified client certificate has no readable identity",
        );
    };
    let peer_chain: Vec<rustls_pki_types::CertificateDer<'static>> = tls_stream
        .get_ref()
        .1
        .peer_certificates()
        .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    let session = Arc::new(Session {
        tls: TlsParams::of(tls_stream.get_ref().1),
        subject_dn: peer_chain
            .first()
            .and_then(|leaf| subject_dn(leaf.as_ref())),
        ended: OnceLock::new(),
        pod,
    });
    let mut lifetime = Authenticated::new(watch, peer_chain);
    hbone::batch_tls_writes(tls_stream.get_mut().1);
    let handshake =
        hbone::server_builder(limits.max_streams_per_connection).handshake::<_, Bytes>(tls_stream);
    let mut connection = match timeout_at(deadline, handshake).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(e)) => {
            let reason = format!("HTTP/2 from {caller}: {e}");
            return shared.log_refusal(Refusal::HandshakeFailed, peer, &reason);
        }
        Err(_) => return timed_out(),
    };
    let Some(_peer_slot) = shared
        .connections_by_peer
        .try_acquire((caller.clone(), peer.ip()))
    else {
        shared.log_refusal(Refusal::ConnectionsPerPeer, peer, &caller.to_string());
        // Say why in HTTP/2 terms, so the caller's log names a limit rather than guessing at
        // a refused certificate. Once the GOAWAY is out, hold the socket a moment before
        // closing: closing at once, with the caller's SETTINGS ack unread, sends a reset that
        // can destroy the GOAWAY before the caller reads it.
        connection.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
        let _ = timeout_at(deadline, async {
            while connection.accept().await.is_some() {}
        })
        .await;
        tokio::time::sleep_until(deadline.min(Instant::now() + GOAWAY_LINGER)).await;
        return;
    };
    drop(unauthenticated);
    debug!(%peer, %caller, "tunnel connection accepted");

    let caller = Arc::new(caller);
    let pings = connection
        .ping_pong()
        .expect("a new connection still has its PingPong");
    let unanswered = hbone::unanswered_ping(pings, limits.keepalive);
    tokio::pin!(unanswered);
    // A pool dials because it has a stream to open, so the first one is due at once: a
    // connection that opens none within the handshake timeout is closed as idle (this also
    // bounds a header block that never ends).
    let mut idle_deadline = Instant::now() + limits.handshake_timeout;
    let mut closing = false;
    loop {
        let next = tokio::select! {
            next = connection.accept() => next,
            () = &mut unanswered => {
                debug!(%peer, %caller, timeout = ?limits.keepalive, "closing tunnel connection: PING unanswered");
                return;
            }
            () = sleep_until(idle_deadline) => {
                if closing {
                    // GOAWAY was sent an idle period ago and the peer still holds on.
                    debug!(%peer, %caller, "closing tunnel connection: still open after GOAWAY");
                    return;
                }
                if connection.has_streams() {
                    idle_deadline = Instant::now() + limits.idle_timeout;
                } else {
                    debug!(%peer, %caller, idle_timeout = ?limits.idle_timeout, "closing idle tunnel connection");
                    connection.graceful_shutdown();
                    closing = true;
                    idle_deadline = Instant::now() + limits.keepalive;
                }
                continue;
            }
            ending = lifetime.next() => match ending {
                Ending::Replaced => {
                    debug!(%peer, %caller, "the node certificate was replaced: GOAWAY, the open streams finish");
                    if !closing {
                        connection.graceful_shutdown();
                        closing = true;
                        idle_deadline = far_future();
                    }
                    continue;
                }
                Ending::Close(reason) => {
                    info!(%peer, %caller, %reason, "tunnel connection closed with its streams");
                    let _ = session.ended.set(reason.to_string());
                    connection.abrupt_shutdown(h2::Reason::NO_ERROR);
                    // Let the GOAWAY out before the socket goes.
                    let _ = tokio::time::timeout(GOAWAY_LINGER, async {
                        while connection.accept().await.is_some() {}
                    })
                    .await;
                    return;
                }
            },
            () = drain.signaled(), if !closing => {
                // Ask the peer to stop opening streams; keep serving the open ones.
                connection.graceful_shutdown();
                closing = true;
                idle_deadline = far_future();
                continue;
            }
        };
        match next {
            Some(Ok((request, respond))) => {
                if !closing {
                    idle_deadline = Instant::now() + limits.idle_timeout;
                }
                tokio::spawn(stream::serve(
                    request,
                    respond,
                    peer,
                    caller.clone(),
                    session.clone(),
                    shared.clone(),
                    drain.clone(),
                ));
            }
            Some(Err(e)) => {
                debug!(%peer, caller = %caller, error = %e, "tunnel connection ended with an error");
                return;
            }
            None => return,
        }
    }
}

/// What every stream of one TLS connection shares, for the access log.
pub(super) struct Session {
    pub tls: TlsParams,
    /// The caller's certificate subject (nginx's `$ssl_client_s_dn`), when it has one.
    pub subject_dn: Option<String>,
    /// Why the connection was closed under its streams, once it was.
    pub ended: OnceLock<String>,
    /// The registered pod whose listener accepted it; `None`: the node's.
    pub pod: Option<Arc<PodServer>>,
}

/// A certificate's subject as RFC 4514-ish text, or `None` for an empty subject (SVIDs
/// need none).
fn subject_dn(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let dn = cert.subject().to_string();
    (!dn.is_empty()).then_some(dn)
}

/// A deadline that does not come (tokio's sleep needs one).
fn far_future() -> Instant {
    Instant::now() + std::time::Duration::from_secs(86_400 * 365)
}
