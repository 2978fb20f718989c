//! The pod registration API: how `tunnel-cni` (and `tunnel pod`) tell the node daemon that a
//! pod's network namespace exists or is gone.
//!
//! The transport is a Unix stream socket that only root can open (the daemon creates it
//! with mode 0600, default [`DEFAULT_SOCKET`]). One request per connection: the client writes
//! one JSON [`Request`] and a newline, the daemon answers one JSON [`Response`] and a newline,
//! then closes. Written by hand over `serde_json` rather than HTTP: the plugin is a small
//! binary that the container runtime starts for every pod, and one JSON line each way is all
//! the exchange needs.

use std::{
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

/// Where the daemon listens unless its config says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/tunnel/pods.sock";

/// The largest request or response line either side reads (a list of many pods fits).
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// The longest wait [`call`] keeps a deadline for: a longer timeout (tunnel-cni's
/// `timeout_seconds` may be any number) waits this long, which is as good as for ever,
/// where the clock could not add it.
const LONGEST_WAIT: Duration = Duration::from_secs(100 * 365 * 86_400);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Protect a pod: open its listeners inside `netns` and give it an identity. Adding a pod
    /// that is already registered with the same uid and netns is a success that changes
    /// nothing (a runtime may repeat ADD).
    Add(PodSpec),
    /// Forget a pod: close its listeners, drain its connections. Unknown uids succeed.
    Del { uid: String },
    /// Whether a pod is registered and its listeners are open (CNI CHECK).
    Check { uid: String },
    /// Every registered pod.
    List,
}

/// A pod as the runtime knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The pod's network namespace: a path such as `/var/run/netns/cni-…` or
    /// `/proc/<pid>/ns/net`.
    pub netns: PathBuf,
    /// The identity to give the pod; without it the daemon's template decides (and may ask
    /// the Kubernetes API for the pod's service account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
}

/// A registered pod as the daemon reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodStatus {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub netns: PathBuf,
    pub spiffe_id: String,
    /// The pod's addresses, found in its namespace.
    pub ips: Vec<String>,
    /// The listeners opened in the pod's namespace.
    pub listeners: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// Add or check: the pod as registered.
    Pod(PodStatus),
    /// Del: whether the pod was registered.
    Removed { was_registered: bool },
    /// List.
    Pods { pods: Vec<PodStatus> },
    /// The request failed; `error` says what was wrong, in a sentence.
    Error { error: String },
}

/// A failed [`call`]. Every variant is a leaf: its message says all there is, the I/O error
/// of `Connect` and `Io` included, and it has no `source()`; so printing it, alone or as a
/// chain, says each fact once. The I/O error is still there to match on, as `error`.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the tunnel daemon's pod API at {socket}: {error}{}",
        connect_hint(error)
    )]
    Connect { socket: PathBuf, error: io::Error },
    #[error("the tunnel daemon's pod API at {socket} did not answer within {timeout:?}")]
    Timeout { socket: PathBuf, timeout: Duration },
    #[error("talking to the tunnel daemon's pod API at {socket}: {error}")]
    Io { socket: PathBuf, error: io::Error },
    #[error(
        "the tunnel daemon's pod API at {socket} answered something that is not a response: {detail}"
    )]
    Malformed { socket: PathBuf, detail: String },
    #[error("the tunnel daemon refused: {0}")]
    Refused(String),
}

/// What a failed connect most likely means.
fn connect_hint(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::PermissionDenied => " (only root may use the pod API)",
        _ => " (is the tunnel daemon running on this node, with [pods] enabled?)",
    }
}

/// Sends one request and waits at most `timeout` in all for its answer. A daemon's
/// [`Response::Error`] is returned as [`ClientError::Refused`].
pub fn call(socket: &Path, request: &Request, timeout: Duration) -> Result<Response, ClientError> {
    let deadline = std::time::Instant::now() + timeout.min(LONGEST_WAIT);
    let io_error = |error: io::Error| {
        if matches!(
            error.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            ClientError::Timeout {
                socket: socket.to_owned(),
                timeout,
            }
        } else {
            ClientError::Io {
                socket: socket.to_owned(),
                error,
            }
        }
    };
    let stream = UnixStream::connect(socket).map_err(|error| ClientError::Connect {
        socket: socket.to_owned(),
        error,
    })?;
    let remaining = || {
        deadline
            .saturating_duration_since(std::time::Instant::now())
            .max(Duration::from_millis(1))
    };
    stream
        .set_write_timeout(Some(remaining()))
        .map_err(io_error)?;
    let mut line = serde_json::to_vec(request).expect("requests always serialize");
    line.push(b'\n');
    (&stream).write_all(&line).map_err(io_error)?;
    let mut reader = BufReader::new(&stream).take(MAX_MESSAGE as u64);
    let mut answer = Vec::new();
    loop {
        stream
            .set_read_timeout(Some(remaining()))
            .map_err(io_error)?;
        let before = answer.len();
        let read = reader.read_until(b'\n', &mut answer).map_err(io_error)?;
        if read == 0 || answer.ends_with(b"\n") {
            break;
        }
        if answer.len() == before || std::time::Instant::now() >= deadline {
            return Err(ClientError::Timeout {
                socket: socket.to_owned(),
                timeout,
            });
        }
    }
    let response: Response =
        serde_json::from_slice(&answer).map_err(|e| ClientError::Malformed {
            socket: socket.to_owned(),
            detail: if answer.is_empty() {
                "it closed the connection without a word".into()
            } else {
                e.to_string()
            },
        })?;
    match response {
        Response::Error { error } => Err(ClientError::Refused(error)),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use std::{os::unix::net::UnixListener, thread};

    use super::*;

    fn serve_once(
        reply: &'static [u8],
    ) -> (tempfile::TempDir, PathBuf, thread::JoinHandle<String>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pods.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut request = String::new();
            BufReader::new(&stream).read_line(&mut request).unwrap();
            (&stream).write_all(reply).unwrap();
            request
        });
        (dir, path, server)
    }

    #[test]
    fn the_wire_format_is_one_tagged_json_line_each_way() {
        let (_dir, path, server) =
            serve_once(b"{\"result\":\"removed\",\"was_registered\":false}\n");
        let answer = call(
            &path,
            &Request::Del { uid: "u-1".into() },
            Duration::from_secs(2),
        )
        .unwrap();
        assert_eq!(
            answer,
            Response::Removed {
                was_registered: false
            }
        );
        assert_eq!(server.join().unwrap(), "{\"op\":\"del\",\"uid\":\"u-1\"}\n");
    }

    #[test]
    fn a_refusal_is_an_error_with_the_daemons_words() {
        let (_dir, path, _server) =
            serve_once(b"{\"result\":\"error\",\"error\":\"no such netns\"}\n");
        let e = call(&path, &Request::List, Duration::from_secs(2)).unwrap_err();
        assert_eq!(e.to_string(), "the tunnel daemon refused: no such netns");
    }

    #[test]
    fn a_silent_daemon_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pods.sock");
        let _listener = UnixListener::bind(&path).unwrap();
        let started = std::time::Instant::now();
        let e = call(&path, &Request::List, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(e, ClientError::Timeout { .. }), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    /// Found while writing the `cni_stdin` fuzz target: a network config with
    /// `"timeout_seconds": 18446744073709551615` reads, and the client's deadline (now + the
    /// timeout) overflowed the clock: the plugin panicked on ADD, DEL and CHECK.
    #[test]
    fn a_timeout_too_long_for_the_clock_is_waited_as_long_as_it_can() {
        let e = call(
            Path::new("/nonexistent/pods.sock"),
            &Request::List,
            Duration::from_secs(u64::MAX),
        )
        .unwrap_err();
        assert!(matches!(e, ClientError::Connect { .. }), "{e}");
    }

    #[test]
    fn no_daemon_says_where_it_looked() {
        let e = call(
            Path::new("/nonexistent/pods.sock"),
            &Request::List,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/pods.sock"), "{e}");
        let printed = chain(&e);
        assert_eq!(
            printed.matches("No such file or directory").count(),
            1,
            "{printed}"
        );
        assert!(
            printed.ends_with("(is the tunnel daemon running on this node, with [pods] enabled?)"),
            "{printed}"
        );
    }

    /// An error with its causes on one line, `outer: inner: innermost`, as the daemon and
    /// tunnel-cni print errors (this crate cannot use theirs).
    fn chain(error: &dyn std::error::Error) -> String {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }

    #[test]
    fn each_fact_is_printed_once() {
        let socket = PathBuf::from("/run/tunnel/pods.sock");
        let denied = ClientError::Connect {
            socket: socket.clone(),
            error: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        assert_eq!(
            chain(&denied),
            "cannot reach the tunnel daemon's pod API at /run/tunnel/pods.sock: permission \
             denied (only root may use the pod API)"
        );
        let reset = ClientError::Io {
            socket,
            error: io::Error::from(io::ErrorKind::ConnectionReset),
        };
        assert_eq!(
            chain(&reset),
            "talking to the tunnel daemon's pod API at /run/tunnel/pods.sock: connection reset"
        );
    }
}
