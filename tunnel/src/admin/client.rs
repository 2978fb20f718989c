//! A minimal client of the admin API (HTTP/1.1, one connection per request): over TCP for
//! `tunnel status` and the tests, over the control socket for `tunnel log-level`.

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpStream, UnixStream},
};

/// An answer of the admin API.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no daemon answers on {addr} (is tunnel running? is listen.admin elsewhere?)")]
    Refused { addr: SocketAddr },
    #[error(
        "no daemon answers on {} (is tunnel running? is listen.control elsewhere?)",
        .path.display()
    )]
    NoSocket { path: PathBuf },
    #[error("{}: permission denied; only root may use the control socket", .path.display())]
    NotAllowed { path: PathBuf },
    #[error("{at} did not answer {path} within {timeout:?}")]
    Timeout {
        at: String,
        path: String,
        timeout: Duration,
    },
    #[error("{at}: {path}: {detail}")]
    Other {
        at: String,
        path: String,
        detail: String,
    },
}

/// `method path` on `addr`, the whole exchange (connect included) within `timeout`.
pub async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    timeout: Duration,
) -> Result<Answer, ClientError> {
    let at = addr.to_string();
    let exchange = async {
        let stream = TcpStream::connect(addr).await.map_err(|e| match e.kind() {
            io::ErrorKind::ConnectionRefused => ClientError::Refused { addr },
            _ => other(&at, path, format!("cannot connect: {e}")),
        })?;
        exchange(stream, &at, &at, method, path).await
    };
    within(timeout, &at, path, exchange).await
}

/// `method path` on the control socket at `socket`, within `timeout`.
pub async fn request_unix(
    socket: &Path,
    method: Method,
    path: &str,
    timeout: Duration,
) -> Result<Answer, ClientError> {
    let at = socket.display().to_string();
    let exchange = async {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                    ClientError::NoSocket {
                        path: socket.into(),
                    }
                }
                io::ErrorKind::PermissionDenied => ClientError::NotAllowed {
                    path: socket.into(),
                },
                _ => other(&at, path, format!("cannot connect: {e}")),
            })?;
        exchange(stream, &at, "localhost", method, path).await
    };
    within(timeout, &at, path, exchange).await
}

fn other(at: &str, path: &str, detail: String) -> ClientError {
    ClientError::Other {
        at: at.into(),
        path: path.into(),
        detail,
    }
}

async fn within(
    timeout: Duration,
    at: &str,
    path: &str,
    exchange: impl Future<Output = Result<Answer, ClientError>>,
) -> Result<Answer, ClientError> {
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ClientError::Timeout {
            at: at.into(),
            path: path.into(),
            timeout,
        })?
}

/// One request on `stream`; `at` names the daemon in errors, `host` goes in the header.
async fn exchange<IO>(
    stream: IO,
    at: &str,
    host: &str,
    method: Method,
    path: &str,
) -> Result<Answer, ClientError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let other = |detail: String| other(at, path, detail);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| other(e.to_string()))?;
    tokio::spawn(connection);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, host)
        .body(Empty::<Bytes>::new())
        .map_err(|e| other(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| other(e.to_string()))?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| other(e.to_string()))?
        .to_bytes();
    Ok(Answer {
        status,
        content_type,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
