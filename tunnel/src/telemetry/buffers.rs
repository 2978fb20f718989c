//! The buffer budget (`proxy::budget`) as metrics, read at each scrape:
//! `tunnel_buffer_budget_bytes` (the limit), `tunnel_buffered_bytes{held_by}` (reads in
//! flight, receive windows), `tunnel_buffer_budget_paused_total` (reads that waited because
//! the budget was spent), `tunnel_buffer_budget_reclaimed_total` (streams reset for holding
//! bytes their peer did not take while it was spent) and
//! `tunnel_buffer_windows_narrowed_total` (connections given a smaller receive window than
//! the largest).

use std::sync::{Arc, OnceLock};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _},
    metrics::{counter::ConstCounter, family::Family, gauge::ConstGauge, gauge::Gauge},
};

/// What the collector reads of the buffer budget at each scrape (`proxy::budget`
/// implements it: the data plane depends on telemetry, not the other way round).
pub trait BufferFigures: Send + Sync + std::fmt::Debug {
    fn limit(&self) -> u64;
    /// Held by reads and windows together.
    fn in_use(&self) -> u64;
    fn in_windows(&self) -> u64;
    fn paused(&self) -> u64;
    fn reclaimed(&self) -> u64;
    fn narrowed(&self) -> u64;
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HeldBy {
    held_by: &'static str,
}

#[derive(Debug, Default)]
pub struct BufferCollector {
    budget: OnceLock<Arc<dyn BufferFigures>>,
}

impl BufferCollector {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Reports `budget` from now on (the daemon has one; a second call is ignored).
    pub fn follow(&self, budget: Arc<dyn BufferFigures>) {
        let _ = self.budget.set(budget);
    }
}

fn gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Collector for BufferCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(budget) = self.budget.get() else {
            return Ok(());
        };
        let limit = ConstGauge::new(gauge(budget.limit()));
        let metric = encoder.encode_descriptor(
            "buffer_budget_bytes",
            "The buffer budget: what the daemon may buffer for others ([limits] max_buffered_bytes)",
            None,
            limit.metric_type(),
        )?;
        limit.encode(metric)?;

        let windows = budget.in_windows();
        let held = Family::<HeldBy, Gauge>::default();
        held.get_or_create(&HeldBy { held_by: "reads" })
            .set(gauge(budget.in_use().saturating_sub(windows)));
        held.get_or_create(&HeldBy { held_by: "windows" })
            .set(gauge(windows));
        let metric = encoder.encode_descriptor(
            "buffered_bytes",
            "Bytes held against the buffer budget: reads on their way to a peer (reads), and the receive windows (with TLS write buffers) of open connections (windows)",
            None,
            held.metric_type(),
        )?;
        held.encode(metric)?;

        let paused = ConstCounter::new(budget.paused());
        let metric = encoder.encode_descriptor(
            "buffer_budget_paused",
            "Reads from a sender that waited because the buffer budget was spent (back-pressure)",
            None,
            paused.metric_type(),
        )?;
        paused.encode(metric)?;

        let reclaimed = ConstCounter::new(budget.reclaimed());
        let metric = encoder.encode_descriptor(
            "buffer_budget_reclaimed",
            "Streams reset because their peer took none of what they held for 5 s while the buffer budget was spent",
            None,
            reclaimed.metric_type(),
        )?;
        reclaimed.encode(metric)?;

        let narrowed = ConstCounter::new(budget.narrowed());
        let metric = encoder.encode_descriptor(
            "buffer_windows_narrowed",
            "Connections given a smaller receive window than the largest, as the budget's share for windows was taken",
            None,
            narrowed.metric_type(),
        )?;
        narrowed.encode(metric)
    }
}
