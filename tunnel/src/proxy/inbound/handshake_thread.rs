//! The inbound side's TLS handshakes, computed on a thread of their own.
//!
//! A handshake's crypto (the key exchange, the signature, the caller's chain) takes about a
//! millisecond of CPU per poll, and the runtime that carries every tunnelled stream has one
//! thread by default: under a flood of full handshakes, each step of a legitimate stream
//! waited behind them (p50 of new calls over an established tunnel 3–6× their quiet
//! latency). Here each handshake runs on a current-thread runtime of its own thread: the
//! socket is handed over (deregistered from the daemon's runtime, registered with this
//! one), the handshake runs under its deadline, and the socket comes back to the runtime of
//! whoever awaited it ([`Rehomed::rehome`]) before any stream is served. `max_handshakes`
//! still caps how many are under way at once. The thread runs at a lower priority
//! ([`NICE`]), so the kernel serves the streams first when both want the CPU.
//!
//! The socket travels inside [`Rehomed`] because tokio-rustls cannot rebuild a `TlsStream`
//! from a finished connection: the TLS state stays where it is, and only the socket's
//! registration moves.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use rustls::ServerConfig;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    runtime::Handle,
    sync::oneshot,
    time::{Instant, timeout_at},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

use crate::proxy::read_ahead::ReadAhead;

/// The handshake thread's nice value. Under a flood its work competes for the CPU with the
/// thread that carries the streams; the kernel then weighs the streams about ten times
/// higher, and gives the handshakes what is left. Measured under a flood of full
/// handshakes from 20 processes on the same 2 cores (tests/hardening.rs, alternating
/// builds): new calls over an established tunnel at 1.0–1.3× their quiet p50 with 10,
/// 0.9–1.8× with 5, 2.0–4.2× with 0 (the thread alone), 2.5–7× with the handshakes on the
/// streams' thread; the flood got 260–610 handshakes served in 6 s with 10, 540–870 with 0.
/// The price: on a host whose CPU is busy, a new peer's handshake waits longer too.
const NICE: i32 = 10;

/// A thread that computes TLS handshakes; it stops when this is dropped.
pub struct HandshakeThread {
    handle: Handle,
    _stop: oneshot::Sender<()>,
}

/// How a handshake on the thread ended.
pub enum Handshake {
    Done(Box<TlsStream<ReadAhead<Rehomed>>>),
    Failed(io::Error),
    TimedOut,
}

impl HandshakeThread {
    pub fn start() -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("tunnel-handshakes".into())
            .spawn(move || {
                if let Err(e) = crate::sys::lower_this_thread_priority(NICE) {
                    tracing::warn!(error = %e, "cannot lower the handshake thread's priority; handshakes compete with streams for the CPU");
                }
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(Self {
            handle,
            _stop: stop,
        })
    }

    /// Runs the TLS handshake of `tcp` with `config` on the thread, within `deadline`. The
    /// stream it gives is registered with the caller's runtime again. Dropping the future
    /// (the connection was evicted, the daemon stops) stops the handshake and closes the
    /// socket.
    pub async fn accept(
        &self,
        config: Arc<ServerConfig>,
        tcp: TcpStream,
        deadline: Instant,
    ) -> Handshake {
        let std = match tcp.into_std() {
            Ok(std) => std,
            Err(e) => return Handshake::Failed(e),
        };
        // Aborted if whoever awaits it goes away.
        let mut task = crate::drain::AbortOnDrop(self.handle.spawn(async move {
            let tcp = ReadAhead::new(Rehomed(Some(TcpStream::from_std(std)?)));
            match timeout_at(deadline, TlsAcceptor::from(config).accept(tcp)).await {
                Ok(accepted) => accepted.map(Some),
                Err(_) => Ok(None),
            }
        }));
        let finished = match (&mut task.0).await {
            Ok(finished) => finished,
            Err(e) => return Handshake::Failed(io::Error::other(e)),
        };
        match finished {
            Ok(Some(mut stream)) => match stream.get_mut().0.get_mut().rehome() {
                Ok(()) => Handshake::Done(Box::new(stream)),
                Err(e) => Handshake::Failed(e),
            },
            Ok(None) => Handshake::TimedOut,
            Err(e) => Handshake::Failed(e),
        }
    }
}

/// A TCP socket that can move to the runtime of the task that holds it.
pub struct Rehomed(Option<TcpStream>);

impl Rehomed {
    /// Registers the socket with the current runtime (the one this is called on).
    pub fn rehome(&mut self) -> io::Result<()> {
        let tcp = self.0.take().expect("a socket is always present");
        let std = tcp.into_std()?;
        self.0 = Some(TcpStream::from_std(std)?);
        Ok(())
    }

    pub fn tcp(&self) -> &TcpStream {
        self.0.as_ref().expect("a socket is always present")
    }

    fn pinned(self: Pin<&mut Self>) -> Pin<&mut TcpStream> {
        Pin::new(
            self.get_mut()
                .0
                .as_mut()
                .expect("a socket is always present"),
        )
    }
}

impl AsyncRead for Rehomed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.pinned().poll_read(cx, buf)
    }
}

impl AsyncWrite for Rehomed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.pinned().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.pinned().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp().is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.pinned().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.pinned().poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;

    #[tokio::test]
    async fn a_socket_moved_to_the_thread_and_back_still_carries_bytes_both_ways() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let thread = HandshakeThread::start().unwrap();
        // Moved there and back, as a handshake does.
        let std = server.into_std().unwrap();
        let moved = thread
            .handle
            .spawn(async move { Rehomed(Some(TcpStream::from_std(std).unwrap())) })
            .await
            .unwrap();
        let mut moved = moved;
        moved.rehome().unwrap();
        drop(thread);
        client.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), moved.read_exact(&mut got))
            .await
            .expect("readable on this runtime after the thread is gone")
            .unwrap();
        assert_eq!(&got, b"ping");
        moved.write_all(b"pong").await.unwrap();
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
    }
}
