//! Larger reads under rustls. rustls reads a TLS connection 4 KiB at a time (its deframer
//! asks for at most 4 KiB more than it holds), so a bulk transfer costs the receiving
//! daemon a `recvfrom` per 4 KiB: about 256,000 system calls per GB, each dearer than
//! copying the 4 KiB again. [`ReadAhead`] takes what the socket holds, up to
//! [`READ_AHEAD`], in one call and hands it to rustls from memory.
//!
//! It holds memory only while it has bytes rustls has not taken: the buffer is allocated
//! when a read finds the socket with data and freed once it is drained, so an idle
//! connection holds nothing. It is switched on only after the handshake (a connection that
//! has not authenticated never gets one), and only when the buffer budget gives the
//! connection its large buffers (`budget::BufferBudget::window`), which charges for it.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most one read takes from the socket.
pub const READ_AHEAD: usize = 64 * 1024;

/// A stream whose reads, once switched on, go through a buffer of up to [`READ_AHEAD`].
/// Writes go straight through.
pub struct ReadAhead<IO> {
    io: IO,
    on: bool,
    /// Read from the socket and not yet taken (empty, without an allocation, when idle).
    ahead: BytesMut,
}

impl<IO> ReadAhead<IO> {
    /// Reads go straight through until [`ReadAhead::switch_on`].
    pub fn new(io: IO) -> Self {
        Self {
            io,
            on: false,
            ahead: BytesMut::new(),
        }
    }

    pub fn switch_on(&mut self) {
        self.on = true;
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    pub fn get_mut(&mut self) -> &mut IO {
        &mut self.io
    }

    /// The memory held for bytes not yet taken (none when idle).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.ahead.capacity()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for ReadAhead<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.ahead.is_empty() {
            // A read as large as the buffer gains nothing from it.
            if !this.on || out.remaining() >= READ_AHEAD {
                return Pin::new(&mut this.io).poll_read(cx, out);
            }
            let mut ahead = BytesMut::with_capacity(READ_AHEAD);
            let read = tokio_util::io::poll_read_buf(Pin::new(&mut this.io), cx, &mut ahead);
            // Pending or an error: nothing is kept (the allocation goes with `ahead`).
            if ready!(read)? == 0 {
                return Poll::Ready(Ok(()));
            }
            this.ahead = ahead;
        }
        let taken = this.ahead.len().min(out.remaining());
        out.put_slice(&this.ahead[..taken]);
        this.ahead.advance(taken);
        if this.ahead.is_empty() {
            // Drained: the memory goes back rather than wait, perhaps for long, for more.
            this.ahead = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for ReadAhead<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// Counts the reads that reach the inner stream.
    struct Counting<IO> {
        io: IO,
        reads: usize,
    }

    impl<IO: AsyncRead + Unpin> AsyncRead for Counting<IO> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.reads += 1;
            Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    #[tokio::test]
    async fn small_reads_are_served_from_one_large_read_in_order_and_the_buffer_goes_when_drained()
    {
        let (mut writer, reader) = tokio::io::duplex(1 << 20);
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        writer.write_all(&sent).await.unwrap();
        drop(writer);
        let mut ahead = ReadAhead::new(Counting {
            io: reader,
            reads: 0,
        });
        ahead.switch_on();
        let mut received = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = ahead.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            received.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(received, sent, "every byte, in order");
        let reads = ahead.get_ref().reads;
        // 200,000 bytes in 4 KiB pieces would be 49 reads; through 64 KiB ones, 4 (and the
        // one that finds the end).
        assert!(reads <= 5, "{reads} reads reached the stream");
        assert_eq!(ahead.held(), 0, "nothing held once drained");
    }

    #[tokio::test]
    async fn off_every_read_goes_through_and_nothing_is_held() {
        let (mut writer, reader) = tokio::io::duplex(1 << 20);
        writer.write_all(&[7u8; 10_000]).await.unwrap();
        let mut ahead = ReadAhead::new(Counting {
            io: reader,
            reads: 0,
        });
        let mut chunk = [0u8; 100];
        let n = ahead.read(&mut chunk).await.unwrap();
        assert_eq!(n, 100, "a read takes what it asked for and no more");
        assert_eq!(ahead.held(), 0);
        ahead.switch_on();
        let n = ahead.read(&mut chunk).await.unwrap();
        assert_eq!(n, 100);
        assert!(ahead.held() > 0, "the rest waits in the buffer");
    }

    #[tokio::test]
    async fn writes_go_straight_through() {
        let (writer, mut reader) = tokio::io::duplex(1 << 16);
        let mut ahead = ReadAhead::new(writer);
        ahead.switch_on();
        ahead.write_all(b"hello").await.unwrap();
        ahead.shutdown().await.unwrap();
        let mut got = Vec::new();
        reader.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");
    }
}
