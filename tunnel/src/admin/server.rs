//! The admin port (`listen.admin`): the admin API on TCP, which any local process reaches,
//! so it only reads; and the routing it shares with the control socket, which may also
//! change things (`Access`).

use std::{io, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use serde::Serialize;
use tokio::net::TcpListener;

use super::{
    ENDPOINTS, OPENMETRICS, State, capture, config_dump,
    control::Operator,
    logging, readiness,
    serving::{self, Limits, Reply},
};

/// Admin connections open at once. Any local process can reach the port, and every
/// connection holds a file descriptor the data plane shares; past this a new connection
/// takes the place of the oldest idle one ([`serving`]).
pub const MAX_CONNECTIONS: usize = 256;
/// A request head must arrive within this, from the connection's start or the end of the
/// last answer on it.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(3);
const LIMITS: Limits = Limits {
    max: MAX_CONNECTIONS,
    header_timeout: HEADER_TIMEOUT,
    keep_alive: true,
};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Said with its cause after it (`errors::chain`).
    #[error("cannot listen on {addr} for the admin API (listen.admin; another tunnel may hold it)")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error(
        "cannot listen on {addr} for the health port (listen.health; another tunnel may hold it)"
    )]
    BindHealth { addr: SocketAddr, source: io::Error },
    #[error("cannot open the control socket {} (listen.control)", .path.display())]
    Control { path: PathBuf, source: io::Error },
}

/// Who asks, which decides what may be changed.
#[derive(Debug)]
pub enum Access {
    /// The admin port: any local process. Reads only.
    Port,
    /// The control socket: root (or the daemon's own user), by its peer credentials.
    Operator(Operator),
}

/// The bound admin port, not yet served.
pub struct AdminListener {
    listener: TcpListener,
}

impl AdminListener {
    /// `backlog`: the accept queue (`listen.backlog`).
    pub async fn bind(addr: SocketAddr, backlog: u32) -> Result<Self, AdminError> {
        // Beside a daemon being replaced, as the other listeners (`proxy::listen`).
        let listener = crate::proxy::listen(addr, backlog)
            .map_err(|source| AdminError::Bind { addr, source })?;
        Ok(Self { listener })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The listening socket, for what applies to every listener.
    pub fn listening(&self) -> &TcpListener {
        &self.listener
    }

    /// Answers until the task is aborted. Each connection is its own task.
    pub async fn serve(self, state: Arc<State>) {
        serving::serve_tcp(self.listener, "admin API", LIMITS, move |request| {
            let state = state.clone();
            async move { route(&state, &Access::Port, request).await }
        })
        .await;
    }
}

pub(super) async fn route(
    state: &Arc<State>,
    access: &Access,
    request: Request<Incoming>,
) -> Reply {
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    let get_only = |method: &Method| *method == Method::GET;
    match path.as_str() {
        "/healthz/ready" if get_only(&method) => ready(state),
        "/metrics" if get_only(&method) => text(
            StatusCode::OK,
            OPENMETRICS,
            state.telemetry.metrics.encode(),
        ),
        "/config_dump" if get_only(&method) => {
            let state = state.clone();
            blocking_json(move || config_dump::dump(&state)).await
        }
        "/connections" if get_only(&method) => json(&state.telemetry.connections.list()),
        "/auth_failures" if get_only(&method) => json(&state.telemetry.auth_failures.recent()),
        "/debug/capture" if get_only(&method) => {
            let state = state.clone();
            blocking_json(move || capture::view(state.capture.as_deref())).await
        }
        "/logging" => logging::answer(state, access, request).await,
        "/healthz/ready" | "/metrics" | "/config_dump" | "/connections" | "/auth_failures"
        | "/debug/capture" => {
            let mut reply = plain(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed on {path}; use GET\n"),
            );
            reply
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET"));
            reply
        }
        _ => plain(
            StatusCode::NOT_FOUND,
            format!("no endpoint {path}; endpoints: {ENDPOINTS}\n"),
        ),
    }
}

pub(super) fn ready(state: &State) -> Reply {
    match readiness::check(state) {
        Ok(()) => plain(StatusCode::OK, "ready\n".into()),
        Err(reasons) => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", reasons.join("\nnot ready: ")),
        ),
    }
}

async fn blocking_json<T: Serialize + Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Reply {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => json(&value),
        Err(e) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the handler failed: {e}\n"),
        ),
    }
}

fn json<T: Serialize + ?Sized>(value: &T) -> Reply {
    match serde_json::to_string_pretty(value) {
        Ok(mut body) => {
            body.push('\n');
            text(StatusCode::OK, "application/json", body)
        }
        Err(e) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the answer: {e}\n"),
        ),
    }
}

pub(super) fn plain(status: StatusCode, body: String) -> Reply {
    text(status, "text/plain; charset=utf-8", body)
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(body)));
    *reply.status_mut() = status;
    reply
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    reply
}
