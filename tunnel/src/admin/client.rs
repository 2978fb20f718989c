//! A minimal client of the admin API (HTTP/1.1 over one TCP connection per request), for
//! `tunnel status` and the tests.

use std::{io, net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

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
    #[error("{addr} did not answer {path} within {timeout:?}")]
    Timeout {
        addr: SocketAddr,
        path: String,
        timeout: Duration,
    },
    #[error("{addr}: {path}: {detail}")]
    Other {
        addr: SocketAddr,
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
    let other = |detail: String| ClientError::Other {
        addr,
        path: path.into(),
        detail,
    };
    let exchange = async {
        let stream = TcpStream::connect(addr).await.map_err(|e| match e.kind() {
            io::ErrorKind::ConnectionRefused => ClientError::Refused { addr },
            _ => other(format!("cannot connect: {e}")),
        })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| other(e.to_string()))?;
        tokio::spawn(connection);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, addr.to_string())
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
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ClientError::Timeout {
            addr,
            path: path.into(),
            timeout,
        })?
}
