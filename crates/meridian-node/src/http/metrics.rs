//! Metrics of the HTTP API and the origin, registered next to the node's
//! scrape-time collector.

use std::sync::LazyLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

pub struct ApiMetrics {
    pub http_requests: Family<Labels, Counter>,
    pub origin_requests: Family<Labels, Counter>,
    pub singleflight_waiters: Gauge,
}

/// Process-wide, like the node's one listener of each kind.
pub static API_METRICS: LazyLock<ApiMetrics> = LazyLock::new(|| ApiMetrics {
    http_requests: Family::default(),
    origin_requests: Family::default(),
    singleflight_waiters: Gauge::default(),
});

impl ApiMetrics {
    pub fn http_request(&self, method: &str, code: u16) {
        self.http_requests
            .get_or_create(&vec![
                ("method", method.to_string()),
                ("code", code.to_string()),
            ])
            .inc();
    }

    pub fn origin_request(&self, op: &'static str, outcome: &'static str) {
        self.origin_requests
            .get_or_create(&vec![
                ("op", op.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc();
    }
}

pub fn register(registry: &mut Registry) {
    let metrics = &*API_METRICS;
    registry.register(
        "meridian_http_requests",
        "HTTP API requests by method and status code",
        metrics.http_requests.clone(),
    );
    registry.register(
        "meridian_origin_requests",
        "Origin requests by operation (get, put, delete) and outcome",
        metrics.origin_requests.clone(),
    );
    registry.register(
        "meridian_origin_singleflight_waiters",
        "Cache misses currently waiting for another request's origin fetch",
        metrics.singleflight_waiters.clone(),
    );
}
