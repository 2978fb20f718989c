//! What the admin API's listeners share (the admin port, the health port, the control
//! socket): HTTP/1.1 by hyper, deadlines for every request head, and a bounded number of
//! connections per listener, held so that slow clients cannot keep anyone out.
//!
//! Any local process can open connections and send nothing, or a byte a second. With a cap
//! that closes the newcomer once it is reached (32 before), that many such connections
//! shut everyone else out, the kubelet's probes included, for as long as they last (the head
//! deadline, then again once they reconnect). Here:
//!
//! - a connection costs its socket and a small task until its first byte arrives (hyper and
//!   its buffers come with the request), so the cap can be in the hundreds;
//! - the first byte must come within the head deadline, and the whole head within the same
//!   time again (hyper's `header_read_timeout`, which also bounds the wait for the next
//!   request on a kept-alive connection);
//! - past the cap, a newcomer takes the place of the oldest connection that is not being
//!   answered, which is closed: one idle between requests, still sending its head, or not
//!   reading its answer. What the daemon is working on (a handler running) is never closed
//!   for a newcomer; when every connection is in a handler the newcomer is closed. The accept
//!   loop lets each new connection read its head before it accepts the next.
//!
//! What remains is the kernel's accept queue (`listen.backlog`): a process that keeps more
//! connections than the cap and the queue together open to one port, reopening each one as
//! it is closed, keeps the queue full, and a probe's SYN is then dropped and sent again a
//! second later.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    future::Future,
    io,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream, UnixStream},
    sync::oneshot,
};
use tracing::{debug, info, warn};

pub(super) type Reply = http::Response<Full<Bytes>>;

/// How one listener's connections are held.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    /// Connections open at once.
    pub max: usize,
    /// From the connection's start to its first byte, and from there (or from the end of
    /// the last answer on it) to a complete request head.
    pub header_timeout: Duration,
    /// More than one request per connection (Prometheus keeps its connection).
    pub keep_alive: bool,
}

/// The connections of one listener.
pub(super) struct Slots {
    max: usize,
    state: Mutex<Open>,
}

struct Open {
    next: u64,
    /// By age: the first is the oldest.
    held: BTreeMap<u64, Held>,
}

struct Held {
    /// Inside a handler: not closed for a newcomer.
    answering: bool,
    /// Dropped to close the connection.
    _close: oneshot::Sender<()>,
}

/// A connection's place; its end frees it.
pub(super) struct Slot {
    slots: Arc<Slots>,
    id: u64,
    closed: oneshot::Receiver<()>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.lock().held.remove(&self.id);
    }
}

/// What admitting a newcomer did.
pub(super) enum Admitted {
    /// A place was free.
    Free(Slot),
    /// The oldest connection not being answered was closed for it.
    InPlaceOfAnother(Slot),
}

impl Slots {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            state: Mutex::new(Open {
                next: 0,
                held: BTreeMap::new(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.state.lock().expect("admin slots lock poisoned")
    }

    /// A place for a new connection, or `None` when every connection is being answered.
    pub fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let mut open = self.lock();
        let mut evicted = false;
        if open.held.len() >= self.max {
            let oldest_idle = open
                .held
                .iter()
                .find(|(_, held)| !held.answering)
                .map(|(id, _)| *id)?;
            // Dropping its sender closes it.
            open.held.remove(&oldest_idle);
            evicted = true;
        }
        let id = open.next;
        open.next += 1;
        let (close, closed) = oneshot::channel();
        open.held.insert(
            id,
            Held {
                answering: false,
                _close: close,
            },
        );
        let slot = Slot {
            slots: self.clone(),
            id,
            closed,
        };
        Some(if evicted {
            Admitted::InPlaceOfAnother(slot)
        } else {
            Admitted::Free(slot)
        })
    }

    /// Connections open now.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.lock().held.len()
    }

    fn answering(&self, id: u64, answering: bool) {
        if let Some(held) = self.lock().held.get_mut(&id) {
            held.answering = answering;
        }
    }
}

/// Marks a connection as inside a handler while it lives.
struct Answering {
    slots: Arc<Slots>,
    id: u64,
}

impl Answering {
    fn new(slots: &Arc<Slots>, id: u64) -> Self {
        slots.answering(id, true);
        Self {
            slots: slots.clone(),
            id,
        }
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.slots.answering(self.id, false);
    }
}

/// A connection the admin API serves: readable without a buffer.
pub(super) trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    fn wait_readable(&self) -> impl Future<Output = io::Result<()>> + Send;
}

impl Stream for TcpStream {
    fn wait_readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        self.readable()
    }
}

impl Stream for UnixStream {
    fn wait_readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        self.readable()
    }
}

/// How a connection ended.
#[derive(Debug)]
pub(super) enum Ended {
    /// The client closed it, or the last answer was sent without keep-alive.
    Done,
    /// Not a byte within the head deadline.
    Silent,
    /// The socket failed before its first byte.
    Io(io::Error),
    /// No complete request head in time, or a request hyper refused.
    Error(hyper::Error),
    /// Closed for a newcomer.
    MadeRoom,
}

/// Serves one connection with `handler` until it ends.
pub(super) async fn serve<IO, H, F>(io: IO, mut slot: Slot, limits: Limits, handler: H) -> Ended
where
    IO: Stream,
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    // Until its first byte, a connection is this task and its socket.
    let first = tokio::select! {
        first = tokio::time::timeout(limits.header_timeout, io.wait_readable()) => first,
        _ = &mut slot.closed => return Ended::MadeRoom,
    };
    match first {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Ended::Io(e),
        Err(_) => return Ended::Silent,
    }
    let slots = slot.slots.clone();
    let id = slot.id;
    let service = service_fn(move |request| {
        let answering = Answering::new(&slots, id);
        let reply = handler(request);
        async move {
            let reply = reply.await;
            drop(answering);
            Ok::<_, Infallible>(reply)
        }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(limits.keep_alive)
        .serve_connection(TokioIo::new(io), service);
    tokio::select! {
        served = connection => match served {
            Ok(()) => Ended::Done,
            Err(e) => Ended::Error(e),
        },
        _ = &mut slot.closed => Ended::MadeRoom,
    }
}

/// Accepts on `listener` until the task is aborted, serving each connection with `handler`.
/// `what` names the listener in log lines.
pub(super) async fn serve_tcp<H, F>(
    listener: TcpListener,
    what: &'static str,
    limits: Limits,
    handler: H,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "{what} listening");
    }
    let slots = Slots::new(limits.max);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %e, "{what}: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let slot = match slots.admit() {
            Some(Admitted::Free(slot)) => slot,
            Some(Admitted::InPlaceOfAnother(slot)) => {
                debug!(%peer, limit = limits.max, "{what}: the oldest idle connection closed to make room");
                slot
            }
            None => {
                debug!(%peer, limit = limits.max, "{what}: connection closed, every one open is being answered");
                continue;
            }
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            match serve(stream, slot, limits, handler).await {
                Ended::Error(e) => {
                    debug!(%peer, error = %e, "{what}: connection ended with an error")
                }
                Ended::Io(e) => debug!(%peer, error = %e, "{what}: connection failed"),
                Ended::Silent => {
                    debug!(%peer, "{what}: connection closed, nothing sent within {:?}", limits.header_timeout)
                }
                Ended::Done | Ended::MadeRoom => {}
            }
        });
        // Let the new connection read its head before the next accept: under a burst of
        // connects it would otherwise be closed for the ones accepted after it before it
        // was ever polled.
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(admitted: Option<Admitted>) -> (Slot, bool) {
        match admitted.expect("admitted") {
            Admitted::Free(slot) => (slot, false),
            Admitted::InPlaceOfAnother(slot) => (slot, true),
        }
    }

    #[test]
    fn a_newcomer_takes_the_place_of_the_oldest_connection_not_being_answered() {
        let slots = Slots::new(3);
        let (mut first, _) = slot(slots.admit());
        let (second, _) = slot(slots.admit());
        let (mut third, evicted) = slot(slots.admit());
        assert!(!evicted);
        // The first is inside a handler: the second is the oldest one idle.
        let answering = Answering::new(&slots, first.id);
        let (_fourth, evicted) = slot(slots.admit());
        assert!(evicted);
        assert_eq!(slots.open(), 3);
        assert!(
            first
                .closed
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Empty)
        );
        drop(second); // its task ends: nothing else is freed
        assert_eq!(slots.open(), 3);
        drop(answering);
        let (_fifth, evicted) = slot(slots.admit());
        assert!(evicted);
        assert!(
            first
                .closed
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Closed),
            "the first, done answering, is now the oldest idle one"
        );
        assert!(
            third
                .closed
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Empty)
        );
    }

    #[test]
    fn when_every_connection_is_being_answered_the_newcomer_is_turned_away() {
        let slots = Slots::new(2);
        let (a, _) = slot(slots.admit());
        let (b, _) = slot(slots.admit());
        let _busy = (Answering::new(&slots, a.id), Answering::new(&slots, b.id));
        assert!(slots.admit().is_none());
        assert_eq!(slots.open(), 2);
    }
}
