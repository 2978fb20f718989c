//! Moves bytes between a TCP socket and an HBONE stream (one HTTP/2 CONNECT stream), both
//! ways at once, until both directions have ended.
//!
//! - Half-close is carried: EOF from the socket becomes END_STREAM, END_STREAM becomes a FIN
//!   (`shutdown(SHUT_WR)`), and the other direction keeps flowing. When the socket's EOF
//!   came first, END_STREAM ends the copy and the FIN is the close's: the caller closes the
//!   socket as soon as the copy returns, and a `shutdown` before it would be a system call
//!   per connection for the same FIN (nothing is left unread to turn the close into a RST).
//! - Aborts are carried: a reset or error on one side resets the other (RST_STREAM CANCEL
//!   towards the peer, an abortive close towards the socket), so a broken connection never
//!   looks like a clean end to either application.
//! - Memory follows the flow: an idle connection holds no buffer; a read buffer is taken when
//!   the socket becomes readable, starts at 16 KiB and doubles up to 256 KiB while reads keep
//!   filling it, and is given back when the socket runs dry. Data goes to h2 without a copy.
//! - Every read buffer is charged to the daemon's buffer budget before the read, and the
//!   charge goes into h2 with the bytes (`budget::Chunk`): with the budget spent, reads wait.
//! - One system call per read or write where possible: reads and writes go through tokio's
//!   `AsyncRead`/`AsyncWrite`, which take a short read (or write) as proof the socket is
//!   drained (or full). Its `try_read`/`try_write` do not, and cost an extra call that fails
//!   with EAGAIN after every read — one per request/response exchange.

use std::{
    borrow::Cow,
    future::{Future, poll_fn},
    net::Shutdown,
    pin::pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::Poll,
    time::Duration,
};

use bytes::BytesMut;

use super::{
    budget::{self, BufferBudget, Chunk, ReadBudget, StreamHold},
    xfcc::{RequestRewriter, XfccError},
};
use crate::telemetry::connections::Live;
use h2::{Reason, RecvStream, SendStream};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpStream,
        tcp::{ReadHalf, WriteHalf},
    },
};

const INITIAL_READ: usize = 16 * 1024;
const MAX_READ: usize = 256 * 1024;

/// How the copy ended, for the access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CopyEnd {
    /// Both directions ended with EOF / END_STREAM.
    Closed,
    /// The local socket failed or was reset; the stream was reset towards the peer.
    SocketReset,
    /// The stream was reset or its connection broke; the local socket was reset.
    StreamReset,
    /// The caller sent a request the XFCC rewriter cannot frame safely: both sides were
    /// reset.
    Unframeable(XfccError),
    /// The peer took none of what the stream held for `budget::STALL` while the buffer
    /// budget was spent: both sides were reset, and the stream's buffers given back.
    Stalled,
}

/// Why a carried connection ended, in the access log's words: `closed`, a reset and which
/// side sent it, or what closed its tunnel connection under it (a certificate expired...).
/// The usual ends are constants: nothing is allocated for them, once per connection.
pub fn close_reason(end: CopyEnd, connection_ended: Option<&String>) -> Cow<'static, str> {
    match (end, connection_ended) {
        (CopyEnd::Closed, _) => "closed".into(),
        (CopyEnd::SocketReset, _) => "reset by the local side".into(),
        (CopyEnd::StreamReset, Some(why)) => why.clone().into(),
        (CopyEnd::StreamReset, None) => "reset by the tunnel side".into(),
        (CopyEnd::Unframeable(why), _) => format!("reset: {why}").into(),
        (CopyEnd::Stalled, _) => format!(
            "reset: the peer took nothing for {}s while the buffer budget was spent",
            budget::STALL.as_secs()
        )
        .into(),
    }
}

/// Bytes moved: `to_stream` from the socket to the stream, `to_socket` the other way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyStats {
    pub to_stream: u64,
    pub to_socket: u64,
}

/// Runs both directions to completion. `live`, when given, is the connection's entry in
/// `/connections`: each read adds to its byte counters (one relaxed atomic add). Reads from
/// the socket are charged to `budget` (the party's: whoever drains the stream). The caller
/// closes the socket as soon as it returns: a clean end may have left the FIN to the close.
pub async fn bidirectional(
    socket: &mut TcpStream,
    send: SendStream<Chunk>,
    recv: RecvStream,
    live: Option<&Live>,
    budget: &ReadBudget,
) -> (CopyStats, CopyEnd) {
    bidirectional_rewriting(socket, send, recv, None, live, budget).await
}

/// Where a direction's running total is also shown, if anywhere.
#[derive(Clone, Copy)]
struct Shown<'a>(Option<&'a AtomicU64>);

impl Shown<'_> {
    fn add(self, n: u64) {
        if let Some(counter) = self.0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// [`bidirectional`], with what the stream carries towards the socket passed through
/// `rewriter` (HTTP/1.1 requests getting `X-Forwarded-Client-Cert`); a request it cannot
/// frame safely resets both sides.
pub async fn bidirectional_rewriting(
    socket: &mut TcpStream,
    mut send: SendStream<Chunk>,
    mut recv: RecvStream,
    rewriter: Option<RequestRewriter>,
    live: Option<&Live>,
    budget: &ReadBudget,
) -> (CopyStats, CopyEnd) {
    let mut stats = CopyStats::default();
    let socket_ended = AtomicBool::new(false);
    let (shown_sent, shown_received) = (
        Shown(live.map(|l| &l.bytes_sent)),
        Shown(live.map(|l| &l.bytes_received)),
    );
    let end = {
        let (reader, writer) = socket.split();
        let upstream = socket_to_stream(
            reader,
            &mut send,
            &mut stats.to_stream,
            shown_sent,
            budget,
            &socket_ended,
        );
        let downstream = stream_to_socket(
            &mut recv,
            writer,
            &mut stats.to_socket,
            rewriter,
            shown_received,
            &socket_ended,
        );
        tokio::pin!(upstream, downstream);
        let (mut upstream_done, mut downstream_done) = (false, false);
        loop {
            let result = tokio::select! {
                result = &mut upstream, if !upstream_done => result.map(|()| upstream_done = true),
                result = &mut downstream, if !downstream_done => result.map(|()| downstream_done = true),
            };
            match result {
                Err(Failure::Socket) => break CopyEnd::SocketReset,
                Err(Failure::Stream) => break CopyEnd::StreamReset,
                Err(Failure::Unframeable(why)) => break CopyEnd::Unframeable(why),
                Err(Failure::Stalled) => break CopyEnd::Stalled,
                Ok(()) if upstream_done && downstream_done => break CopyEnd::Closed,
                Ok(()) => {}
            }
        }
    };
    match end {
        CopyEnd::SocketReset | CopyEnd::Unframeable(_) | CopyEnd::Stalled => {
            send.send_reset(Reason::CANCEL);
            reset(socket);
        }
        CopyEnd::StreamReset => reset(socket),
        CopyEnd::Closed => {}
    }
    (stats, end)
}

/// Which side failed.
enum Failure {
    Socket,
    Stream,
    Unframeable(XfccError),
    /// Reclaimed for the budget (`CopyEnd::Stalled`).
    Stalled,
}

async fn socket_to_stream(
    mut reader: ReadHalf<'_>,
    send: &mut SendStream<Chunk>,
    moved: &mut u64,
    shown: Shown<'_>,
    reads: &ReadBudget,
    socket_ended: &AtomicBool,
) -> Result<(), Failure> {
    let mut read_size = INITIAL_READ;
    let hold = Arc::new(StreamHold::default());
    loop {
        reader
            .as_ref()
            .readable()
            .await
            .map_err(|_| Failure::Socket)?;
        // Charged before the buffer exists; with the budget spent this waits, and the
        // socket is not read: back-pressure on the sender. While it waits, this stream's
        // own bytes in h2 must still be leaving, or it gives them back.
        let charge = match reads.try_charge(read_size, &hold) {
            Some(charge) => charge,
            None => tokio::select! {
                biased;
                charge = reads.charge(read_size, &hold) => charge,
                () = budget::stalled(&hold) => {
                    reads.budget().count_reclaimed();
                    return Err(Failure::Stalled);
                }
            },
        };
        let mut buf = BytesMut::with_capacity(read_size);
        // One attempt: readiness may be stale (the last read drained the socket exactly).
        let polled = {
            let mut read = pin!(reader.read_buf(&mut buf));
            poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await
        };
        let n = match polled {
            Poll::Pending => {
                // tokio cleared the stale readiness; wait again without holding the buffer
                // (or its charge).
                continue;
            }
            Poll::Ready(Ok(0)) => {
                // EOF: the application closed its write side. Carry it as END_STREAM.
                send.send_data(Chunk::default(), true)
                    .map_err(|_| Failure::Stream)?;
                socket_ended.store(true, Ordering::Relaxed);
                return Ok(());
            }
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(_)) => return Err(Failure::Socket),
        };
        *moved += n as u64;
        shown.add(n as u64);
        // A read that filled what we asked for means more is waiting: read bigger next time.
        let filled = n >= read_size;
        if filled && read_size < MAX_READ {
            read_size *= 2;
        }
        // The whole buffer goes (a short read's spare capacity with it, freed when h2 is
        // done with the bytes): it is what the charge is for.
        send_all(
            send,
            Chunk::new(buf.freeze(), Some(charge)),
            &hold,
            reads.budget(),
        )
        .await?;
    }
}

/// Hands `data` to h2 within the stream's flow-control window (h2 would buffer without
/// bound otherwise). Waiting for the peer to open it is flow control, unless the budget
/// is spent and what the stream holds does not drain (`budget::stalled`).
async fn send_all(
    send: &mut SendStream<Chunk>,
    mut data: Chunk,
    hold: &StreamHold,
    budget: &BufferBudget,
) -> Result<(), Failure> {
    send.reserve_capacity(data.len());
    while !data.is_empty() {
        let capacity = match send.capacity() {
            0 => loop {
                tokio::select! {
                    biased;
                    polled = poll_fn(|cx| send.poll_capacity(cx)) => match polled {
                        Some(Ok(capacity)) => break capacity,
                        Some(Err(_)) | None => return Err(Failure::Stream),
                    },
                    () = budget::stalled(hold) => if budget.under_pressure() {
                        budget.count_reclaimed();
                        return Err(Failure::Stalled);
                    },
                }
            },
            capacity => capacity,
        };
        let piece = if capacity >= data.len() {
            std::mem::take(&mut data)
        } else {
            data.split_to(capacity)
        };
        send.send_data(piece, false).map_err(|_| Failure::Stream)?;
    }
    Ok(())
}

async fn stream_to_socket(
    recv: &mut RecvStream,
    mut writer: WriteHalf<'_>,
    moved: &mut u64,
    mut rewriter: Option<RequestRewriter>,
    shown: Shown<'_>,
    socket_ended: &AtomicBool,
) -> Result<(), Failure> {
    let mut rewritten = Vec::new();
    loop {
        match recv.data().await {
            Some(Ok(data)) => {
                match rewriter.as_mut() {
                    None => writer.write_all(&data).await,
                    Some(rewriter) => {
                        rewritten.clear();
                        // Unframeable input: reset both sides (as a failed socket does).
                        rewriter.feed(&data, &mut rewritten).map_err(|e| {
                            tracing::info!(reason = %e, "connection reset: its requests cannot be given X-Forwarded-Client-Cert safely");
                            Failure::Unframeable(e)
                        })?;
                        writer.write_all(&rewritten).await
                    }
                }
                .map_err(|_| Failure::Socket)?;
                *moved += data.len() as u64;
                shown.add(data.len() as u64);
                // Open the window only once the application took the bytes: back-pressure.
                let _ = recv.flow_control().release_capacity(data.len());
            }
            Some(Err(_)) => return Err(Failure::Stream),
            None => {
                // END_STREAM: the peer's application closed its write side. With the
                // socket's EOF already read, the copy ends now and the close sends the FIN.
                if !socket_ended.load(Ordering::Relaxed) {
                    let _ = socket2::SockRef::from(writer.as_ref()).shutdown(Shutdown::Write);
                }
                return Ok(());
            }
        }
    }
}

/// Makes the socket's close abortive (RST): the application sees a reset, not a clean end.
pub fn reset(socket: &TcpStream) {
    let _ = socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO));
}
