//! The runtime's own size, read at each scrape: `tunnel_runtime_alive_tasks`, the tasks
//! the daemon holds (one per accept loop, connection, stream, pod listener...). A number
//! that only grows under churn is a leak; the pod churn test reads it.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::gauge::ConstGauge,
};

#[derive(Debug, Default)]
pub struct RuntimeCollector;

impl Collector for RuntimeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Scraped from a task of the runtime; outside one (a test encoding by hand) there
        // is nothing to say.
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return Ok(());
        };
        let tasks =
            ConstGauge::new(i64::try_from(handle.metrics().num_alive_tasks()).unwrap_or(i64::MAX));
        let metric = encoder.encode_descriptor(
            "runtime_alive_tasks",
            "Tasks alive in the daemon's runtime at this scrape",
            None,
            tasks.metric_type(),
        )?;
        tasks.encode(metric)
    }
}
