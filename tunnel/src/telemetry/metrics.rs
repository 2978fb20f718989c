//! The metric families, named and labelled after Istio's TCP metrics (with the `tunnel_`
//! prefix instead of `istio_`), so dashboards written for those adapt by renaming.
//!
//! Cardinality is bounded by the config: labels are identities, workload names, rule
//! origins and fixed reason sets, never addresses or per-connection values. The hot path
//! resolves a connection's labelled counters once, when it opens ([`ConnectionMetrics`]),
//! and adds its byte totals once, when it closes. Label values are shared text ([`Label`]),
//! made once per workload, peer or connection, so a connection's labels cost no copy of
//! them, and its four counters are found with one lookup of the label set.

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, RwLock},
};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// Which way a connection goes, as Istio's `reporter` would say it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Direction {
    Outbound,
    Inbound,
}

impl EncodeLabelValue for Direction {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        self.as_str().encode(encoder)
    }
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Outbound => "outbound",
            Self::Inbound => "inbound",
        }
    }
}

/// A label value: text made once and shared by every connection that carries it.
pub type Label = Arc<str>;

/// Istio's TCP labels. Principals are SPIFFE IDs (`unknown` where there is none).
/// `destination_service` (`<namespace>/<name>`) is set on the outbound side, from the
/// daemon's own view of the cluster's Services; inbound it stays `unknown`, since the only
/// source there is the caller's word, which must not choose label values.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    pub direction: Direction,
    pub source_principal: Label,
    pub source_workload: Label,
    pub destination_principal: Label,
    pub destination_workload: Label,
    pub destination_service: Label,
}

/// What a missing label value says.
pub const UNKNOWN: &str = "unknown";

/// [`UNKNOWN`] as a [`Label`].
pub fn unknown() -> Label {
    static LABEL: LazyLock<Label> = LazyLock::new(|| UNKNOWN.into());
    LABEL.clone()
}

/// Why a connection was not carried: a fixed set, so the label stays bounded.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum FailReason {
    policy_denied,
    tls_handshake_failed,
    /// Inbound: the TLS handshake completed (counted `ok`), but no stream came: the peer
    /// closed, its HTTP/2 preface failed or never came, or it opened no stream before the
    /// handshake timeout.
    no_stream,
    peer_identity_mismatch,
    revoked,
    upstream_refused,
    /// The caller belongs to no workload.
    no_identity,
    timeout,
    peer_unreachable,
    not_deliverable,
    plaintext_refused,
    /// A cap refused it.
    limit,
    other,
}

impl FailReason {
    /// A refused handshake by the kind of its TLS error.
    pub fn of_tls(kind: crate::tls::RefusalKind) -> Self {
        match kind {
            crate::tls::RefusalKind::Revoked => Self::revoked,
            crate::tls::RefusalKind::Identity => Self::peer_identity_mismatch,
            crate::tls::RefusalKind::Other => Self::tls_handshake_failed,
        }
    }
}

impl FailReason {
    /// An inbound refusal by its code (`hbone::REFUSAL_HEADER`'s, which the caller's daemon
    /// reads back from the answer).
    pub fn of_refusal_code(code: &str) -> Self {
        match code {
            "policy_denied" => Self::policy_denied,
            "not_deliverable" | "not_local" | "unknown_port" | "nonlocal_bind" => {
                Self::not_deliverable
            }
            "workload_unavailable" => Self::upstream_refused,
            "host_out_of_resources" => Self::limit,
            _ => Self::other,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailedLabels {
    pub direction: Direction,
    pub reason: FailReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: Direction,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed,
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
        }
        .encode(encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    pub direction: Direction,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub workload: Label,
    /// allow | deny | audit
    pub decision: &'static str,
    /// The deciding rule's origin, or `mode`.
    pub rule: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer_principal: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkloadLabels {
    pub workload: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

fn handshake_histogram() -> Histogram {
    // 0.5 ms .. ~4 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 14))
}

/// Every family the data plane updates.
pub struct ProxyMetrics {
    pub connections_opened: Family<TcpLabels, Counter>,
    pub connections_closed: Family<TcpLabels, Counter>,
    pub sent_bytes: Family<TcpLabels, Counter>,
    pub received_bytes: Family<TcpLabels, Counter>,
    pub connections_failed: Family<FailedLabels, Counter>,
    pub handshake_duration: Family<DirectionLabels, Histogram, fn() -> Histogram>,
    pub handshakes: Family<HandshakeLabels, Counter>,
    pub authorization_decisions: Family<DecisionLabels, Counter>,
    pub pool_connections: Family<PeerLabels, Gauge>,
    pub pool_streams: Family<PeerLabels, Gauge>,
    pub capture_connections: Family<WorkloadLabels, Counter>,
    pub capture_refused: Family<ReasonLabels, Counter>,
    /// Each TCP label set's four counters, resolved once: label sets are bounded by the
    /// config, and a connection then finds its counters with one lookup, not four.
    tcp_counters: RwLock<HashMap<TcpLabels, Arc<TcpCounters>>>,
}

impl ProxyMetrics {
    pub fn new() -> Self {
        Self {
            connections_opened: Family::default(),
            connections_closed: Family::default(),
            sent_bytes: Family::default(),
            received_bytes: Family::default(),
            connections_failed: Family::default(),
            handshake_duration: Family::new_with_constructor(handshake_histogram),
            handshakes: Family::default(),
            authorization_decisions: Family::default(),
            pool_connections: Family::default(),
            pool_streams: Family::default(),
            capture_connections: Family::default(),
            capture_refused: Family::default(),
            tcp_counters: RwLock::default(),
        }
    }

    /// Registers every family (the registry adds the `tunnel_` prefix, and `_total` to
    /// counters).
    pub fn register(&self, registry: &mut Registry) {
        let tcp = "Istio-style TCP metric; direction is the side of this daemon that carried it";
        registry.register(
            "tcp_connections_opened",
            format!("Tunnelled (and passed plaintext) connections opened. {tcp}"),
            self.connections_opened.clone(),
        );
        registry.register(
            "tcp_connections_closed",
            format!("Tunnelled (and passed plaintext) connections closed. {tcp}"),
            self.connections_closed.clone(),
        );
        registry.register(
            "tcp_sent_bytes",
            format!(
                "Bytes sent towards the peer (outbound: from the caller; inbound: from the workload), added when a connection closes. {tcp}"
            ),
            self.sent_bytes.clone(),
        );
        registry.register(
            "tcp_received_bytes",
            format!(
                "Bytes received from the peer (outbound: delivered to the caller; inbound: delivered to the workload), added when a connection closes. {tcp}"
            ),
            self.received_bytes.clone(),
        );
        registry.register(
            "tcp_connections_failed",
            "Connections refused or failed before being carried, by reason",
            self.connections_failed.clone(),
        );
        registry.register(
            "tls_handshake_duration_seconds",
            "Duration of completed mTLS handshakes with peer daemons",
            self.handshake_duration.clone(),
        );
        registry.register(
            "tls_handshakes",
            "mTLS handshakes with peer daemons, by outcome",
            self.handshakes.clone(),
        );
        registry.register(
            "authorization_decisions",
            "Inbound policy decisions, by workload, decision and deciding rule (`mode` when no rule decided)",
            self.authorization_decisions.clone(),
        );
        registry.register(
            "pool_connections",
            "Pooled outbound mTLS connections open, by the peer daemon's identity",
            self.pool_connections.clone(),
        );
        registry.register(
            "pool_streams",
            "Streams open on pooled outbound connections, by the peer daemon's identity",
            self.pool_streams.clone(),
        );
        registry.register(
            "capture_connections",
            "Captured connections the outbound side accepted, by calling workload",
            self.capture_connections.clone(),
        );
        registry.register(
            "capture_refused",
            "Captured connections the outbound side refused before dialling, by reason",
            self.capture_refused.clone(),
        );
    }

    /// Counts a connection that was not carried.
    pub fn failed(&self, direction: Direction, reason: FailReason) {
        self.connections_failed
            .get_or_create(&FailedLabels { direction, reason })
            .inc();
    }

    /// Counts a handshake, and its duration when it completed.
    pub fn handshake(&self, direction: Direction, took: Option<std::time::Duration>) {
        let outcome = match took {
            Some(took) => {
                self.handshake_duration
                    .get_or_create(&DirectionLabels { direction })
                    .observe(took.as_secs_f64());
                Outcome::Ok
            }
            None => Outcome::Failed,
        };
        self.handshakes
            .get_or_create(&HandshakeLabels { direction, outcome })
            .inc();
    }

    /// Counts a connection opened and resolves its counters, once.
    pub fn open(&self, labels: &TcpLabels) -> ConnectionMetrics {
        let known = self
            .tcp_counters
            .read()
            .expect("metrics lock poisoned")
            .get(labels)
            .cloned();
        let counters = known.unwrap_or_else(|| {
            self.tcp_counters
                .write()
                .expect("metrics lock poisoned")
                .entry(labels.clone())
                .or_insert_with(|| {
                    Arc::new(TcpCounters {
                        opened: self.connections_opened.get_or_create(labels).clone(),
                        closed: self.connections_closed.get_or_create(labels).clone(),
                        sent: self.sent_bytes.get_or_create(labels).clone(),
                        received: self.received_bytes.get_or_create(labels).clone(),
                    })
                })
                .clone()
        });
        counters.opened.inc();
        ConnectionMetrics { counters }
    }
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The counters of one TCP label set (each a handle on the family's own).
struct TcpCounters {
    opened: Counter,
    closed: Counter,
    sent: Counter,
    received: Counter,
}

/// One connection's counters, resolved when it opened; counted once when it closes.
pub struct ConnectionMetrics {
    counters: Arc<TcpCounters>,
}

impl ConnectionMetrics {
    pub fn close(self, sent: u64, received: u64) {
        self.counters.sent.inc_by(sent);
        self.counters.received.inc_by(received);
        self.counters.closed.inc();
    }
}

/// Why a pod already running on the node could not be enrolled: a fixed set, so the label
/// stays bounded (`pods/enrol` says each one in words in the log).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum EnrolFailure {
    /// No process of the node is in the pod's cgroup (its sandbox is gone, or the daemon
    /// does not see the node's processes).
    no_process,
    /// The processes' network namespaces could not be read or entered.
    netns_unreadable,
    /// None of the namespaces found holds an address the API gives the pod.
    address_not_in_netns,
    /// The registration itself failed (certificate, listeners, steering, record).
    add_failed,
}

/// `result="enrolled"`, or `result="failed"` with its `reason`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct EnrolmentLabels(pub Option<EnrolFailure>);

impl EncodeLabelSet for EnrolmentLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        match self.0 {
            None => EncodeLabelSet::encode(&[("result", "enrolled")], encoder),
            Some(reason) => {
                EncodeLabelSet::encode(&[("result", "failed")], encoder)?;
                EncodeLabelSet::encode(&[("reason", reason)], encoder)
            }
        }
    }
}

/// What the pods part of the daemon counts. Cloned into it; the clones share the families.
#[derive(Clone, Debug, Default)]
pub struct PodMetrics {
    pub enrolments: Family<EnrolmentLabels, Counter>,
}

impl PodMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "pod_enrolments",
            "Pods found running on this node without a registration (at start, or later), by outcome; a pod that keeps failing for the same reason is counted once",
            self.enrolments.clone(),
        );
    }

    /// Counts one enrolment: `None` enrolled, else why not.
    pub fn enrolment(&self, failure: Option<EnrolFailure>) {
        self.enrolments
            .get_or_create(&EnrolmentLabels(failure))
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_refusals_are_sorted_into_the_fixed_set() {
        use crate::tls::RefusalKind;
        assert_eq!(
            FailReason::of_tls(RefusalKind::Revoked),
            FailReason::revoked
        );
        assert_eq!(
            FailReason::of_tls(RefusalKind::Identity),
            FailReason::peer_identity_mismatch
        );
        assert_eq!(
            FailReason::of_tls(RefusalKind::Other),
            FailReason::tls_handshake_failed
        );
    }

    #[test]
    fn counters_resolved_at_open_are_counted_at_close() {
        let metrics = ProxyMetrics::new();
        let labels = TcpLabels {
            direction: Direction::Outbound,
            source_principal: "spiffe://example.org/frontend".into(),
            source_workload: "frontend".into(),
            destination_principal: UNKNOWN.into(),
            destination_workload: UNKNOWN.into(),
            destination_service: UNKNOWN.into(),
        };
        let connection = metrics.open(&labels);
        assert_eq!(metrics.connections_closed.get_or_create(&labels).get(), 0);
        connection.close(10, 20);
        assert_eq!(metrics.connections_opened.get_or_create(&labels).get(), 1);
        assert_eq!(metrics.connections_closed.get_or_create(&labels).get(), 1);
        assert_eq!(metrics.sent_bytes.get_or_create(&labels).get(), 10);
        assert_eq!(metrics.received_bytes.get_or_create(&labels).get(), 20);
    }

    #[test]
    fn enrolments_name_a_reason_only_when_they_failed() {
        let pods = PodMetrics::default();
        let mut registry = Registry::with_prefix("tunnel");
        pods.register(&mut registry);
        pods.enrolment(None);
        pods.enrolment(None);
        pods.enrolment(Some(EnrolFailure::no_process));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("tunnel_pod_enrolments_total{result=\"enrolled\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "tunnel_pod_enrolments_total{result=\"failed\",reason=\"no_process\"} 1\n"
            ),
            "{text}"
        );
    }
}
