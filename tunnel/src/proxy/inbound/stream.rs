//! One CONNECT stream: where it may go, whether policy lets the caller go there, and the
//! delivery. Every refusal goes through one place ([`Refused`]) that answers the peer and
//! logs the reason, with peer-supplied text shortened.

use std::{
    borrow::Cow,
    net::{IpAddr, SocketAddr},
    sync::{Arc, atomic::Ordering},
    time::Instant,
};

use crate::proxy::budget::Chunk;
use h2::server::SendResponse;
use http::{Request, StatusCode};
use tokio::net::TcpStream;
use tracing::{debug, info};

use super::{PodServer, Session, Shared};
use crate::{
    drain::DrainWatcher,
    identity::SpiffeId,
    logging,
    policy::{self, Decision},
    proxy::{
        copy::{self, CopyStats, close_reason},
        deliver::{DialError, dial_local},
        hbone, proxy_protocol,
        xfcc::RequestRewriter,
    },
    telemetry::{
        ConnectionInfo, Direction, FailReason,
        metrics::{DecisionLabels, TcpLabels, unknown},
    },
};

/// A refusal: the status and the reason, which our log gives and the caller gets too (in
/// [`hbone::REFUSAL_HEADER`]: a code for programs and the sentence for people; nothing in it
/// is secret, it says what the caller asked for and which rule or state refused it).
struct Refused {
    status: StatusCode,
    code: &'static str,
    why: String,
}

impl Refused {
    fn forbidden(code: &'static str, why: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            code,
            why: why.into(),
        }
    }

    fn unavailable(code: &'static str, why: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code,
            why: why.into(),
        }
    }
}

pub(super) async fn serve(
    request: Request<h2::RecvStream>,
    respond: SendResponse<Chunk>,
    peer: SocketAddr,
    caller: Arc<SpiffeId>,
    session: Arc<Session>,
    shared: Arc<Shared>,
    _drain: DrainWatcher,
) {
    let started = Instant::now();
    let requested = hbone::requested_destination(&request).map_err(|(status, why)| Refused {
        status,
        code: "bad_request",
        why: hbone::shortened(&why).into_owned(),
    });
    // The Service the caller says it addressed, for the access line only.
    let service: Option<Arc<str>> = hbone::requested_service(&request).map(Into::into);
    let admitted = match requested {
        Ok(dst) => admit(dst, &caller, peer, &shared, session.pod.as_deref())
            .await
            .map_err(|refused| (Some(dst), refused)),
        Err(refused) => Err((None, refused)),
    };
    let admitted = match admitted {
        Ok(admitted) => admitted,
        Err((dst, refused)) => return refuse(respond, refused, dst, peer, &caller, &shared),
    };
    let mut respond = respond;
    let send = match respond.send_response(hbone::response(StatusCode::OK), false) {
        Ok(send) => send,
        Err(e) => {
            let dst = admitted.dst;
            shared
                .inputs
                .telemetry
                .metrics
                .proxy
                .failed(Direction::Inbound, FailReason::other);
            debug!(%peer, %caller, %dst, error = %e, "stream gone before it was answered");
            return;
        }
    };
    let carried = carry(
        admitted,
        request.into_body(),
        send,
        peer,
        &caller,
        &session,
        &shared,
    )
    .await;
    log_access(
        &carried,
        service.as_deref(),
        peer,
        &caller,
        &session,
        started,
    );
}

/// The one place a stream is refused: counted, logged, and answered with the status and
/// the reason.
fn refuse(
    mut respond: SendResponse<Chunk>,
    refused: Refused,
    requested: Option<SocketAddr>,
    peer: SocketAddr,
    caller: &SpiffeId,
    shared: &Shared,
) {
    shared.inputs.telemetry.metrics.proxy.failed(
        Direction::Inbound,
        FailReason::of_refusal_code(refused.code),
    );
    let dst = requested.map(|d| d.to_string()).unwrap_or_default();
    info!(
        src = %peer, src_identity = %caller, %dst, status = refused.status.as_u16(),
        reason = %refused.why, "refused CONNECT"
    );
    let answer = hbone::refusal(refused.status, refused.code, &refused.why);
    let _ = respond.send_response(answer, true);
}

/// A carried stream's figures, for the access line.
struct Carried {
    dst: SocketAddr,
    workload: Arc<str>,
    decision: &'static str,
    rule: Arc<str>,
    stats: CopyStats,
    close_reason: Cow<'static, str>,
}

/// Copies both ways (through the XFCC rewriter on its ports), counted in the metrics and
/// `/connections` while it runs; a policy reload that denies the caller now ends it.
async fn carry(
    admitted: Admitted,
    body: h2::RecvStream,
    send: h2::SendStream<Chunk>,
    peer: SocketAddr,
    caller: &Arc<SpiffeId>,
    session: &Session,
    shared: &Shared,
) -> Carried {
    let Admitted {
        dst,
        mut target,
        workload,
        decision,
        rule,
    } = admitted;
    let inputs = &shared.inputs;
    let rewriter = inputs.xfcc_ports.contains(&dst.port()).then(|| {
        let by = session
            .pod
            .as_ref()
            .map_or(&inputs.node_identity, |pod| &pod.identity);
        RequestRewriter::new(by, &session.caller_principal)
    });
    let registration =
        inputs
            .live
            .register(caller.clone(), peer.ip(), workload.clone(), dst.port());
    let workload_id = inputs.workload_ids.get(&workload).cloned();
    let counted = inputs.telemetry.metrics.proxy.open(&TcpLabels {
        direction: Direction::Inbound,
        source_principal: session.caller_principal.clone(),
        source_workload: unknown(),
        destination_principal: workload_id.clone().unwrap_or_else(unknown),
        destination_workload: workload.clone(),
        destination_service: unknown(),
    });
    let tracked = inputs.telemetry.connections.open(ConnectionInfo {
        direction: "inbound",
        src: peer,
        dst,
        src_identity: Some(session.caller_principal.clone()),
        dst_identity: workload_id,
        workload: workload.clone(),
        peer,
    });
    let copied = tokio::select! {
        copied = copy::bidirectional_rewriting(&mut target, send, body, rewriter, Some(tracked.live()), &session.reads) => Some(copied),
        () = registration.closed.notified() => None,
    };
    let (stats, close_reason) = match copied {
        Some((stats, end)) => (stats, close_reason(end, session.ended.get())),
        None => {
            // A policy reload denies it now: the stream was reset as the copy was dropped
            // (h2 cancels a stream whose halves are gone); reset the workload's side too.
            copy::reset(&target);
            // The copy's own totals went with it; the live ones are as exact.
            let live = tracked.live();
            let stats = CopyStats {
                to_stream: live.bytes_sent.load(Ordering::Relaxed),
                to_socket: live.bytes_received.load(Ordering::Relaxed),
            };
            (stats, "closed by a policy reload".into())
        }
    };
    // Closed at once: the copy may have left the FIN to the close.
    drop(target);
    drop(tracked);
    counted.close(stats.to_stream, stats.to_socket);
    Carried {
        dst,
        workload,
        decision,
        rule,
        stats,
        close_reason,
    }
}

fn log_access(
    carried: &Carried,
    service: Option<&str>,
    peer: SocketAddr,
    caller: &SpiffeId,
    session: &Session,
    started: Instant,
) {
    info!(
        target: logging::ACCESS,
        direction = "inbound",
        src = %peer,
        src_identity = %caller,
        ssl_client_s_dn = session.subject_dn.as_deref().unwrap_or("-"),
        ssl_client_verify = "SUCCESS",
        dst = %carried.dst,
        dst_service = %service.unwrap_or("-"),
        dst_workload = %carried.workload,
        peer = %peer,
        peer_identity = %caller,
        ssl_protocol = session.tls.protocol,
        ssl_cipher = session.tls.cipher,
        decision = carried.decision,
        rule = %carried.rule,
        bytes_sent = carried.stats.to_stream,
        bytes_received = carried.stats.to_socket,
        duration_ms = started.elapsed().as_millis() as u64,
        close_reason = &*carried.close_reason,
        "connection closed"
    );
}

/// An admitted stream: its destination, the connected target, its workload, and the
/// policy decision.
struct Admitted {
    dst: SocketAddr,
    target: TcpStream,
    workload: Arc<str>,
    decision: &'static str,
    rule: Arc<str>,
}

/// The checks on a requested destination, in order, then the dial: the connected target
/// and its workload.
async fn admit(
    dst: SocketAddr,
    caller: &SpiffeId,
    peer: SocketAddr,
    shared: &Shared,
    pod: Option<&PodServer>,
) -> Result<Admitted, Refused> {
    let inputs = &shared.inputs;
    let workload = match pod {
        None => deliverable(shared, dst)?,
        Some(pod) => deliverable_in_pod(shared, dst, pod)?,
    };
    let decision = inputs.policy.current().evaluate(&policy::Request {
        caller,
        source: peer.ip(),
        workload: &workload,
        port: dst.port(),
    });
    inputs
        .telemetry
        .metrics
        .proxy
        .authorization_decisions
        .get_or_create(&DecisionLabels {
            workload: workload.clone(),
            decision: decision.name(),
            rule: decision.rule().clone(),
        })
        .inc();
    let (decision_name, rule) = (decision.name(), decision.rule().clone());
    match decision {
        Decision::Allow { because, .. } => {
            debug!(%caller, %dst, %workload, %because, "allowed");
        }
        Decision::Audit { because, .. } => {
            info!(%caller, %dst, %workload, strict_would_refuse = %because, "audit: allowed, strict mode would refuse");
        }
        Decision::Deny { because, .. } => {
            return Err(Refused::forbidden(
                "policy_denied",
                format!("no policy allows {caller} to reach {workload} ({dst}): {because}"),
            ));
        }
    }
    if inputs.nonlocal_bind.allowed() {
        return Err(Refused::unavailable(
            "nonlocal_bind",
            "non-local binds are enabled on this host (net.ipv4/ipv6.ip_nonlocal_bind), so \
             locality cannot be proven; nothing is delivered until they are disabled",
        ));
    }
    let header = inputs
        .proxy_protocol_ports
        .contains(&dst.port())
        .then(|| proxy_protocol::header(peer, dst, Some(&caller.to_string())));
    let via = pod.map(|p| &p.network);
    let marks = inputs.delivery_marks.as_deref();
    match dial_local(dst, inputs.connect_timeout, header.as_deref(), via, marks).await {
        Ok(target) => Ok(Admitted {
            dst,
            target,
            workload,
            decision: decision_name,
            rule,
        }),
        Err(DialError::NotLocal) => Err(Refused::forbidden(
            "not_local",
            format!("{} is not an address of this host", dst.ip()),
        )),
        Err(DialError::LocalResources(e)) => Err(Refused::unavailable(
            "host_out_of_resources",
            format!("this host is out of resources to connect to {workload}: {e}"),
        )),
        Err(DialError::Failed(e)) => Err(Refused::unavailable(
            "workload_unavailable",
            format!("workload {workload} ({dst}) did not accept the connection: {e}"),
        )),
    }
}

/// The workload a destination is for, if the daemon may deliver there at all.
fn deliverable(shared: &Shared, dst: SocketAddr) -> Result<Arc<str>, Refused> {
    let inputs = &shared.inputs;
    let ip = dst.ip().to_canonical();
    let loopback_refused = ip.is_loopback() && !inputs.deliver_to_loopback;
    if loopback_refused || ip.is_unspecified() || ip.is_multicast() || is_broadcast(ip) {
        return Err(Refused::forbidden(
            "not_deliverable",
            format!("{ip} is not a deliverable address"),
        ));
    }
    if inputs.own_ports.contains(&dst.port()) {
        return Err(Refused::forbidden(
            "not_deliverable",
            format!("port {} is one of the daemon's own ports", dst.port()),
        ));
    }
    inputs
        .workloads_by_port
        .get(&dst.port())
        .cloned()
        .ok_or_else(|| {
            Refused::forbidden(
                "unknown_port",
                format!("port {} of {} belongs to no workload", dst.port(), dst.ip()),
            )
        })
}

/// The workload a destination inside a registered pod is for: the pod itself, on any port
/// of one of its addresses but the daemon's own.
fn deliverable_in_pod(
    shared: &Shared,
    dst: SocketAddr,
    pod: &PodServer,
) -> Result<Arc<str>, Refused> {
    let ip = dst.ip().to_canonical();
    if !pod.ips.contains(&ip) {
        return Err(Refused::forbidden(
            "not_local",
            format!("{ip} is not an address of pod {}", pod.name),
        ));
    }
    if shared.inputs.own_ports.contains(&dst.port()) {
        return Err(Refused::forbidden(
            "not_deliverable",
            format!("port {} is one of the daemon's own ports", dst.port()),
        ));
    }
    Ok(pod.identity.clone())
}

fn is_broadcast(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}
