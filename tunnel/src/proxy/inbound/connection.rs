//! One peer's TLS connection, in phases: [`expect_tls`] (the first byte is a handshake
//! record), [`authenticate`] (the TLS handshake, under the handshake cap), [`speak_h2`]
//! (the HTTP/2 handshake), [`claim_peer_slot`] (the per-identity cap), then
//! [`serve_streams`] until the peer closes, the connection idles out, a PING goes
//! unanswered, a drain ends it, or a certificate on it expires or is no longer trusted (a
//! replaced node certificate lets it finish its streams, as a drain does). Every phase
//! before the streams shares one deadline, and every refusal is said in [`refuse`].

use std::{net::SocketAddr, sync::Arc};

use crate::proxy::{
    budget::{Chunk, Window},
    read_ahead::ReadAhead,
};
use h2::server::Connection;
use tokio::{
    net::TcpStream,
    time::{Instant, sleep_until, timeout_at},
};
use tokio_rustls::server::TlsStream;
use tracing::{debug, info};

use super::{
    PodServer, Session, Shared,
    handshake_thread::{Handshake, Rehomed},
    stream,
};
use crate::{
    credentials::lifetime::{Authenticated, Ending, Watch},
    drain::DrainWatcher,
    identity::{Purpose, SpiffeId},
    proxy::{
        admission::{KeyedSlot, PreTlsSlot, Refusal},
        copy,
        hbone::{self, TlsParams},
    },
    telemetry::{Direction, FailReason},
    tls::{self, Phase},
};

/// How long a connection refused after its handshake stays open once its GOAWAY is sent.
const GOAWAY_LINGER: std::time::Duration = std::time::Duration::from_millis(500);

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

type H2Connection = Connection<TlsStream<ReadAhead<Rehomed>>, Chunk>;

/// Why a connection was not served.
enum Refused {
    /// Closed before saying anything, or the pod it was for is being removed (its
    /// certificate is gone): nothing worth a line.
    Silently,
    /// A refusal counted and logged with the others of its kind (rate-limited).
    Counted(Refusal, String),
    /// A refused TLS handshake: said on the auth stream with what the caller presented.
    Handshake {
        reason: String,
        kind: tls::RefusalKind,
        presented: Option<String>,
    },
}

/// A connection through its TLS handshake.
struct Handshaken {
    tls: TlsStream<ReadAhead<Rehomed>>,
    caller: SpiffeId,
    session: Arc<Session>,
    lifetime: Authenticated,
}

pub(super) async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    unauthenticated: PreTlsSlot,
    pod: Option<Arc<PodServer>>,
    shared: Arc<Shared>,
    drain: DrainWatcher,
) {
    hbone::configure_tunnel_socket(&tcp);
    // One deadline for every step before the connection is served: a slow peer cannot
    // stretch it by being slow in each step in turn.
    let deadline = Instant::now() + shared.inputs.limits.handshake_timeout;
    let admitted = async {
        expect_tls(&tcp, deadline).await?;
        let handshaken = authenticate(tcp, pod, &shared, deadline).await?;
        let Handshaken {
            tls,
            caller,
            session,
            lifetime,
        } = handshaken;
        // Charged once the caller is known; held while the connection lives.
        let window = shared.inputs.budget.window(hbone::LARGE_TLS_BUFFERS);
        let connection = speak_h2(tls, &caller, &shared, deadline, &window).await?;
        claim_peer_slot(connection, caller, peer, &shared, deadline)
            .await
            .map(|(connection, caller, slot)| {
                (connection, caller, slot, session, lifetime, window.charge)
            })
    };
    // A newcomer may take this connection's slot while it is still unauthenticated (the
    // oldest of the busiest prefix goes first): it is then closed.
    let admitted = tokio::select! {
        admitted = admitted => admitted,
        () = unauthenticated.evicted() => Err(Refused::Counted(Refusal::Evicted, String::new())),
    };
    match admitted {
        Ok((connection, caller, _peer_slot, session, lifetime, _window)) => {
            drop(unauthenticated);
            shared.pre_tls.authenticated(peer.ip());
            debug!(%peer, %caller, "tunnel connection accepted");
            serve_streams(
                connection,
                peer,
                Arc::new(caller),
                session,
                lifetime,
                shared,
                drain,
            )
            .await;
        }
        Err(refused) => refuse(&shared, peer, refused),
    }
}

/// The one place a connection's refusal is counted and said.
fn refuse(shared: &Shared, peer: SocketAddr, refused: Refused) {
    match refused {
        Refused::Silently => {}
        Refused::Counted(refusal, reason) => shared.log_refusal(refusal, peer, &reason),
        Refused::Handshake {
            reason,
            kind,
            presented,
        } => shared.refuse_handshake(peer, &reason, kind, presented),
    }
}

fn timed_out() -> Refused {
    Refused::Counted(Refusal::HandshakeTimeout, String::new())
}

/// Plaintext on the tunnel port is reset at once, before any TLS work.
async fn expect_tls(tcp: &TcpStream, deadline: Instant) -> Result<(), Refused> {
    let mut first = [0u8; 1];
    match timeout_at(deadline, tcp.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == TLS_HANDSHAKE_RECORD => Ok(()),
        Ok(Ok(1)) => {
            copy::reset(tcp);
            Err(Refused::Counted(Refusal::NotTls, String::new()))
        }
        Ok(_) => Err(Refused::Silently),
        Err(_) => Err(timed_out()),
    }
}

/// The TLS handshake, under the cap on handshakes computed at once. A pod's listener
/// presents the pod's certificate, so the caller can check it reached that workload
/// (ztunnel does).
async fn authenticate(
    tcp: TcpStream,
    pod: Option<Arc<PodServer>>,
    shared: &Shared,
    deadline: Instant,
) -> Result<Handshaken, Refused> {
    let Ok(Ok(handshake_permit)) =
        timeout_at(deadline, shared.handshakes.clone().acquire_owned()).await
    else {
        return Err(timed_out());
    };
    let Some((snapshot, watch)) =
        Watch::inbound(&shared.inputs.snapshots, pod.as_ref().map(|p| &p.name))
    else {
        // Its certificate is gone: the pod is being removed.
        copy::reset(&tcp);
        return Err(Refused::Silently);
    };
    // A config of this connection's own, so a refusal can name what the caller presented.
    let (server_config, presented) = tls::recording_server_config(
        watch.own.key.clone(),
        snapshot.client_verifier().clone(),
        snapshot.trust.clone(),
    )
    .map_err(|e| Refused::Handshake {
        reason: format!("cannot build the TLS configuration: {e}"),
        kind: tls::RefusalKind::Other,
        presented: None,
    })?;
    drop(snapshot);
    let tls_started = std::time::Instant::now();
    // On the handshake thread: its crypto does not hold up the streams of this runtime.
    let tls_stream = match shared
        .handshake_thread
        .accept(server_config, tcp, deadline)
        .await
    {
        Handshake::Done(stream) => *stream,
        Handshake::Failed(e) => {
            let presented = presented.get().cloned().unwrap_or_default();
            let reason = match &presented.revoked {
                Some(entry) => format!("the certificate has been revoked: {entry}"),
                None => tls::describe_connection_error(&e, Phase::Handshake),
            };
            return Err(Refused::Handshake {
                reason,
                kind: tls::RefusalKind::in_chain(&e),
                presented: presented.identity,
            });
        }
        Handshake::TimedOut => return Err(timed_out()),
    };
    drop(handshake_permit);
    shared.inputs.telemetry.metrics.proxy.handshake(
        crate::telemetry::Direction::Inbound,
        Some(tls_started.elapsed()),
    );
    let Some(caller) = tls::peer_identity(tls_stream.get_ref().1, Purpose::ClientAuth) else {
        // The verifier accepted it, so this cannot happen; refuse rather than assume.
        return Err(Refused::Counted(
            Refusal::HandshakeFailed,
            "verified client certificate has no readable identity".into(),
        ));
    };
    let peer_chain: Vec<rustls_pki_types::CertificateDer<'static>> = tls_stream
        .get_ref()
        .1
        .peer_certificates()
        .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    let caller_principal: crate::telemetry::metrics::Label = caller.to_string().into();
    let session = Arc::new(Session {
        tls: TlsParams::of(tls_stream.get_ref().1),
        subject_dn: peer_chain
            .first()
            .and_then(|leaf| subject_dn(leaf.as_ref())),
        ended: std::sync::OnceLock::new(),
        pod,
        // The caller drains what its streams read from workloads: its share of the budget,
        // looked up once for the connection.
        reads: shared.inputs.budget.for_party(&caller_principal),
        caller_principal,
    });
    Ok(Handshaken {
        tls: tls_stream,
        caller,
        session,
        lifetime: Authenticated::new(watch, peer_chain),
    })
}

/// The HTTP/2 handshake, with the stream and header limits the caps set.
async fn speak_h2(
    mut tls_stream: TlsStream<ReadAhead<Rehomed>>,
    caller: &SpiffeId,
    shared: &Shared,
    deadline: Instant,
    window: &Window,
) -> Result<H2Connection, Refused> {
    if window.large_tls_buffers {
        let (io, connection) = tls_stream.get_mut();
        hbone::use_large_tls_buffers(io, connection);
    }
    let handshake =
        hbone::server_builder(shared.inputs.limits.max_streams_per_connection, window.size)
            .handshake::<_, Chunk>(tls_stream);
    // The TLS handshake was counted `ok`: what fails from here is not a handshake failure
    // but a connection that carries nothing (`no_stream`).
    match timeout_at(deadline, handshake).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => Err(Refused::Counted(
            Refusal::NoStream,
            format!("HTTP/2 from {caller}: {e}"),
        )),
        Err(_) => Err(Refused::Counted(
            Refusal::NoStream,
            format!(
                "no HTTP/2 preface from {caller} within {:?}",
                shared.inputs.limits.handshake_timeout
            ),
        )),
    }
}

/// A place under `max_connections_per_peer` for (caller, source address). Past it the
/// caller is told why in HTTP/2 terms, so its log names a limit rather than guessing at a
/// refused certificate.
async fn claim_peer_slot(
    mut connection: H2Connection,
    caller: SpiffeId,
    peer: SocketAddr,
    shared: &Shared,
    deadline: Instant,
) -> Result<
    (
        H2Connection,
        SpiffeId,
        KeyedSlot<(SpiffeId, std::net::IpAddr)>,
    ),
    Refused,
> {
    if let Some(slot) = shared
        .connections_by_peer
        .try_acquire((caller.clone(), peer.ip()))
    {
        return Ok((connection, caller, slot));
    }
    refuse(
        shared,
        peer,
        Refused::Counted(Refusal::ConnectionsPerPeer, caller.to_string()),
    );
    // Once the GOAWAY is out, hold the socket a moment before closing: closing at once,
    // with the caller's SETTINGS ack unread, sends a reset that can destroy the GOAWAY
    // before the caller reads it.
    connection.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
    let _ = timeout_at(deadline, async {
        while connection.accept().await.is_some() {}
    })
    .await;
    tokio::time::sleep_until(deadline.min(Instant::now() + GOAWAY_LINGER)).await;
    Err(Refused::Silently)
}

/// Serves the connection's streams, each in a task of its own, until it ends.
async fn serve_streams(
    mut connection: H2Connection,
    peer: SocketAddr,
    caller: Arc<SpiffeId>,
    session: Arc<Session>,
    mut lifetime: Authenticated,
    shared: Arc<Shared>,
    mut drain: DrainWatcher,
) {
    let limits = shared.inputs.limits;
    let pings = connection
        .ping_pong()
        .expect("a new connection still has its PingPong");
    let unanswered = hbone::unanswered_ping(pings, limits.keepalive);
    tokio::pin!(unanswered);
    // A pool dials because it has a stream to open, so the first one is due at once: a
    // connection that opens none within the handshake timeout is closed as idle (this also
    // bounds a header block that never ends), and counted as `no_stream`, as is one the
    // peer ends (or lets die) before its first stream.
    let mut idle_deadline = Instant::now() + limits.handshake_timeout;
    let mut closing = false;
    let mut opened_a_stream = false;
    let no_stream = || {
        shared
            .inputs
            .telemetry
            .metrics
            .proxy
            .failed(Direction::Inbound, FailReason::no_stream);
    };
    loop {
        let next = tokio::select! {
            next = connection.accept() => next,
            () = &mut unanswered => {
                debug!(%peer, %caller, timeout = ?limits.keepalive, "closing tunnel connection: PING unanswered");
                if !opened_a_stream && !closing {
                    no_stream();
                }
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
                    if !opened_a_stream {
                        no_stream();
                    }
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
                opened_a_stream = true;
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
                if !opened_a_stream && !closing {
                    no_stream();
                }
                return;
            }
            None => {
                if !opened_a_stream && !closing {
                    no_stream();
                }
                return;
            }
        }
    }
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
