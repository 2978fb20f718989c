//! An upgrade without a gap, for a daemon that a service manager runs (or one run by hand):
//! on SIGUSR2 the daemon starts its own program again, from the path it was started from
//! (where a package has just put the new binary), with the same arguments, beside itself.
//! The new daemon binds beside the old one (`SO_REUSEPORT`), takes over the pinned capture
//! and the pod API socket as any overlapping start does (ARCHITECTURE: capture lifecycle),
//! and once it is ready it tells the service manager that it is now the service's main
//! process (`MAINPID=`), then stops its predecessor with SIGTERM, which drains. Both serve
//! until then. If the new daemon exits before that (a bad config, a binary that does not
//! start), the old one says so and keeps serving.
//!
//! The new daemon is started detached (`sh -c '"$@" &'`, the shell exiting at once), so that
//! the service manager adopts it: systemd treats a main process that is not its own child as
//! "alien", which it does not wait for at a stop (it would SIGKILL the daemon at once instead
//! of letting it drain). Everything else the unit gave the old daemon is inherited: user,
//! capabilities, cgroup (the one the capture exempts), sandbox, system call filter,
//! `NOTIFY_SOCKET` and the watchdog's period (not `WATCHDOG_PID`, which names the old
//! process). nginx upgrades its binary the same way.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use nix::{
    errno::Errno,
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tracing::{error, info, warn};

use crate::systemd;

/// How often a starting successor is checked for having exited.
const POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// The successor started and not yet exited (0: none).
static SUCCESSOR: AtomicU32 = AtomicU32::new(0);

/// Whether a successor is starting or has taken over: a SIGTERM is then its doing, and this
/// daemon must not tell the service manager that the service stops.
pub fn handing_over() -> bool {
    SUCCESSOR.load(Ordering::Relaxed) != 0
}

/// Set in the new daemon's environment: the pid of the daemon it takes over from.
pub const TAKEOVER_FROM: &str = "TUNNEL_TAKEOVER_FROM";

/// The daemon this process was started to take over from, if it was: the pid named by
/// [`TAKEOVER_FROM`], if that process is in this process's cgroup (the same service; a
/// variable inherited by anything else names no predecessor of its own).
pub fn predecessor() -> Option<u32> {
    let pid: u32 = std::env::var(TAKEOVER_FROM).ok()?.parse().ok()?;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok();
    let theirs = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok();
    same_service(pid, own.as_deref(), theirs.as_deref()).then_some(pid)
}

fn same_service(pid: u32, own: Option<&str>, theirs: Option<&str>) -> bool {
    pid != std::process::id() && own.is_some() && own == theirs
}

/// Ready, as the service's main process: after an upgrade, the predecessor is stopped once
/// the service manager knows this process is the main one.
pub async fn announce_ready(predecessor: Option<u32>) {
    let Some(pid) = predecessor else {
        return systemd::ready();
    };
    systemd::became_main(pid).await;
    info!(
        predecessor = pid,
        "took over from the previous daemon; stopping it (it drains)"
    );
    let Ok(raw) = i32::try_from(pid) else { return };
    if let Err(e) = kill(Pid::from_raw(raw), Signal::SIGTERM) {
        warn!(predecessor = pid, error = %e, "cannot stop the previous daemon");
    }
}

/// Listens for SIGUSR2 from now on (so that a request right after readiness is not the
/// signal's default action, which ends the process) and starts a successor on each, one at a
/// time, until the daemon stops.
pub fn on_sigusr2() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let requests = signal(SignalKind::user_defined2());
    async move {
        let mut requests = match requests {
            Ok(requests) => requests,
            Err(e) => {
                return warn!(error = %e, "cannot install a SIGUSR2 handler: upgrades in place are off");
            }
        };
        while requests.recv().await.is_some() {
            let pid = match start_successor() {
                Ok(pid) => pid,
                Err(e) => {
                    error!(error = %e, "upgrade: cannot start the new daemon; this one keeps serving");
                    continue;
                }
            };
            SUCCESSOR.store(pid, Ordering::Relaxed);
            info!(
                successor = pid,
                "upgrade: started the new daemon beside this one; it stops this one once ready"
            );
            // If this daemon is still running when the successor ends, the successor never
            // took over (it says why in its own lines).
            exited(pid).await;
            SUCCESSOR.store(0, Ordering::Relaxed);
            error!(
                successor = pid,
                "upgrade failed: the new daemon exited before taking over; this one keeps serving"
            );
        }
    }
}

/// Resolves once process `pid` (not a child of this one) is gone.
async fn exited(pid: u32) {
    let Ok(raw) = i32::try_from(pid) else { return };
    let mut ticks = tokio::time::interval(POLL);
    loop {
        ticks.tick().await;
        if kill(Pid::from_raw(raw), None) == Err(Errno::ESRCH) {
            return;
        }
    }
}

/// This program again, from the path it was started from, with the same arguments, detached;
/// returns its pid.
fn start_successor() -> std::io::Result<u32> {
    let program = own_path()?;
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let shell = Command::new("/bin/sh")
        // Its stdout goes where this daemon's stderr goes (the journal); the shell's own
        // stdout carries the pid back.
        .args(["-c", r#""$@" >&2 & echo $!"#, "sh"])
        .arg(&program)
        .args(&args)
        .env(TAKEOVER_FROM, std::process::id().to_string())
        // The watchdog's pid is this process's; the successor pings once it is the main one.
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| std::io::Error::new(e.kind(), format!("/bin/sh: {e}")))?;
    started_pid(&program, &shell.stdout)
}

fn started_pid(program: &Path, stdout: &[u8]) -> std::io::Result<u32> {
    String::from_utf8_lossy(stdout).trim().parse().map_err(|_| {
        std::io::Error::other(format!(
            "{}: no pid from the shell that started it ({:?})",
            program.display(),
            String::from_utf8_lossy(stdout)
        ))
    })
}

/// The path this process was started from. The kernel names a replaced file
/// `<path> (deleted)`: the path itself now names the new binary, which is the point.
fn own_path() -> std::io::Result<PathBuf> {
    std::fs::read_link("/proc/self/exe").map(undeleted)
}

fn undeleted(exe: PathBuf) -> PathBuf {
    match exe
        .as_os_str()
        .to_str()
        .and_then(|p| p.strip_suffix(" (deleted)"))
    {
        Some(path) => PathBuf::from(path),
        None => exe,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_process_of_the_same_service_is_a_predecessor() {
        let service = "0::/system.slice/tunnel.service\n";
        assert!(same_service(4242, Some(service), Some(service)));
        // Inherited by a process elsewhere, gone, or this very process.
        assert!(!same_service(4242, Some(service), Some("0::/user.slice\n")));
        assert!(!same_service(4242, Some(service), None));
        assert!(!same_service(
            std::process::id(),
            Some(service),
            Some(service)
        ));
    }

    #[test]
    fn a_replaced_binary_is_started_from_its_path() {
        let replaced = PathBuf::from("/usr/bin/tunnel (deleted)");
        assert_eq!(undeleted(replaced), PathBuf::from("/usr/bin/tunnel"));
        let current = PathBuf::from("/usr/bin/tunnel");
        assert_eq!(undeleted(current.clone()), current);
        assert!(own_path().unwrap().is_absolute());
    }

    #[test]
    fn the_shell_says_the_detached_pid() {
        let program = Path::new("/usr/bin/tunnel");
        assert_eq!(started_pid(program, b"4242\n").unwrap(), 4242);
        let error = started_pid(program, b"").unwrap_err().to_string();
        assert!(error.contains("no pid"), "{error}");
    }
}
