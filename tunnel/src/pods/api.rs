//! The registration API's server: a Unix socket only root may open (mode 0600 in a 0700
//! directory it creates; and every connection's peer credentials are checked, since the
//! mode is set just after the socket is made), one JSON request line and one JSON answer
//! per connection (the
//! messages are `tunnel_pod_api`'s). Every connection is bounded: at most
//! [`MAX_CONNECTIONS`] at once, a request of at most `tunnel_pod_api::MAX_MESSAGE` bytes
//! read within [`READ_TIMEOUT`].

use std::{
    io,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::Semaphore,
};
use tracing::{debug, info, warn};
use tunnel_pod_api::{MAX_MESSAGE, Request, Response};

use super::{PodError, PodManager};
use crate::{drain::DrainWatcher, errors};

/// Registrations in flight at once (a node starts pods a few at a time).
pub const MAX_CONNECTIONS: usize = 64;
/// How long a client has to send its request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot create the pod API's directory {}", .dir.display())]
    Directory { dir: PathBuf, source: io::Error },
    #[error("cannot listen on the pod API socket {}", .path.display())]
    Bind { path: PathBuf, source: io::Error },
}

pub struct PodApi {
    listener: UnixListener,
    path: PathBuf,
    /// The socket file's inode: at exit the file is removed only if it is still ours (a
    /// daemon that replaced this one has bound its own there).
    inode: u64,
}

impl PodApi {
    /// Binds the socket, replacing an earlier run's file. If a daemon still answers there
    /// (the one this daemon replaces, during a rolling update), new registrations come here
    /// from now on; that daemon keeps serving its connections until it drains.
    pub fn bind(path: &Path) -> Result<Self, ApiError> {
        if let Some(dir) = path.parent() {
            let created = !dir.exists();
            std::fs::create_dir_all(dir).map_err(|source| ApiError::Directory {
                dir: dir.into(),
                source,
            })?;
            if created {
                let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
            }
        }
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                info!(socket = %path.display(), "another daemon serves the pod API: taking it over");
            }
            let _ = std::fs::remove_file(path);
        }
        let bind = |source| ApiError::Bind {
            path: path.into(),
            source,
        };
        let listener = UnixListener::bind(path).map_err(bind)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind)?;
        let inode = std::fs::metadata(path).map_err(bind)?.ino();
        Ok(Self {
            listener,
            path: path.into(),
            inode,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers requests until a drain (the recorded pods are taken back before).
    pub async fn serve(self, pods: Arc<PodManager>, mut drain: DrainWatcher) {
        let vanished = tokio::spawn(pods.clone().forget_vanished_forever());
        // The namespace watch ends with the API.
        let _stop_watching = crate::drain::AbortOnDrop(vanished);
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let stream = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        warn!(error = %e, "pod API: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = drain.signaled() => break,
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                warn!(
                    max = MAX_CONNECTIONS,
                    "pod API: too many requests at once; one refused"
                );
                continue;
            };
            let pods = pods.clone();
            let drain = drain.clone();
            tokio::spawn(async move {
                answer(stream, &pods, &drain).await;
                drop(slot);
            });
        }
        let still_ours = std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.inode);
        if still_ours {
            let _ = std::fs::remove_file(&self.path);
        }
        info!(socket = %self.path.display(), "pod API closed");
    }
}

async fn answer(stream: UnixStream, pods: &PodManager, drain: &DrainWatcher) {
    // Root, or the daemon's own user: registering a pod opens listeners in any namespace.
    let allowed = stream
        .peer_cred()
        .is_ok_and(|cred| cred.uid() == 0 || cred.uid() == nix::unistd::geteuid().as_raw());
    if !allowed {
        let peer = stream.peer_cred().ok().map(|c| c.uid());
        warn!(uid = ?peer, "pod API: a connection from another user refused");
        return;
    }
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    let mut reader = BufReader::new(read).take(MAX_MESSAGE as u64);
    let response =
        match tokio::time::timeout(READ_TIMEOUT, reader.read_until(b'\n', &mut line)).await {
            Err(_) => Response::Error {
                error: format!("no request within {READ_TIMEOUT:?}"),
            },
            Ok(Err(e)) => {
                debug!(error = %e, "pod API: request not read");
                return;
            }
            Ok(Ok(_)) => match serde_json::from_slice::<Request>(&line) {
                Ok(request) => handle(request, pods, drain).await,
                Err(e) => Response::Error {
                    error: format!("not a pod API request: {e}"),
                },
            },
        };
    let mut answer = serde_json::to_vec(&response).expect("responses always serialize");
    answer.push(b'\n');
    let _ = write.write_all(&answer).await;
}

async fn handle(request: Request, pods: &PodManager, drain: &DrainWatcher) -> Response {
    let refused = |error: PodError| Response::Error {
        error: errors::chain(&error),
    };
    match request {
        Request::Add(spec) => {
            let pod = format!("{}/{}", spec.namespace, spec.name);
            match pods.add(spec, drain).await {
                Ok(status) => Response::Pod(status),
                Err(e) => {
                    let error = errors::chain(&e);
                    warn!(%pod, "pod registration refused: {error}");
                    Response::Error {
                        error: format!("pod {pod}: {error}"),
                    }
                }
            }
        }
        Request::Del { uid } => match pods.del(&uid).await {
            Ok(was_registered) => Response::Removed { was_registered },
            Err(e) => refused(e),
        },
        Request::Check { uid } => match pods.check(&uid).await {
            Ok(status) => Response::Pod(status),
            Err(e) => refused(e),
        },
        Request::List => Response::Pods {
            pods: pods.list().await,
        },
    }
}
