//! The admin API: a plain HTTP/1.1 server on `listen.admin` (loopback unless
//! `listen.admin_allow_remote`), for operators, probes and `tunnel status`. No
//! authentication: whoever reaches the port may read the config and the connections and
//! change the log filter, which is why config load refuses a non-loopback address unless
//! told otherwise.
//!
//! | endpoint | what |
//! |---|---|
//! | `GET /healthz/ready` | 200 `ready`, or 503 with why not ([`readiness`]) |
//! | `GET /metrics` | every metric family, OpenMetrics text |
//! | `GET /config_dump` | the effective config and the certificates in force, JSON ([`config_dump`]); never a key |
//! | `GET /connections` | the tunnelled connections open now, JSON |
//! | `GET /auth_failures` | the last refused handshakes and identities (at most 20, oldest first), JSON |
//! | `GET or POST /logging[?level=...]` | the log filter in force; with `level`, replaces it first |
//! | `GET /debug/capture` | programs, links and maps of the capture, JSON ([`capture`]) |
//!
//! Bound by `Daemon::start` with the other listeners (a port taken stops startup), served
//! by `Daemon::run` from the moment the daemon is ready, kept answering through the drain
//! (ready is then 503 `draining`), stopped with the daemon.

mod capture;
pub mod client;
mod config_dump;
pub mod readiness;
mod server;
#[cfg(test)]
pub(crate) mod tests;

use std::sync::Arc;

pub use readiness::Readiness;
pub use server::{AdminError, AdminListener};

use crate::{
    config::Config, credentials::Credentials, ebpf::CaptureState, policy::LivePolicy,
    telemetry::Telemetry,
};

/// The endpoints, as a 404 lists them.
pub const ENDPOINTS: &str = "/healthz/ready /metrics /config_dump /connections /auth_failures /logging[?level=...] \
     /debug/capture";

/// The content type of `/metrics`.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the admin API reads (and, for the log filter, changes).
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
