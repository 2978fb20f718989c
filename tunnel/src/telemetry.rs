//! What a running daemon says about itself, one [`Telemetry`] built once at start and shared
//! by every part that counts something: Prometheus metrics ([`Metrics`], served at
//! `/metrics` by the admin API), the log filter it can change at run time (`/logging`), the
//! tunnelled connections open now ([`Connections`], `/connections`), and the last refused
//! handshakes and identities with their rate-limited log stream ([`AuthFailures`],
//! `/auth_failures`).

pub mod auth;
pub mod buffers;
pub mod capture;
pub mod certificates;
pub mod connections;
pub mod metrics;
pub mod runtime;

use std::sync::Arc;

pub use auth::{AuthFailure, AuthFailures};
pub use connections::{ConnectionInfo, ConnectionView, Connections, Tracked};
pub use metrics::{Direction, EnrolFailure, FailReason, PodMetrics, ProxyMetrics};
use prometheus_client::{encoding::text::encode, registry::Registry};

use crate::logging;

pub struct Telemetry {
    pub metrics: Metrics,
    pub logging: Arc<logging::Control>,
    /// The tunnelled connections open now (`/connections`).
    pub connections: Arc<Connections>,
    /// The last refused handshakes and identities (and their rate-limited log stream).
    pub auth_failures: AuthFailures,
}

impl Telemetry {
    pub fn new(logging: Arc<logging::Control>) -> Self {
        Self {
            metrics: Metrics::new(),
            logging,
            connections: Connections::new(),
            auth_failures: AuthFailures::default(),
        }
    }

    /// Telemetry whose log filter changes nothing (tools and tests: the process's logger
    /// is not ours to change).
    pub fn detached() -> Arc<Self> {
        Arc::new(Self::new(Arc::new(logging::Control::detached())))
    }
}

/// Every metric family, registered once.
pub struct Metrics {
    registry: Registry,
    /// The data plane's families.
    pub proxy: ProxyMetrics,
    /// The certificates' expiries and reloads, read at each scrape.
    pub certificates: Arc<certificates::CertificateCollector>,
    /// The buffer budget, read at each scrape.
    pub buffers: Arc<buffers::BufferCollector>,
    /// The capture maps' fill, counted in the background.
    pub capture: Arc<capture::CaptureCollector>,
    /// Pods enrolled (or not) from what already runs on the node.
    pub pods: PodMetrics,
    /// The data-plane runtimes' tasks, read at each scrape.
    pub runtimes: Arc<runtime::RuntimeCollector>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tunnel");
        let proxy = ProxyMetrics::new();
        proxy.register(&mut registry);
        let pods = PodMetrics::default();
        pods.register(&mut registry);
        let certificates = certificates::CertificateCollector::new();
        registry.register_collector(Box::new(certificates.clone()));
        let buffers = buffers::BufferCollector::new();
        registry.register_collector(Box::new(buffers.clone()));
        let capture = capture::CaptureCollector::new();
        registry.register_collector(Box::new(capture.clone()));
        let runtimes = runtime::RuntimeCollector::new();
        registry.register_collector(Box::new(runtimes.clone()));
        Self {
            registry,
            proxy,
            certificates,
            buffers,
            capture,
            pods,
            runtimes,
        }
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
