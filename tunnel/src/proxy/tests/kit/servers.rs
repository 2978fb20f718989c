//! Servers around the daemon: workloads, a peer that never answers, a relay that can go
//! silent, and a peer that closes its first connections in good order.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::{Notify, watch},
};
use tokio_rustls::TlsAcceptor;

/// A workload server: echoes each connection until EOF, then closes its side.
pub struct Echo {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Echo {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let (mut reader, mut writer) = tcp.split();
                    let _ = tokio::io::copy(&mut reader, &mut writer).await;
                    let _ = writer.shutdown().await;
                });
            }
        });
        Self { addr, accepted }
    }

    /// Connections it has accepted: deliveries.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A listener that accepts and never says anything: a peer whose tunnel port is up but
/// whose daemon is wedged. Counts the connections that reached it.
pub struct Silent {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Silent {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                held.push(tcp);
            }
        });
        Self { addr, accepted }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A TCP relay between a client and the daemon that the test can freeze: a frozen
/// connection forwards nothing either way, as if the path or the far end had stopped dead
/// while both sockets stay open.
pub struct Relay {
    pub addr: SocketAddr,
    state: Arc<RelayState>,
}

#[derive(Default)]
struct RelayState {
    /// Connections accepted from now on start frozen.
    freeze_new: AtomicBool,
    connections: Mutex<Vec<watch::Sender<bool>>>,
    /// When the daemon's side of a frozen connection was closed, newest last.
    upstream_closed: Mutex<Vec<Instant>>,
    upstream_closed_signal: Notify,
}

impl Relay {
    pub async fn start(to: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(RelayState::default());
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(upstream) = TcpStream::connect(to).await else {
                    continue;
                };
                // As the daemon's own sockets: a small frame (a PING) must not wait for an ACK.
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let (frozen_tx, frozen) = watch::channel(shared.freeze_new.load(Ordering::SeqCst));
                shared.connections.lock().unwrap().push(frozen_tx);
                let (client_read, client_write) = client.into_split();
                let (upstream_read, upstream_write) = upstream.into_split();
                tokio::spawn(pump(client_read, upstream_write, frozen.clone(), None));
                tokio::spawn(pump(
                    upstream_read,
                    client_write,
                    frozen,
                    Some(shared.clone()),
                ));
            }
        });
        Self { addr, state }
    }

    /// Freezes the connections open now; new ones are relayed.
    pub fn freeze_open(&self) {
        for connection in self.state.connections.lock().unwrap().iter() {
            connection.send_replace(true);
        }
    }

    /// Freezes the open connections and every new one.
    pub fn freeze_all(&self) {
        self.state.freeze_new.store(true, Ordering::SeqCst);
        self.freeze_open();
    }

    /// Waits until the daemon closes its side of a frozen connection; when it did.
    pub async fn upstream_closed(&self, within: Duration) -> Option<Instant> {
        tokio::time::timeout(within, async {
            loop {
                let notified = self.state.upstream_closed_signal.notified();
                if let Some(at) = self.state.upstream_closed.lock().unwrap().last() {
                    return *at;
                }
                notified.await;
            }
        })
        .await
        .ok()
    }
}

/// Copies one direction. Frozen, the client-to-daemon direction stops reading; the
/// daemon-to-client one (`watch_close`) keeps reading what the daemon sends but forwards
/// nothing, only to see when the daemon closes: to the daemon that is the same as a client
/// that stopped reading (its few PING bytes sit in a socket buffer either way).
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
    watch_close: Option<Arc<RelayState>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let is_frozen = *frozen.borrow_and_update();
        if is_frozen && watch_close.is_none() {
            // Parked for good: frozen connections are not thawed.
            std::future::pending::<()>().await;
        }
        tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    if let (true, Some(state)) = (is_frozen, &watch_close) {
                        state.upstream_closed.lock().unwrap().push(Instant::now());
                        state.upstream_closed_signal.notify_waiters();
                    }
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) if !is_frozen => {
                    if to.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
            },
            changed = frozen.changed() => if changed.is_err() {
                return;
            },
        }
    }
}

/// A peer daemon that closes its first `goodbyes` connections in good order right after
/// their TLS and HTTP/2 handshakes (a GOAWAY without error, no stream processed), as a
/// daemon does when its certificate is replaced or it begins to drain while a caller dials;
/// every later connection is relayed to `to`.
pub struct GoodbyeFirst {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl GoodbyeFirst {
    pub async fn start(
        to: SocketAddr,
        node: Arc<rustls::sign::CertifiedKey>,
        goodbyes: usize,
    ) -> Self {
        let mut config = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(node)));
        config.alpn_protocols = vec![crate::tls::ALPN_H2.to_vec()];
        let tls = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let _ = client.set_nodelay(true);
                if counted.fetch_add(1, Ordering::SeqCst) >= goodbyes {
                    let Ok(mut upstream) = TcpStream::connect(to).await else {
                        continue;
                    };
                    let _ = upstream.set_nodelay(true);
                    tokio::spawn(async move {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    });
                    continue;
                }
                let tls = tls.clone();
                tokio::spawn(async move {
                    let Ok(stream) = tls.accept(client).await else {
                        return;
                    };
                    let Ok(mut connection) = h2::server::handshake(stream).await else {
                        return;
                    };
                    connection.abrupt_shutdown(h2::Reason::NO_ERROR);
                    while connection.accept().await.is_some() {}
                    // Held a moment, as the daemon does: closed at once with the caller's
                    // frames unread, the socket would send a reset instead of the goodbye.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    drop(connection);
                });
            }
        });
        Self { addr, accepted }
    }

    /// Connections accepted so far, closed or relayed.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}
