//! Prometheus metrics of the operator.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegionLabels {
    pub region: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: &'static str,
    pub reason: &'static str,
}

fn duration_histogram() -> Histogram {
    // 10ms … ~40s
    Histogram::new(exponential_buckets(0.01, 2.0, 13))
}

/// Every metric the operator exports, plus the registry that renders them.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<KindLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Family<KindLabels, Histogram, fn() -> Histogram>,
    pub topology_pushes: Counter,
    pub failovers: Family<RegionLabels, Counter>,
    pub handovers: Family<RegionLabels, Counter>,
    pub handover_pause: Histogram,
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("meridian_operator");
        let reconciles = Family::<KindLabels, Counter>::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let reconcile_duration =
            Family::<KindLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        let topology_pushes = Counter::default();
        let leader = Gauge::default();
        let failovers = Family::<RegionLabels, Counter>::default();
        registry.register(
            "failovers",
            "Shard primaries replaced by a promoted replica",
            failovers.clone(),
        );
        let handovers = Family::<RegionLabels, Counter>::default();
        registry.register(
            "handovers",
            "Shard primaries handed over gracefully to a replica (rolling updates)",
            handovers.clone(),
        );
        let handover_pause = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "handover_pause_seconds",
            "How long writes to a shard were paused by one primary handover",
            handover_pause.clone(),
        );
        registry.register("reconciles", "Reconciles started", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by error reason",
            reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            reconcile_duration.clone(),
        );
        registry.register(
            "topology_pushes",
            "MERIDIAN.TOPOLOGY SET commands a node accepted",
            topology_pushes.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            topology_pushes,
            failovers,
            handovers,
            handover_pause,
            leader,
        }
    }
}

impl Metrics {
    pub fn reconcile_started(&self, kind: &'static str) {
        self.reconciles.get_or_create(&KindLabels { kind }).inc();
    }

    pub fn reconcile_finished(&self, kind: &'static str, took: Duration) {
        self.reconcile_duration
            .get_or_create(&KindLabels { kind })
            .observe(took.as_secs_f64());
    }

    pub fn reconcile_failed(&self, kind: &'static str, reason: &'static str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels { kind, reason })
            .inc();
    }

    pub fn failover(&self, region: &str) {
        self.failovers
            .get_or_create(&RegionLabels {
                region: region.to_string(),
            })
            .inc();
    }

    pub fn handover(&self, region: &str, paused: Duration) {
        self.handovers
            .get_or_create(&RegionLabels {
                region: region.to_string(),
            })
            .inc();
        self.handover_pause.observe(paused.as_secs_f64());
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_documented_names() {
        let metrics = Metrics::default();
        metrics.reconcile_started("CacheRegion");
        metrics.reconcile_failed("CacheRegion", "kube_api");
        metrics.reconcile_finished("CacheRegion", Duration::from_millis(30));
        metrics.topology_pushes.inc();
        metrics.leader.set(1);
        metrics.failover("eu");
        let text = metrics.render();
        for needle in [
            "meridian_operator_reconciles_total{kind=\"CacheRegion\"} 1",
            "meridian_operator_reconcile_errors_total{kind=\"CacheRegion\",reason=\"kube_api\"} 1",
            "meridian_operator_reconcile_duration_seconds_count{kind=\"CacheRegion\"} 1",
            "meridian_operator_topology_pushes_total 1",
            "meridian_operator_leader 1",
            "meridian_operator_failovers_total{region=\"eu\"} 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in:\n{text}");
        }
    }
}
