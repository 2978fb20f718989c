//! Certificate metrics, read from the credentials at each scrape (so they follow every
//! snapshot a reload or a renewal publishes): each identity's expiry, and how many reloads
//! and renewals took or failed.

use std::sync::{Arc, OnceLock, Weak};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
};

use crate::credentials::{Credentials, Owner};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExpiryLabels {
    /// `node`, or the workload's name.
    owner: String,
    principal: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// The credentials to report on, once the daemon has loaded them.
#[derive(Default)]
pub struct CertificateCollector {
    credentials: OnceLock<Weak<Credentials>>,
}

impl CertificateCollector {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Reports on `credentials` from now on (the first call wins).
    pub fn follow(&self, credentials: &Arc<Credentials>) {
        let _ = self.credentials.set(Arc::downgrade(credentials));
    }
}

impl std::fmt::Debug for CertificateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateCollector")
            .finish_non_exhaustive()
    }
}

impl Collector for CertificateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(credentials) = self.credentials.get().and_then(Weak::upgrade) else {
            return Ok(());
        };
        let expiry = Family::<ExpiryLabels, Gauge>::default();
        for (owner, id, not_after) in credentials.expiries() {
            let owner = match owner {
                Owner::Node => "node".to_string(),
                Owner::Workload(name) => name,
            };
            expiry
                .get_or_create(&ExpiryLabels {
                    owner,
                    principal: id.to_string(),
                })
                .set(not_after);
        }
        let metric = encoder.encode_descriptor(
            "certificate_expiry_timestamp_seconds",
            "When each certificate in force expires (unix seconds), by owner (node or workload) and identity",
            None,
            expiry.metric_type(),
        )?;
        expiry.encode(metric)?;

        let (ok, failed) = credentials.reload_counts();
        let reloads = Family::<OutcomeLabels, Counter>::default();
        reloads
            .get_or_create(&OutcomeLabels { outcome: "ok" })
            .inc_by(ok);
        reloads
            .get_or_create(&OutcomeLabels { outcome: "failed" })
            .inc_by(failed);
        let metric = encoder.encode_descriptor(
            "certificate_reloads",
            "Certificate and trust reloads and renewals, by outcome (a failed one keeps the material in force)",
            None,
            reloads.metric_type(),
        )?;
        reloads.encode(metric)
    }
}
