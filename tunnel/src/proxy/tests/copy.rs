//! The copy loop at both ends of a tunnel, as production runs it: the caller's socket, the
//! outbound side's copy, a pooled HBONE stream, the inbound side's copy, the workload's
//! socket. Half-closes and resets must cross it as what they are.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

use super::kit::{Daemon, Ended, Kit, Logs, add_workload_port, limits, pool_settings, wait_end};
use crate::proxy::{
    budget::BufferBudget,
    copy::{self, CopyEnd, CopyStats},
    pool::Pool,
};

/// One application connection carried through the tunnel.
struct Carried {
    /// The calling application's socket.
    app: TcpStream,
    /// The workload's socket, as the inbound side delivered it.
    workload: TcpStream,
    /// The outbound side's copy, and how it ended.
    outbound: JoinHandle<(CopyStats, CopyEnd)>,
}

/// A daemon delivering workload `orders` to a listener the test accepts from.
struct Tunnel {
    kit: Kit,
    daemon: Daemon,
    pool: Pool,
    workload: TcpListener,
}

impl Tunnel {
    async fn new() -> Self {
        let kit = Kit::new().await;
        let workload = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut inputs = kit.inputs(limits());
        add_workload_port(&mut inputs, workload.local_addr().unwrap().port(), "orders");
        let daemon = Daemon::start(inputs);
        Self {
            kit,
            daemon,
            pool: Pool::new(pool_settings()),
            workload,
        }
    }

    async fn carry(&self) -> Carried {
        let captured = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app = TcpStream::connect(captured.local_addr().unwrap())
            .await
            .unwrap();
        let (mut socket, _) = captured.accept().await.unwrap();
        let stream = self
            .pool
            .open(
                &self.kit.key(self.daemon.addr),
                &self.kit.frontend,
                self.workload.local_addr().unwrap(),
                Bytes::new(),
                None,
            )
            .await
            .expect("open a stream to the workload");
        // As the outbound side carries a captured connection.
        let outbound = tokio::spawn(async move {
            let stream = stream;
            let budget = BufferBudget::new(crate::config::Limits::DEFAULT.max_buffered_bytes);
            copy::bidirectional(
                &mut socket,
                stream.send,
                stream.recv,
                None,
                &budget.for_party("test"),
            )
            .await
        });
        let (workload, _) = tokio::time::timeout(Duration::from_secs(5), self.workload.accept())
            .await
            .expect("the daemon delivers within 5 s")
            .unwrap();
        Carried {
            app,
            workload,
            outbound,
        }
    }
}

/// Reads until EOF (bounded): what came, and how long until the EOF.
async fn read_to_eof(tcp: &mut TcpStream) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut data = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut data))
        .await
        .expect("EOF within 5 s")
        .expect("a clean EOF, not an error");
    (data, started.elapsed())
}

/// One byte each way, so both copies are running before the test ends anything.
async fn exchange(app: &mut TcpStream, workload: &mut TcpStream) {
    app.write_all(b"?").await.unwrap();
    let mut byte = [0u8; 1];
    workload.read_exact(&mut byte).await.unwrap();
    workload.write_all(b"!").await.unwrap();
    app.read_exact(&mut byte).await.unwrap();
}

async fn outbound_end(outbound: JoinHandle<(CopyStats, CopyEnd)>) -> (CopyStats, CopyEnd) {
    tokio::time::timeout(Duration::from_secs(5), outbound)
        .await
        .expect("the outbound copy ends within 5 s")
        .expect("the outbound copy task")
}

#[tokio::test]
async fn a_half_close_crosses_the_tunnel_each_way_and_the_other_direction_keeps_flowing() {
    let logs = Logs::capture();
    let tunnel = Tunnel::new().await;

    // The caller closes its write side first (a request, then FIN), as HTTP/1.0 clients do.
    let mut first = tunnel.carry().await;
    first.app.write_all(b"request").await.unwrap();
    first.app.shutdown().await.unwrap();
    let (request, fin_to_workload) = read_to_eof(&mut first.workload).await;
    assert_eq!(request, b"request", "the request, then EOF");
    first
        .workload
        .write_all(b"a response after the caller's FIN")
        .await
        .unwrap();
    first.workload.shutdown().await.unwrap();
    let (response, fin_to_app) = read_to_eof(&mut first.app).await;
    assert_eq!(response, b"a response after the caller's FIN");
    let (stats, end) = outbound_end(first.outbound).await;
    assert_eq!(end, CopyEnd::Closed);
    assert_eq!((stats.to_stream, stats.to_socket), (7, 33));

    // The workload closes first; the caller keeps sending.
    let mut second = tunnel.carry().await;
    second.workload.write_all(b"banner").await.unwrap();
    second.workload.shutdown().await.unwrap();
    let (banner, _) = read_to_eof(&mut second.app).await;
    assert_eq!(banner, b"banner");
    second
        .app
        .write_all(b"still talking after the workload's FIN")
        .await
        .unwrap();
    second.app.shutdown().await.unwrap();
    let (late, _) = read_to_eof(&mut second.workload).await;
    assert_eq!(late, b"still talking after the workload's FIN");
    assert_eq!(outbound_end(second.outbound).await.1, CopyEnd::Closed);

    println!(
        "FIN crossed the tunnel caller->workload in {fin_to_workload:?}, workload->caller in {fin_to_app:?}"
    );
    // The inbound side's copy ended cleanly too, for both.
    logs.wait_for("bytes_received=38", Duration::from_secs(1))
        .await;
    let inbound_ends = logs.lines_with("connection closed");
    assert_eq!(inbound_ends.len(), 2, "{inbound_ends:#?}");
    for line in &inbound_ends {
        assert!(line.contains("close_reason=\"closed\""), "{line}");
    }
}

#[tokio::test]
async fn a_reset_crosses_the_tunnel_as_a_reset_not_a_clean_end() {
    let logs = Logs::capture();
    let tunnel = Tunnel::new().await;

    // The caller's socket is reset: the workload sees ECONNRESET.
    let Carried {
        mut app,
        mut workload,
        outbound,
    } = tunnel.carry().await;
    exchange(&mut app, &mut workload).await;
    copy::reset(&app);
    drop(app);
    let (ended, caller_reset_took) = wait_end(&mut workload, Duration::from_secs(5))
        .await
        .expect("the workload's socket ends");
    assert_eq!(ended, Ended::Reset, "the workload sees a reset, not EOF");
    assert_eq!(outbound_end(outbound).await.1, CopyEnd::SocketReset);
    logs.wait_for(
        "close_reason=\"reset by the tunnel side\"",
        Duration::from_secs(1),
    )
    .await;

    // The workload's socket is reset: the caller sees ECONNRESET.
    let Carried {
        mut app,
        mut workload,
        outbound,
    } = tunnel.carry().await;
    exchange(&mut app, &mut workload).await;
    copy::reset(&workload);
    drop(workload);
    let (ended, workload_reset_took) = wait_end(&mut app, Duration::from_secs(5))
        .await
        .expect("the caller's socket ends");
    assert_eq!(ended, Ended::Reset, "the caller sees a reset, not EOF");
    assert_eq!(outbound_end(outbound).await.1, CopyEnd::StreamReset);
    logs.wait_for(
        "close_reason=\"reset by the local side\"",
        Duration::from_secs(1),
    )
    .await;

    println!(
        "a reset crossed the tunnel caller->workload in {caller_reset_took:?}, workload->caller in {workload_reset_took:?}"
    );
}
