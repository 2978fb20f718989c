//! The admin API, on three listeners:
//!
//! - the admin port (`listen.admin`, `127.0.0.1:15000`; loopback unless
//!   `listen.admin_allow_remote`): HTTP/1.1 for operators, scrapers and `tunnel status`.
//!   No authentication, so it only reads: any local process reaches it.
//! - the health port (`listen.health`, `127.0.0.1:15021`): `/healthz/ready` alone, for the
//!   kubelet's probes ([`health`]).
//! - the control socket (`listen.control`, `/run/tunnel/control.sock`): the same API over a
//!   Unix socket only root may use, and the only place where something can be changed
//!   (the log filter, [`logging`]); `tunnel log-level` is its client ([`control`]).
//!
//! Each listener holds a bounded number of connections, each with a deadline for its
//! request head, and a new connection takes the place of the oldest idle one ([`serving`]),
//! so slow clients cannot starve the probes.
//!
//! | endpoint | what |
//! |---|---|
//! | `GET /healthz/ready` | 200 `ready`, or 503 with why not ([`readiness`]) |
//! | `GET /metrics` | every metric family, OpenMetrics text |
//! | `GET /config_dump` | the effective config and the certificates in force, JSON ([`config_dump`]); never a key |
//! | `GET /connections` | the tunnelled connections open now, JSON |
//! | `GET /auth_failures` | the last refused handshakes and identities (at most 20, oldest first), JSON |
//! | `GET /logging` | the log filter in force; `POST /logging?level=...` replaces it (control socket only) |
//! | `GET /debug/capture` | programs, links and maps of the capture, JSON ([`capture`]) |
//!
//! Bound by `Daemon::start` with the other listeners (a port taken stops startup), served
//! by `Daemon::run` from the moment the daemon is ready, kept answering through the drain
//! (ready is then 503 `draining`), stopped with the daemon.

mod capture;
pub mod client;
mod config_dump;
pub mod control;
pub mod health;
mod logging;
pub mod readiness;
mod server;
mod serving;
#[cfg(test)]
pub(crate) mod tests;

use std::sync::Arc;

pub use control::ControlSocket;
pub use health::HealthListener;
pub use readiness::Readiness;
pub use server::{AdminError, AdminListener};

use crate::{
    config::Config, credentials::Credentials, ebpf::CaptureState, policy::LivePolicy,
    telemetry::Telemetry,
};

/// The endpoints, as a 404 lists them.
pub const ENDPOINTS: &str =
    "/healthz/ready /metrics /config_dump /connections /auth_failures /logging /debug/capture";

/// The content type of `/metrics`.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the admin API reads (and, through the control socket, the log filter it changes).
pub struct State {
    pub config: Arc<Config>,
    pub telemetry: Arc<Telemetry>,
    pub credentials: Arc<Credentials>,
    /// The policy in force (reloads replace it).
    pub policy: Arc<LivePolicy>,
    /// `None` when nothing was installed (tests).
    pub capture: Option<Arc<CaptureState>>,
    pub readiness: Arc<Readiness>,
}
