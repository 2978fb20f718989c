//! The control socket (`listen.control`, `/run/tunnel/control.sock`): the admin API over a
//! Unix socket that only root may use, and the only place the daemon's state can be changed
//! at run time (today: the log filter, `/logging`). The socket is mode 0600 in a directory
//! the daemon makes 0700 when it makes it, and each connection's peer credentials
//! (`SO_PEERCRED`) are checked as well, since the mode is set just after the socket is
//! bound: root, or the user the daemon runs as, is answered; anyone else gets 403 and a
//! line in the log. The uid and pid are what every change is logged with.
//!
//! HTTP/1.1, so `curl --unix-socket` works too; `tunnel log-level` is its client. Held like
//! the other listeners ([`super::serving`]): a few connections, a head deadline.

use std::{
    io,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use http::StatusCode;
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, info, warn};

use super::{
    AdminError, State,
    server::{self, Access, plain},
    serving::{self, Admitted, Ended, Limits, Slots},
};

/// Connections at once: root's tools, one at a time in practice.
pub const MAX_CONNECTIONS: usize = 16;
/// A request head must arrive within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(3);

const LIMITS: Limits = Limits {
    max: MAX_CONNECTIONS,
    header_timeout: HEADER_TIMEOUT,
    keep_alive: true,
};

/// Who is on the other end of a control connection, from its peer credentials.
#[derive(Clone, Debug)]
pub struct Operator {
    pub uid: u32,
    /// `None` when the kernel could not say (a peer in a PID namespace this one cannot see).
    pub pid: Option<i32>,
    /// The process's command name (`/proc/<pid>/comm`), when it can be read.
    pub command: Option<String>,
}

impl Operator {
    fn of(stream: &UnixStream) -> io::Result<Self> {
        let cred = stream.peer_cred()?;
        let command = cred.pid().and_then(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .ok()
                .map(|c| c.trim_end().to_string())
        });
        Ok(Self {
            uid: cred.uid(),
            pid: cred.pid(),
            command,
        })
    }
}

/// Whether `uid` may use the control socket: root, or the user the daemon runs as (who
/// could change the daemon's state through the process anyway).
pub fn allowed(uid: u32, daemon_uid: u32) -> bool {
    uid == 0 || uid == daemon_uid
}

/// The bound socket, not yet served.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    /// The socket file's inode: at exit the file is removed only if it is still ours (a
    /// daemon that replaced this one has bound its own there).
    inode: u64,
}

impl ControlSocket {
    /// Binds the socket, replacing an earlier run's file: a daemon that still answers there
    /// (the one this daemon replaces, in a rolling update) keeps the connections it has.
    pub fn bind(path: &Path) -> Result<Self, AdminError> {
        let failed = |source| AdminError::Control {
            path: path.into(),
            source,
        };
        if let Some(dir) = path.parent() {
            let created = !dir.exists();
            std::fs::create_dir_all(dir).map_err(failed)?;
            if created {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(failed)?;
            }
        }
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                info!(socket = %path.display(), "another daemon serves the control socket: taking it over");
            }
            let _ = std::fs::remove_file(path);
        }
        let listener = UnixListener::bind(path).map_err(failed)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(failed)?;
        let inode = std::fs::metadata(path).map_err(failed)?.ino();
        Ok(Self {
            listener,
            path: path.into(),
            inode,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers until the task is aborted; the socket file goes with it, if still ours.
    pub async fn serve(self, state: Arc<State>) {
        info!(socket = %self.path.display(), "control socket listening");
        let daemon_uid = nix::unistd::geteuid().as_raw();
        let slots = Slots::new(LIMITS.max);
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let slot = match slots.admit() {
                Some(Admitted::Free(slot) | Admitted::InPlaceOfAnother(slot)) => slot,
                None => {
                    debug!(
                        limit = LIMITS.max,
                        "control socket: connection closed, every one open is being answered"
                    );
                    continue;
                }
            };
            let operator = match Operator::of(&stream) {
                Ok(operator) => operator,
                Err(e) => {
                    warn!(error = %e, "control socket: the peer's credentials cannot be read; connection closed");
                    continue;
                }
            };
            let state = state.clone();
            tokio::spawn(async move {
                let ended = if allowed(operator.uid, daemon_uid) {
                    let access = Arc::new(Access::Operator(operator));
                    serving::serve(stream, slot, LIMITS, move |request| {
                        let state = state.clone();
                        let access = access.clone();
                        async move { server::route(&state, &access, request).await }
                    })
                    .await
                } else {
                    warn!(
                        uid = operator.uid,
                        pid = operator.pid,
                        command = operator.command.as_deref(),
                        "control socket: a connection from a user other than root refused"
                    );
                    let uid = operator.uid;
                    serving::serve(stream, slot, LIMITS, move |_request| async move {
                        plain(
                            StatusCode::FORBIDDEN,
                            format!(
                                "only root may use the control socket; this connection is from \
                                 uid {uid}\n"
                            ),
                        )
                    })
                    .await
                };
                match ended {
                    Ended::Error(e) => {
                        debug!(error = %e, "control socket: connection ended with an error")
                    }
                    Ended::Io(e) => debug!(error = %e, "control socket: connection failed"),
                    Ended::Silent | Ended::Done | Ended::MadeRoom => {}
                }
            });
            tokio::task::yield_now().await;
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let still_ours = std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.inode);
        if still_ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_the_daemons_own_user_are_answered_and_no_one_else() {
        assert!(allowed(0, 0));
        assert!(allowed(0, 1000));
        assert!(allowed(1000, 1000));
        assert!(!allowed(65534, 0));
        assert!(!allowed(1001, 1000));
    }
}
