//! The capture maps' fill as metrics: `tunnel_capture_map_entries{map}` and
//! `tunnel_capture_map_capacity{map}`. Counting a map walks its keys (one syscall per entry,
//! up to 64k for the tuple map), so a background task counts every [`REFRESH`] off the async
//! threads and a scrape reads the last count; it never blocks the data path.
//!
//! The tuple map is an LRU hash: when it is full the kernel evicts its oldest entries rather
//! than failing an insert, so there is no "map full" event to count; entries reaching the
//! capacity is that signal (an evicted entry is a captured connection whose original
//! destination is lost, refused by the outbound side as not captured).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _},
    metrics::{family::Family, gauge::Gauge},
};

use crate::ebpf::CaptureState;

/// How often the maps are counted.
pub const REFRESH: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapLabels {
    map: &'static str,
}

/// One map at the last count.
#[derive(Clone, Debug)]
struct Fill {
    map: &'static str,
    entries: Option<u64>,
    capacity: Option<u32>,
}

#[derive(Debug, Default)]
pub struct CaptureCollector {
    last: Mutex<Vec<Fill>>,
}

impl CaptureCollector {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Counts `capture`'s maps now and every [`REFRESH`], until the daemon stops.
    pub async fn refresh_forever(self: Arc<Self>, capture: Arc<CaptureState>) {
        loop {
            let counting = capture.clone();
            if let Ok(maps) = tokio::task::spawn_blocking(move || counting.maps()).await {
                *self.last.lock().expect("capture metrics lock poisoned") = maps
                    .into_iter()
                    .map(|m| Fill {
                        map: m.name,
                        entries: m.entries,
                        capacity: m.max_entries,
                    })
                    .collect();
            }
            tokio::time::sleep(REFRESH).await;
        }
    }
}

impl Collector for CaptureCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let last = self
            .last
            .lock()
            .expect("capture metrics lock poisoned")
            .clone();
        if last.is_empty() {
            return Ok(());
        }
        let entries = Family::<MapLabels, Gauge>::default();
        let capacity = Family::<MapLabels, Gauge>::default();
        for Fill {
            map,
            entries: count,
            capacity: max,
        } in last
        {
            if let Some(count) = count {
                entries
                    .get_or_create(&MapLabels { map })
                    .set(i64::try_from(count).unwrap_or(i64::MAX));
            }
            if let Some(max) = max {
                capacity
                    .get_or_create(&MapLabels { map })
                    .set(i64::from(max));
            }
        }
        let metric = encoder.encode_descriptor(
            "capture_map_entries",
            "Entries in each capture map at the last count (every 10 s); the tuple map at its capacity evicts its oldest entries",
            None,
            entries.metric_type(),
        )?;
        entries.encode(metric)?;
        let metric = encoder.encode_descriptor(
            "capture_map_capacity",
            "Each capture map's max_entries",
            None,
            capacity.metric_type(),
        )?;
        capacity.encode(metric)
    }
}
