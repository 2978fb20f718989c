//! What the daemon tells the service manager that started it (sd_notify(3)): systemd sets
//! `NOTIFY_SOCKET` for a `Type=notify` unit, and without it every function here does nothing.
//!
//! - `READY=1` when startup is complete: every listener bound, the capture attached, the
//!   certificates loaded and, with `[pods]`, the recorded pods served again and the cluster
//!   view listed; the moment `/healthz/ready` starts answering 200.
//! - `RELOADING=1` with `MONOTONIC_USEC` when a SIGHUP reload begins, `READY=1` when it ends.
//! - `STOPPING=1` when the drain begins.
//! - `WATCHDOG=1` every half of `WATCHDOG_USEC` ([`watchdog`]), from a task on the daemon's
//!   own runtime: a runtime that stops polling its tasks (a blocked thread, a busy loop) stops
//!   the pings too, and systemd restarts the daemon.
//! - `MAINPID=` from a daemon that took over from another one during an upgrade
//!   ([`became_main`]; `app/upgrade` says how).
//!
//! Sent with the `sd-notify` crate (one datagram per call). A message that cannot be sent is
//! logged, never fatal: the daemon serves the same with or without a service manager.

use std::{
    io::Read as _,
    os::fd::AsFd as _,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use sd_notify::NotifyState;
use tracing::{debug, warn};

/// How long [`became_main`] waits for the service manager to have read its message.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(5);

/// Startup is complete: the daemon serves.
pub fn ready() {
    send(&[
        NotifyState::Ready,
        NotifyState::Status("ready: listeners bound, capture attached"),
    ]);
}

/// A reload (SIGHUP) begins; [`reloaded`] says when it has ended.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[
            NotifyState::Reloading,
            now,
            NotifyState::Status("reloading the policy and certificates"),
        ]),
        // systemd wants the timestamp with RELOADING=1 (it tells this reload from an older
        // one); without a clock, say nothing rather than half.
        Err(e) => {
            warn!(error = %e, "cannot read the monotonic clock: the reload is not announced to the service manager")
        }
    }
}

/// The reload has ended (whether or not what it read was taken).
pub fn reloaded() {
    send(&[NotifyState::Ready, NotifyState::Status("ready")]);
}

/// The drain begins: no new connections.
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("draining: no new connections"),
    ]);
}

/// Pings the watchdog at half its period for as long as the runtime polls this future;
/// `None` when the service manager set no watchdog (no `WATCHDOG_USEC`, or one meant for
/// another process: `WATCHDOG_PID`). Spawn it on the daemon's runtime, not on a thread of its
/// own: the pings prove that the runtime runs its tasks. (With `worker_threads` > 1 the pings
/// prove that at least one worker does.)
pub fn watchdog() -> Option<impl Future<Output = ()> + Send + 'static> {
    let period = sd_notify::watchdog_enabled()?;
    let interval = period / 2;
    debug!(?period, "pinging the service manager's watchdog");
    Some(async move {
        let mut ticks = tokio::time::interval(interval);
        // After a stall, one ping, not a burst that would hide it.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    })
}

/// This process is now the service's main process (it took over from `predecessor`'s
/// daemon) and ready. Returns once the service manager has read that message (a
/// `BARRIER=1`, as sd_notify_barrier(3) sends it) or after a few seconds: the caller stops
/// the predecessor next, and systemd must not take that exit for the service's end.
pub async fn became_main(predecessor: u32) {
    send(&[
        NotifyState::MainPid(std::process::id()),
        NotifyState::Ready,
        NotifyState::Status("ready: took over from the previous daemon"),
    ]);
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let barrier = tokio::task::spawn_blocking(barrier);
    match tokio::time::timeout(BARRIER_TIMEOUT, barrier).await {
        Ok(Ok(Ok(()))) => debug!(
            predecessor,
            "the service manager knows the new main process"
        ),
        Ok(Ok(Err(e))) => {
            warn!(error = %e, "cannot confirm that the service manager read MAINPID=")
        }
        Ok(Err(e)) => warn!(error = %e, "cannot confirm that the service manager read MAINPID="),
        Err(_) => warn!(
            timeout = ?BARRIER_TIMEOUT,
            "the service manager did not confirm MAINPID= in time"
        ),
    }
}

/// Sends `BARRIER=1` with the write end of a pipe and waits until the service manager closes
/// it, which it does once every message sent before has been processed.
fn barrier() -> std::io::Result<()> {
    let (mut reader, writer) = std::io::pipe()?;
    sd_notify::notify_with_fds(&[NotifyState::Custom("BARRIER=1")], &[writer.as_fd()])?;
    drop(writer);
    // EOF once every copy of the write end is closed; nothing is ever written.
    let mut byte = [0u8; 1];
    while reader.read(&mut byte)? != 0 {}
    Ok(())
}

/// Whether a failure to notify was logged already (once is enough: the socket is the same).
static WARNED: AtomicBool = AtomicBool::new(false);

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states)
        && !WARNED.swap(true, Ordering::Relaxed)
    {
        warn!(error = %e, socket = ?std::env::var_os("NOTIFY_SOCKET"), "cannot notify the service manager");
    }
}

#[cfg(test)]
mod tests;
