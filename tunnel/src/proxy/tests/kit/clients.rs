//! Clients of the daemon that do what the pool never would, and socket helpers.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;

use crate::proxy::budget::Chunk;
use h2::client::SendRequest;
use http::{Method, Request, StatusCode};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::{
    io::AsyncReadExt,
    net::{TcpSocket, TcpStream},
    task::JoinHandle,
};
use tokio_rustls::TlsConnector;

use crate::proxy::hbone;

/// A raw HTTP/2 client over the frontend's mTLS, for requests the pool would never send.
pub struct H2Client {
    pub sender: SendRequest<Chunk>,
    /// The connection's driver; ends when the connection does.
    pub driver: JoinHandle<Result<(), h2::Error>>,
}

impl H2Client {
    pub async fn connect(addr: SocketAddr, tls: &Arc<ClientConfig>) -> Self {
        let tcp = TcpStream::connect(addr)
            .await
            .expect("connect to the daemon");
        let tls_stream = TlsConnector::from(tls.clone())
            .connect(ServerName::IpAddress(addr.ip().into()), tcp)
            .await
            .expect("TLS handshake with the daemon");
        let (sender, connection) = hbone::client_builder(100, hbone::CONNECTION_WINDOW)
            .handshake::<_, Chunk>(tls_stream)
            .await
            .expect("HTTP/2 handshake with the daemon");
        let driver = tokio::spawn(connection);
        Self { sender, driver }
    }

    /// Sends `request` and returns the answer's status and body (or the stream error).
    pub async fn send(
        &self,
        request: Request<()>,
    ) -> Result<(StatusCode, h2::SendStream<Chunk>, h2::RecvStream), h2::Error> {
        let mut sender = self.sender.clone().ready().await?;
        let (response, send) = sender.send_request(request, false)?;
        let response = tokio::time::timeout(Duration::from_secs(5), response)
            .await
            .expect("the daemon answers within 5 s")?;
        Ok((response.status(), send, response.into_body()))
    }

    /// The status of a request (panics on a stream error).
    pub async fn status(&self, request: Request<()>) -> StatusCode {
        self.answer(request).await.0
    }

    /// The status of a request and the refusal reason the daemon sent with it.
    pub async fn answer(&self, request: Request<()>) -> (StatusCode, Option<String>) {
        let sent = async {
            let mut sender = self.sender.clone().ready().await?;
            let (response, _send) = sender.send_request(request, false)?;
            response.await
        };
        match tokio::time::timeout(Duration::from_secs(5), sent)
            .await
            .expect("the daemon answers within 5 s")
        {
            Ok(response) => {
                let reason = response
                    .headers()
                    .get(crate::proxy::hbone::REFUSAL_HEADER)
                    .map(|v| v.to_str().unwrap().to_string());
                (response.status(), reason)
            }
            Err(e) => panic!("the request failed instead of being answered: {e}"),
        }
    }
}

/// A request with any method and authority (the pool only ever makes CONNECT ip:port).
pub fn request(method: Method, uri: &str) -> Request<()> {
    Request::builder().method(method).uri(uri).body(()).unwrap()
}

/// Sends `data` on an HBONE stream and reads back as many bytes (the far end echoes).
pub async fn echo_round_trip(send: &mut h2::SendStream<Chunk>, recv: &mut h2::RecvStream) {
    let data = Bytes::from_static(b"hello through the tunnel");
    send.send_data(Chunk::from(data.clone()), false)
        .expect("send on the stream");
    let mut echoed = Vec::new();
    while echoed.len() < data.len() {
        let chunk = tokio::time::timeout(Duration::from_secs(5), recv.data())
            .await
            .expect("the echo comes back within 5 s")
            .expect("the stream ended before the echo")
            .expect("the stream broke before the echo");
        let _ = recv.flow_control().release_capacity(chunk.len());
        echoed.extend_from_slice(&chunk);
    }
    assert_eq!(echoed, data, "the echo");
}

/// A TCP connection to `to` from `source` (any address of 127.0.0.0/8 is this host's). A
/// connection the daemon resets at once may fail here already.
pub async fn connect_from(source: IpAddr, to: SocketAddr) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(to).await
}

/// How a connection the test holds was ended by the other side.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// FIN (read returned 0).
    Closed,
    /// RST.
    Reset,
    /// Another error.
    Error(io::ErrorKind),
}

/// Reads (discarding data) until the other side ends the connection, for at most `within`:
/// how and after how long.
pub async fn wait_end(tcp: &mut TcpStream, within: Duration) -> Option<(Ended, Duration)> {
    let started = Instant::now();
    let mut buf = vec![0u8; 16 * 1024];
    tokio::time::timeout(within, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) => return Ended::Closed,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ended::Reset,
                Err(e) => return Ended::Error(e.kind()),
            }
        }
    })
    .await
    .ok()
    .map(|ended| (ended, started.elapsed()))
}
