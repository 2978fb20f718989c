//! The health port (`listen.health`, `127.0.0.1:15021`, as Istio's and ztunnel's): readiness
//! alone, for the kubelet's probes, on a listener of its own. Its answers are all immediate
//! (no JSON, no blocking work), so its connections are never busy for long, and it shares
//! neither connections nor a cap with the admin port, where scrapes, dumps and anyone's slow
//! clients are served. Slow clients on this port are dealt with as on every admin listener
//! ([`super::serving`]): a newcomer takes the place of the oldest idle connection, so a probe is
//! answered however many connections are held open.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use super::{
    AdminError, State,
    server::{self, plain},
    serving::{self, Limits, Reply},
};

/// Connections at once: probes open one at a time and close it; the rest is room for slow
/// clients before they start closing each other ([`serving`](super::serving)).
pub const MAX_CONNECTIONS: usize = 256;
/// A probe sends its request at once; its own timeout is a second or two.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// The bound health port, not yet served.
pub struct HealthListener {
    listener: TcpListener,
}

impl HealthListener {
    /// `backlog`: the accept queue (`listen.backlog`).
    pub async fn bind(addr: SocketAddr, backlog: u32) -> Result<Self, AdminError> {
        // Beside a daemon being replaced, as the other listeners (`proxy::listen`).
        let listener = crate::proxy::listen(addr, backlog)
            .map_err(|source| AdminError::BindHealth { addr, source })?;
        Ok(Self { listener })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The listening socket, for what applies to every listener.
    pub fn listening(&self) -> &TcpListener {
        &self.listener
    }

    /// Answers until the task is aborted.
    pub async fn serve(self, state: Arc<State>) {
        let limits = Limits {
            max: MAX_CONNECTIONS,
            header_timeout: HEADER_TIMEOUT,
            keep_alive: false,
        };
        serving::serve_tcp(self.listener, "health port", limits, move |request| {
            let reply = answer(&state, &request);
            async move { reply }
        })
        .await;
    }
}

fn answer(state: &State, request: &Request<Incoming>) -> Reply {
    let path = request.uri().path();
    match (request.method(), path) {
        (&Method::GET | &Method::HEAD, "/healthz/ready") => server::ready(state),
        (method, "/healthz/ready") => plain(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on /healthz/ready; use GET\n"),
        ),
        _ => plain(
            StatusCode::NOT_FOUND,
            format!(
                "no endpoint {path}: this port answers GET /healthz/ready only; the admin API \
                 is on {}\n",
                state.config.listen.admin
            ),
        ),
    }
}
