//! The runtime's own size, read at each scrape: `tunnel_runtime_alive_tasks`, the tasks
//! the daemon holds (one per accept loop, connection, stream, pod listener...). A number
//! that only grows under churn is a leak; the pod churn test reads it.

use std::sync::{Arc, Mutex};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::gauge::ConstGauge,
};
use tokio::runtime::Handle;

/// Counts the tasks of the runtime that scrapes and of every other data-plane runtime
/// (`[runtime] threads`), which register as they start.
#[derive(Debug, Default)]
pub struct RuntimeCollector {
    others: Mutex<Vec<Handle>>,
}

impl RuntimeCollector {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Counts `runtime`'s tasks too from now on.
    pub fn follow(&self, runtime: Handle) {
        self.others
            .lock()
            .expect("runtime handles lock poisoned")
            .push(runtime);
    }
}

impl Collector for RuntimeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Scraped from a task of the runtime; outside one (a test encoding by hand) there
        // is nothing to say.
        let Ok(handle) = Handle::try_current() else {
            return Ok(());
        };
        let others = self.others.lock().expect("runtime handles lock poisoned");
        let alive = std::iter::once(&handle)
            .chain(others.iter())
            .map(|runtime| runtime.metrics().num_alive_tasks())
            .sum::<usize>();
        let tasks = ConstGauge::new(i64::try_from(alive).unwrap_or(i64::MAX));
        let metric = encoder.encode_descriptor(
            "runtime_alive_tasks",
            "Tasks alive in the daemon's runtimes at this scrape",
            None,
            tasks.metric_type(),
        )?;
        tasks.encode(metric)
    }
}
