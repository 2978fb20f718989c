//! Inbound plaintext: connections from other hosts to a workload's port, steered here by the
//! `steer_inbound` kernel program instead of reaching the workload. The accepted socket's
//! local address is the destination the caller dialled. What happens next is the workload's
//! mode: `strict` refuses (reset, counted, logged), `permissive` passes the connection to
//! the workload and logs it as plaintext with the caller's address, `audit` does the same
//! and says that strict would have refused it.

use std::{
    collections::{BTreeSet, HashMap},
    io,
    net::{SocketAddr, SocketAddrV6},
    os::fd::{AsFd as _, BorrowedFd},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};
use tunnel_common::{PLAINTEXT_LISTENER_V4, PLAINTEXT_LISTENER_V6};

use super::{
    admission::{Refusal, Refusals},
    copy,
    deliver::dial_local,
    inbound::PodServer,
    proxy_protocol,
    xfcc::RequestRewriter,
};
use crate::{
    config::Mode,
    drain::DrainWatcher,
    logging,
    netns::PodNetwork,
    policy::LivePolicy,
    telemetry::{
        Direction, FailReason, Telemetry,
        metrics::{TcpLabels, unknown},
    },
};

#[derive(Debug, thiserror::Error)]
pub enum PlaintextError {
    #[error("failed to bind the inbound-plaintext listener {addr}")]
    Bind { addr: SocketAddr, source: io::Error },
}

pub struct PlaintextInputs {
    /// Local port → the workload that owns it (the inbound side's map; its mode comes from
    /// the live policy, so a reload changes it).
    pub workloads_by_port: Arc<HashMap<u16, Arc<str>>>,
    pub connect_timeout: Duration,
    pub refusals: Arc<Refusals>,
    pub policy: Arc<LivePolicy>,
    /// Ports whose deliveries start with a PROXY protocol v2 header.
    pub proxy_protocol_ports: BTreeSet<u16>,
    /// HTTP/1.1 ports where the workload trusts `X-Forwarded-Client-Cert`: a plaintext
    /// caller's is removed (and none is added: the caller has no identity).
    pub xfcc_ports: BTreeSet<u16>,
    pub telemetry: Arc<Telemetry>,
    /// With the sockmap hop on: marks each delivery to join it.
    pub delivery_marks: Option<Arc<crate::ebpf::DeliveryMarks>>,
}

/// The listeners `steer_inbound` hands connections to, with their slots in its socket map.
pub struct Plaintext {
    listeners: Vec<(TcpListener, u32)>,
}

impl Plaintext {
    pub fn bind(
        v4: SocketAddr,
        v6: Option<SocketAddrV6>,
        backlog: u32,
    ) -> Result<Self, PlaintextError> {
        let mut listeners = Vec::new();
        let slot = |addr: &SocketAddr| {
            if addr.is_ipv4() {
                PLAINTEXT_LISTENER_V4
            } else {
                PLAINTEXT_LISTENER_V6
            }
        };
        for addr in std::iter::once(v4).chain(v6.map(SocketAddr::V6)) {
            let listener = super::listen(addr, backlog)
                .map_err(|source| PlaintextError::Bind { addr, source })?;
            listeners.push((listener, slot(&addr)));
        }
        Ok(Self { listeners })
    }

    /// The listening sockets and their slots, for the kernel program's socket map.
    pub fn sockets(&self) -> Vec<(u32, BorrowedFd<'_>)> {
        self.listeners
            .iter()
            .map(|(listener, slot)| (*slot, listener.as_fd()))
            .collect()
    }

    /// The listening sockets, for what applies to them all.
    pub fn listening(&self) -> impl Iterator<Item = &TcpListener> {
        self.listeners.iter().map(|(listener, _)| listener)
    }

    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(l, _)| l.local_addr().ok())
            .collect()
    }

    /// Accepts until a drain is signalled; passed connections run to their end.
    pub async fn run(self, inputs: Arc<PlaintextInputs>, drain: DrainWatcher) {
        let mut tasks = tokio::task::JoinSet::new();
        for (listener, _) in self.listeners {
            tasks.spawn(accept_loop(listener, None, inputs.clone(), drain.clone()));
        }
        drop(drain);
        while tasks.join_next().await.is_some() {}
    }
}

/// Serves a registered pod's plaintext listener (in its namespace; `steer_inbound` hands it
/// other hosts' connections to the pod): the pod's mode decides, as for a workload.
pub async fn serve_pod(
    listener: TcpListener,
    pod: Arc<PodServer>,
    inputs: Arc<PlaintextInputs>,
    drain: DrainWatcher,
) {
    accept_loop(listener, Some(pod), inputs, drain).await;
}

async fn accept_loop(
    listener: TcpListener,
    pod: Option<Arc<PodServer>>,
    inputs: Arc<PlaintextInputs>,
    mut drain: DrainWatcher,
) {
    while let Some((stream, caller)) =
        super::next_connection(&listener, &mut drain, "inbound-plaintext").await
    {
        // Steering keeps the addresses: the local one is what the caller dialled.
        match stream.local_addr() {
            Ok(dst) => handle(stream, caller, dst, pod.as_ref(), &inputs, &drain),
            Err(e) => {
                warn!(%caller, error = %e, "refused plaintext: cannot read its destination");
                copy::reset(&stream);
            }
        }
    }
}

fn handle(
    stream: TcpStream,
    caller: SocketAddr,
    dst: SocketAddr,
    pod: Option<&Arc<PodServer>>,
    inputs: &Arc<PlaintextInputs>,
    drain: &DrainWatcher,
) {
    // A pod's listener takes connections to the pod's addresses only; on the node, the port
    // says which workload.
    let workload = match pod {
        Some(pod) => pod
            .ips
            .contains(&dst.ip().to_canonical())
            .then_some(&pod.identity),
        None => inputs.workloads_by_port.get(&dst.port()),
    };
    let Some(workload) = workload else {
        // Steered, but no workload owns the port any more (config changed): refuse.
        copy::reset(&stream);
        inputs
            .telemetry
            .metrics
            .proxy
            .failed(Direction::Inbound, FailReason::not_deliverable);
        return log_refused(inputs, caller, dst, "no workload owns this port");
    };
    match inputs.policy.current().mode(workload, dst.port()) {
        Mode::Strict => {
            copy::reset(&stream);
            inputs
                .telemetry
                .metrics
                .proxy
                .failed(Direction::Inbound, FailReason::plaintext_refused);
            log_refused(
                inputs,
                caller,
                dst,
                &format!("workload {} is in strict mode", workload),
            );
        }
        mode @ (Mode::Permissive | Mode::Audit) => {
            if mode == Mode::Audit {
                info!(
                    src = %caller, %dst, workload = %workload, mode = "audit",
                    strict_would_refuse = "plaintext from another host",
                    "audit: plaintext connection passed to the workload, strict mode would refuse it"
                );
            } else {
                info!(src = %caller, %dst, workload = %workload, mode = "permissive", "plaintext connection passed to the workload (not authenticated)");
            }
            let (workload, inputs, drain) = (workload.clone(), inputs.clone(), drain.clone());
            let via = pod.map(|p| p.network.clone());
            tokio::spawn(pass(stream, caller, dst, workload, via, inputs, drain));
        }
    }
}

fn log_refused(inputs: &PlaintextInputs, caller: SocketAddr, dst: SocketAddr, why: &str) {
    if let Some(now) = inputs.refusals.record(Refusal::Plaintext, why) {
        info!(
            src = %caller, %dst, reason = why, suppressed_since_last = now.suppressed,
            "refused plaintext from another host to a workload port"
        );
    }
}

/// Delivers a permitted plaintext connection to its workload, both ways, until both end.
async fn pass(
    mut stream: TcpStream,
    caller: SocketAddr,
    dst: SocketAddr,
    workload: Arc<str>,
    via: Option<PodNetwork>,
    inputs: Arc<PlaintextInputs>,
    _drain: DrainWatcher,
) {
    let started = Instant::now();
    let header = inputs
        .proxy_protocol_ports
        .contains(&dst.port())
        .then(|| proxy_protocol::header(caller, dst, None));
    let marks = inputs.delivery_marks.as_deref();
    let mut target = match dial_local(
        dst,
        inputs.connect_timeout,
        header.as_deref(),
        via.as_ref(),
        marks,
    )
    .await
    {
        Ok(target) => target,
        Err(e) => {
            info!(src = %caller, %dst, workload = %workload, reason = %e, "plaintext connection not delivered");
            inputs
                .telemetry
                .metrics
                .proxy
                .failed(Direction::Inbound, FailReason::upstream_refused);
            copy::reset(&stream);
            return;
        }
    };
    let counted = inputs.telemetry.metrics.proxy.open(&TcpLabels {
        direction: Direction::Inbound,
        source_principal: unknown(),
        source_workload: unknown(),
        destination_principal: unknown(),
        destination_workload: workload.clone(),
        destination_service: unknown(),
    });
    let ((sent, received), close_reason) = if inputs.xfcc_ports.contains(&dst.port()) {
        // The workload trusts X-Forwarded-Client-Cert on this port: an unauthenticated
        // caller's own must not reach it.
        copy_stripping_xfcc(&mut stream, &mut target).await
    } else {
        match tokio::io::copy_bidirectional(&mut stream, &mut target).await {
            Ok(moved) => (moved, "closed".to_string()),
            Err(e) => ((0, 0), e.to_string()),
        }
    };
    // Towards the caller is "sent", as on the tunnelled inbound side.
    counted.close(received, sent);
    info!(
        target: logging::ACCESS,
        direction = "inbound_plaintext",
        src = %caller,
        src_identity = "-",
        ssl_client_verify = "NONE",
        %dst,
        dst_workload = %workload,
        peer = %caller,
        peer_identity = "-",
        ssl_protocol = "-",
        ssl_cipher = "-",
        bytes_sent = received,
        bytes_received = sent,
        duration_ms = started.elapsed().as_millis() as u64,
        close_reason,
        "connection closed"
    );
}

/// Both directions, requests passed through a rewriter that removes
/// `X-Forwarded-Client-Cert` and adds none; a request it cannot frame resets both sides.
/// Returns the bytes moved each way (caller to workload, workload to caller).
async fn copy_stripping_xfcc(
    caller: &mut TcpStream,
    workload: &mut TcpStream,
) -> ((u64, u64), String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (mut caller_read, mut caller_write) = caller.split();
    let (mut workload_read, mut workload_write) = workload.split();
    let requests = async {
        let mut rewriter = RequestRewriter::stripping();
        let (mut buf, mut out, mut moved) = (vec![0u8; 16 * 1024], Vec::new(), 0u64);
        loop {
            let n = caller_read.read(&mut buf).await?;
            if n == 0 {
                workload_write.shutdown().await?;
                return Ok::<_, io::Error>(moved);
            }
            out.clear();
            rewriter
                .feed(&buf[..n], &mut out)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            workload_write.write_all(&out).await?;
            moved += n as u64;
        }
    };
    let responses = async {
        let moved = tokio::io::copy(&mut workload_read, &mut caller_write).await?;
        caller_write.shutdown().await?;
        Ok::<_, io::Error>(moved)
    };
    match tokio::try_join!(requests, responses) {
        Ok(moved) => (moved, "closed".into()),
        Err(e) => {
            copy::reset(caller);
            copy::reset(workload);
            ((0, 0), format!("reset: {e}"))
        }
    }
}
