//! What a running daemon says about itself: Prometheus metrics ([`Metrics`], served at
//! `/metrics` by the admin API) and the log filter it can change at run time. Built once at
//! start and shared by every part that counts something.

pub mod connections;

use std::sync::Arc;

pub use connections::{ConnectionInfo, ConnectionView, Connections, Tracked};
use prometheus_client::{encoding::text::encode, registry::Registry};

use crate::logging;

pub struct Telemetry {
    pub metrics: Metrics,
    pub logging: Arc<logging::Control>,
    /// The tunnelled connections open now (`/connections`).
    pub connections: Arc<Connections>,
}

impl Telemetry {
    pub fn new(logging: Arc<logging::Control>) -> Self {
        Self {
            metrics: Metrics::new(),
            logging,
            connections: Connections::new(),
        }
    }
}

/// Every metric family, registered once.
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::with_prefix("tunnel");
        Self { registry }
    }

    /// The OpenMetrics text of every family, as `/metrics` serves it.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
