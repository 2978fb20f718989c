//! Keeps the TLS error that broke a connection. In TLS 1.3 the server judges our
//! certificate after our side of the handshake is done, so its refusal surfaces inside h2,
//! which keeps only the error's text; this adapter, between rustls and h2, keeps the error
//! itself so the log can explain it.
//!
//! The refusal can also be lost to a race: the server sends its alert and closes while we
//! are already writing HTTP/2, and our write meets its reset before anything reads the
//! alert, which waits unread in the socket. So the first write that fails on a reset is held
//! back until a read has taken in what the peer sent (or briefly, if nothing comes).

use std::{
    future::Future as _,
    io,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Sleep,
};

use crate::tls;

/// How long a failed write waits for the peer's alert to be readable. A reset makes the
/// socket readable at once; this only bounds the wait if it somehow does not.
const ALERT_WAIT: Duration = Duration::from_millis(200);

/// A stream that keeps the first rustls error passing through it.
pub struct RecordTlsError<S> {
    inner: S,
    failure: Arc<OnceLock<rustls::Error>>,
    held: Held,
}

/// A write error held back while the peer's alert is read.
enum Held {
    Never,
    Holding(io::Error, Pin<Box<Sleep>>),
    /// Once per connection.
    Done,
}

impl<S> RecordTlsError<S> {
    pub fn new(inner: S) -> (Self, Arc<OnceLock<rustls::Error>>) {
        let failure = Arc::new(OnceLock::new());
        (
            Self {
                inner,
                failure: failure.clone(),
                held: Held::Never,
            },
            failure,
        )
    }

    fn record<T>(&self, result: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(e)) = &result
            && let Some(tls_error) = tls::rustls_error(e)
        {
            let _ = self.failure.set(tls_error.clone());
        }
        result
    }
}

impl<S: AsyncRead + Unpin> RecordTlsError<S> {
    /// The outcome of a write: a reset without a TLS error is held until the peer's alert,
    /// if it sent one, has been read.
    fn record_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match self.record(result) {
            Poll::Ready(Err(e))
                if matches!(self.held, Held::Never)
                    && self.failure.get().is_none()
                    && matches!(
                        e.kind(),
                        io::ErrorKind::BrokenPipe
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionAborted
                    ) =>
            {
                self.held = Held::Holding(e, Box::pin(tokio::time::sleep(ALERT_WAIT)));
                self.poll_held(cx)
            }
            other => other,
        }
    }

    /// Reads what the peer sent before it closed (recording its alert), then gives back the
    /// held write error.
    fn poll_held<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let Held::Holding(_, deadline) = &mut self.held else {
            unreachable!("only called while holding an error");
        };
        let mut scratch = [0u8; 512];
        // Bounded: a peer could have sent more than an alert before closing.
        for _ in 0..32 {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {}
                Poll::Ready(read) => {
                    let _ = self.record(Poll::Ready(read));
                    break;
                }
                Poll::Pending if deadline.as_mut().poll(cx).is_pending() => return Poll::Pending,
                Poll::Pending => break,
            }
        }
        match std::mem::replace(&mut self.held, Held::Done) {
            Held::Holding(error, _) => Poll::Ready(Err(error)),
            _ => unreachable!("holding, checked above"),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for RecordTlsError<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.record(result)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RecordTlsError<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if matches!(self.held, Held::Holding(..)) {
            return self.poll_held(cx);
        }
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.record_write(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if matches!(self.held, Held::Holding(..)) {
            return self.poll_held(cx);
        }
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.record_write(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if matches!(self.held, Held::Holding(..)) {
            return self.poll_held(cx);
        }
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.record_write(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if matches!(self.held, Held::Holding(..)) {
            return self.poll_held(cx);
        }
        let result = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.record_write(cx, result)
    }
}

#[cfg(test)]
mod tests {
    use rustls::AlertDescription;
    use tokio::io::AsyncWriteExt as _;

    use super::*;

    /// A connection the peer has reset: writes fail; reads are not ready `pending` times,
    /// then yield `read` (the alert it sent, or nothing).
    struct Reset {
        pending: usize,
        read: Option<io::Error>,
    }

    impl AsyncRead for Reset {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.pending > 0 {
                self.pending -= 1;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            // Nothing to read, and no wake-up: only the wait's deadline ends it.
            self.read
                .take()
                .map_or(Poll::Pending, |error| Poll::Ready(Err(error)))
        }
    }

    impl AsyncWrite for Reset {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn alert() -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::CertificateExpired),
        )
    }

    #[tokio::test]
    async fn an_alert_unread_when_a_write_meets_the_reset_is_still_recorded() {
        let reset = Reset {
            pending: 3,
            read: Some(alert()),
        };
        let (mut stream, failure) = RecordTlsError::new(reset);
        let error = stream.write_all(b"h2 preface").await.unwrap_err();
        assert_eq!(
            error.kind(),
            io::ErrorKind::BrokenPipe,
            "the write's own error"
        );
        assert_eq!(
            failure.get(),
            Some(&rustls::Error::AlertReceived(
                AlertDescription::CertificateExpired
            ))
        );
        // Held once: a later write fails at once.
        let again = stream.write_all(b"more").await.unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::BrokenPipe);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_without_an_alert_is_given_back_after_a_short_wait() {
        let reset = Reset {
            pending: 0,
            read: None,
        };
        let (mut stream, failure) = RecordTlsError::new(reset);
        let started = tokio::time::Instant::now();
        let error = stream.write_all(b"h2 preface").await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
        assert!(started.elapsed() <= ALERT_WAIT, "{:?}", started.elapsed());
        assert!(failure.get().is_none());
    }
}
