//! Keeps the TLS error that broke a connection. In TLS 1.3 the server judges our
//! certificate after our side of the handshake is done, so its refusal surfaces inside h2,
//! which keeps only the error's text; this adapter, between rustls and h2, keeps the error
//! itself so the log can explain it.

use std::{
    io,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::tls;

/// A stream that keeps the first rustls error passing through it.
pub struct RecordTlsError<S> {
    inner: S,
    failure: Arc<OnceLock<rustls::Error>>,
}

impl<S> RecordTlsError<S> {
    pub fn new(inner: S) -> (Self, Arc<OnceLock<rustls::Error>>) {
        let failure = Arc::new(OnceLock::new());
        (
            Self {
                inner,
                failure: failure.clone(),
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

impl<S: AsyncWrite + Unpin> AsyncWrite for RecordTlsError<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.record(result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.record(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.record(result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.record(result)
    }
}
