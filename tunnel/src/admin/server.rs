//! The listener, one hyper HTTP/1.1 connection per accepted socket, and the routing.

use std::{convert::Infallible, io, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use super::{ENDPOINTS, OPENMETRICS, State, capture, config_dump, readiness};

/// A request head must arrive within this (hyper's timer enforces it).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A `POST /logging` body is not read (the filter is in the query); anything past this is
/// refused rather than buffered.
const MAX_BODY: usize = 4096;

/// Admin connections served at once. The admin port is loopback, but any local process can
/// reach it, and every connection holds a file descriptor the data plane shares: past this
/// a new connection is closed at once (operators and probes need a handful).
pub const MAX_CONNECTIONS: usize = 32;
/// The admin listener's accept queue.
const ADMIN_BACKLOG: u32 = 128;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Said with its cause after it (`errors::chain`).
    #[error("cannot listen on {addr} for the admin API (listen.admin; another tunnel may hold it)")]
    Bind { addr: SocketAddr, source: io::Error },
}

/// The bound admin port, not yet served.
pub struct AdminListener {
    listener: TcpListener,
}

impl AdminListener {
    pub async fn bind(addr: SocketAddr) -> Result<Self, AdminError> {
        // Beside a daemon being replaced, as the other listeners (`proxy::listen`).
        let listener = crate::proxy::listen(addr, ADMIN_BACKLOG)
            .map_err(|source| AdminError::Bind { addr, source })?;
        Ok(Self { listener })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Answers until the task is aborted. Each connection is its own task.
    pub async fn serve(self, state: Arc<State>) {
        if let Ok(addr) = self.listener.local_addr() {
            info!(%addr, "admin API listening");
        }
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "admin API: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                debug!(%peer, limit = MAX_CONNECTIONS, "admin API: connection closed, too many open");
                drop(stream);
                continue;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let service = service_fn(move |request| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(route(&state, request).await) }
                });
                let served = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(e) = served {
                    debug!(%peer, error = %e, "admin API connection ended with an error");
                }
            });
        }
    }
}

type Reply = Response<Full<Bytes>>;

async fn route(state: &Arc<State>, request: Request<Incoming>) -> Reply {
    let path = request.uri().path().to_string();
    let query = request.uri().query().map(str::to_string);
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
        "/logging" if method == Method::GET || method == Method::POST => {
            // The filter is in the query, whichever the method; a body is not looked at.
            if method == Method::POST && too_big(request).await {
                return plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "the filter goes in the query: /logging?level=...\n".into(),
                );
            }
            logging(state, query.as_deref())
        }
        "/healthz/ready" | "/metrics" | "/config_dump" | "/connections" | "/auth_failures"
        | "/debug/capture" | "/logging" => {
            let allow = if path == "/logging" {
                "GET, POST"
            } else {
                "GET"
            };
            let mut reply = plain(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed on {path}; use {allow}\n"),
            );
            reply
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            reply
        }
        _ => plain(
            StatusCode::NOT_FOUND,
            format!("no endpoint {path}; endpoints: {ENDPOINTS}\n"),
        ),
    }
}

fn ready(state: &State) -> Reply {
    match readiness::check(state) {
        Ok(()) => plain(StatusCode::OK, "ready\n".into()),
        Err(reasons) => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", reasons.join("\nnot ready: ")),
        ),
    }
}

/// `level` absent: the filter in force. Present: replace it, answer the new one.
fn logging(state: &State, query: Option<&str>) -> Reply {
    let level = query.and_then(|q| {
        q.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == "level").then(|| percent_decode(value))
        })
    });
    let Some(level) = level else {
        return plain(
            StatusCode::OK,
            format!("{}\n", state.telemetry.logging.current()),
        );
    };
    let level = match level {
        Ok(level) if !level.trim().is_empty() => level,
        Ok(_) => {
            return plain(
                StatusCode::BAD_REQUEST,
                "level is empty; give a level (debug) or a directive list (warn,tunnel=debug)\n"
                    .into(),
            );
        }
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("level: {e}\n")),
    };
    match state.telemetry.logging.set(level.trim()) {
        Ok(now) => {
            info!(filter = %now, "log filter changed through the admin API");
            plain(StatusCode::OK, format!("{now}\n"))
        }
        Err(e) => plain(StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

/// A query value that does not decode. Both are leaves: the message says it all.
#[derive(Debug, thiserror::Error)]
enum DecodeError {
    #[error("bad percent escape at byte {at} of {text:?}")]
    BadEscape { at: usize, text: String },
    #[error("{text:?} does not decode to UTF-8")]
    NotUtf8 { text: String },
}

/// `%XX` escapes and `+` (a space, as HTML forms and `curl --data-urlencode` write it). A `%`
/// not followed by two hex digits is refused (`percent-encoding` would keep it as it is).
fn percent_decode(text: &str) -> Result<String, DecodeError> {
    let bad_escape = text.match_indices('%').map(|(at, _)| at).find(|&at| {
        !text
            .get(at + 1..at + 3)
            .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
    });
    if let Some(at) = bad_escape {
        return Err(DecodeError::BadEscape {
            at,
            text: text.into(),
        });
    }
    let spaced = text.replace('+', " ");
    match percent_encoding::percent_decode_str(&spaced).decode_utf8() {
        Ok(decoded) => Ok(decoded.into_owned()),
        Err(_) => Err(DecodeError::NotUtf8 { text: text.into() }),
    }
}

/// Reads at most [`MAX_BODY`] of a body nobody uses, so the connection can be reused.
async fn too_big(request: Request<Incoming>) -> bool {
    let limited = http_body_util::Limited::new(request.into_body(), MAX_BODY);
    limited.collect().await.is_err()
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

fn plain(status: StatusCode, body: String) -> Reply {
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

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;
    use crate::{
        admin::{client, tests::serve},
        errors,
        test_support::Fixture,
    };

    #[test]
    fn queries_decode_escapes_and_plus() {
        assert_eq!(
            percent_decode("warn%2Ctunnel%3Ddebug").unwrap(),
            "warn,tunnel=debug"
        );
        assert_eq!(percent_decode("a+b").unwrap(), "a b");
        assert!(percent_decode("%zz").is_err());
        assert!(percent_decode("%4").is_err());
    }

    #[test]
    fn an_escaped_plus_stays_a_plus_and_escapes_are_decoded_once() {
        assert_eq!(percent_decode("a%2Bb").unwrap(), "a+b");
        assert_eq!(percent_decode("%2541").unwrap(), "%41");
        assert_eq!(percent_decode("caf%C3%A9").unwrap(), "café");
        assert_eq!(percent_decode("").unwrap(), "");
    }

    /// Both variants are leaves: the message is the whole story, with no source to repeat.
    #[test]
    fn each_decode_error_says_it_once() {
        let bad = percent_decode("debug%+5").unwrap_err();
        assert!(bad.source().is_none());
        assert_eq!(
            errors::chain(&bad),
            r#"bad percent escape at byte 5 of "debug%+5""#
        );
        let not_utf8 = percent_decode("%FF%FE").unwrap_err();
        assert!(not_utf8.source().is_none());
        assert_eq!(
            errors::chain(&not_utf8),
            r#""%FF%FE" does not decode to UTF-8"#
        );
    }

    #[tokio::test]
    async fn a_level_that_does_not_decode_is_400_and_the_filter_stays() {
        let fixture = Fixture::new();
        let server = serve(&fixture).await;
        let before = server.state.telemetry.logging.current();
        for (path, body) in [
            (
                "/logging?level=%FF",
                "level: \"%FF\" does not decode to UTF-8\n",
            ),
            (
                "/logging?level=debug%zz",
                "level: bad percent escape at byte 5 of \"debug%zz\"\n",
            ),
        ] {
            let answer = client::request(server.addr, Method::GET, path, Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!((answer.status, answer.body.as_str()), (400, body), "{path}");
        }
        assert_eq!(server.state.telemetry.logging.current(), before);
    }
}
