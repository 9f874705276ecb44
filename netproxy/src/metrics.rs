//! kube-proxy's Prometheus families (`kubeproxy_*`), under the upstream names and buckets so
//! existing dashboards and alerts work unchanged.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// `traffic_policy` label of the no-local-endpoints gauge.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TrafficPolicyLabels {
    traffic_policy: String,
}

/// Handles to the proxy's families; clones share the same series.
#[derive(Clone)]
pub struct ProxyMetrics {
    sync_duration: Histogram,
    last_sync: Gauge<f64, AtomicU64>,
    endpoint_changes: Counter,
    service_changes: Counter,
    network_programming: Histogram,
    sync_failures: Counter,
    no_local_endpoints: Family<TrafficPolicyLabels, Gauge>,
}

impl ProxyMetrics {
    /// Register the families in `registry` (names are absolute, so pass the root registry).
    pub fn register(registry: &mut Registry) -> Self {
        // prometheus-client appends the unit (`_seconds`) and, for counters, `_total` itself.
        let metrics = Self {
            // kube-proxy: ExponentialBuckets(0.001, 2, 15), i.e. 1 ms .. 16.384 s.
            sync_duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            last_sync: Gauge::default(),
            endpoint_changes: Counter::default(),
            service_changes: Counter::default(),
            network_programming: Histogram::new(network_programming_buckets()),
            sync_failures: Counter::default(),
            no_local_endpoints: Family::default(),
        };
        registry.register_with_unit(
            "kubeproxy_sync_proxy_rules_duration",
            "SyncProxyRules latency in seconds",
            Unit::Seconds,
            metrics.sync_duration.clone(),
        );
        registry.register_with_unit(
            "kubeproxy_sync_proxy_rules_last_timestamp",
            "The last time proxy rules were successfully synced",
            Unit::Seconds,
            metrics.last_sync.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_endpoint_changes",
            "Cumulative proxy rules Endpoint changes",
            metrics.endpoint_changes.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_service_changes",
            "Cumulative proxy rules Service changes",
            metrics.service_changes.clone(),
        );
        registry.register_with_unit(
            "kubeproxy_network_programming_duration",
            "In Cluster Network Programming Latency in seconds",
            Unit::Seconds,
            metrics.network_programming.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_nftables_sync_failures",
            "Cumulative proxy nftables sync failures",
            metrics.sync_failures.clone(),
        );
        // A gauge upstream despite the `_total` suffix, so the name is spelled out in full.
        registry.register(
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
            "Number of services with a Local traffic policy and no endpoints",
            metrics.no_local_endpoints.clone(),
        );
        metrics
    }

    /// Record one sync: its duration always, the last-sync time when it succeeded, a failure
    /// otherwise.
    pub fn sync_finished(&self, took: Duration, ok: bool) {
        self.sync_duration.observe(took.as_secs_f64());
        if ok {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            self.last_sync.set(now.as_secs_f64());
        } else {
            self.sync_failures.inc();
        }
    }

    /// Count `n` EndpointSlice changes seen.
    pub fn endpoint_changes(&self, n: u64) {
        self.endpoint_changes.inc_by(n);
    }

    /// Count `n` Service changes seen.
    pub fn service_changes(&self, n: u64) {
        self.service_changes.inc_by(n);
    }

    /// Observe the time from an endpoint change (its trigger time) to the rules being in place.
    pub fn network_programming(&self, latency: Duration) {
        self.network_programming.observe(latency.as_secs_f64());
    }

    /// Set how many Services with `traffic_policy` ("internal" or "external") Local have no
    /// local endpoint.
    pub fn no_local_endpoints(&self, traffic_policy: &str, services: i64) {
        self.no_local_endpoints
            .get_or_create(&TrafficPolicyLabels {
                traffic_policy: traffic_policy.to_owned(),
            })
            .set(services);
    }
}

/// kube-proxy's network programming buckets: component-base's MergeBuckets starts with a 0
/// bucket, then 0.25 s and 0.5 s, every second to 59 s, every 5 s to 115 s, every 30 s to 5 min.
fn network_programming_buckets() -> impl Iterator<Item = f64> {
    let runs: [(f64, f64, u16); 5] = [
        (0.0, 0.0, 1),
        (0.25, 0.25, 2),
        (1.0, 1.0, 59),
        (60.0, 5.0, 12),
        (120.0, 30.0, 7),
    ];
    runs.into_iter()
        .flat_map(|(start, width, count)| (0..count).map(move |i| start + width * f64::from(i)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    fn family_types(text: &str) -> Vec<(String, String)> {
        text.lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .map(|rest| {
                let (name, kind) = rest.split_once(' ').unwrap();
                (name.to_owned(), kind.to_owned())
            })
            .collect()
    }

    #[test]
    fn families_carry_kube_proxy_names_and_types() {
        let mut registry = Registry::default();
        let metrics = ProxyMetrics::register(&mut registry);
        metrics.no_local_endpoints("internal", 0);
        let text = exposition(&registry);
        let expected = [
            ("kubeproxy_sync_proxy_rules_duration_seconds", "histogram"),
            ("kubeproxy_sync_proxy_rules_last_timestamp_seconds", "gauge"),
            ("kubeproxy_sync_proxy_rules_endpoint_changes", "counter"),
            ("kubeproxy_sync_proxy_rules_service_changes", "counter"),
            (
                "kubeproxy_network_programming_duration_seconds",
                "histogram",
            ),
            (
                "kubeproxy_sync_proxy_rules_nftables_sync_failures",
                "counter",
            ),
            (
                "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
                "gauge",
            ),
        ];
        let expected: Vec<_> = expected
            .iter()
            .map(|(name, kind)| (name.to_string(), kind.to_string()))
            .collect();
        assert_eq!(family_types(&text), expected);
        // OpenMetrics names the counter family without `_total` and the sample with it.
        for sample in [
            "kubeproxy_sync_proxy_rules_endpoint_changes_total 0",
            "kubeproxy_sync_proxy_rules_service_changes_total 0",
            "kubeproxy_sync_proxy_rules_nftables_sync_failures_total 0",
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"internal\"} 0",
        ] {
            assert!(
                text.lines().any(|line| line == sample),
                "{sample} in\n{text}"
            );
        }
        assert!(text.contains("# UNIT kubeproxy_sync_proxy_rules_duration_seconds seconds"));
    }

    #[test]
    fn sync_results_update_duration_timestamp_and_failures() {
        let mut registry = Registry::default();
        let metrics = ProxyMetrics::register(&mut registry);
        metrics.sync_finished(Duration::from_millis(3), true);
        let after_ok = metrics.last_sync.get();
        assert!(after_ok > 1.6e9, "unix seconds, got {after_ok}");
        metrics.sync_finished(Duration::from_millis(40), false);
        assert_eq!(
            metrics.last_sync.get(),
            after_ok,
            "a failed sync keeps the time"
        );
        assert_eq!(metrics.sync_failures.get(), 1);
        let text = exposition(&registry);
        assert!(text.contains("kubeproxy_sync_proxy_rules_duration_seconds_count 2"));
        // 3 ms lands in the 4 ms bucket, 40 ms in the 64 ms one.
        assert!(text.contains("kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.002\"} 0"));
        assert!(text.contains("kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.004\"} 1"));
        assert!(text.contains("kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.064\"} 2"));
        assert!(
            text.contains("kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"16.384\"} 2")
        );
    }

    #[test]
    fn change_counters_and_no_local_gauge_follow_calls() {
        let mut registry = Registry::default();
        let metrics = ProxyMetrics::register(&mut registry);
        metrics.endpoint_changes(3);
        metrics.endpoint_changes(2);
        metrics.service_changes(1);
        metrics.no_local_endpoints("external", 4);
        metrics.no_local_endpoints("external", 2);
        let text = exposition(&registry);
        assert!(text.contains("kubeproxy_sync_proxy_rules_endpoint_changes_total 5\n"));
        assert!(text.contains("kubeproxy_sync_proxy_rules_service_changes_total 1\n"));
        assert!(text.contains(
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"external\"} 2\n"
        ));
    }

    #[test]
    fn network_programming_buckets_match_kube_proxy() {
        let buckets: Vec<f64> = network_programming_buckets().collect();
        assert_eq!(buckets.len(), 1 + 2 + 59 + 12 + 7);
        assert_eq!(&buckets[..5], &[0.0, 0.25, 0.5, 1.0, 2.0]);
        assert_eq!(buckets[61], 59.0);
        assert_eq!(&buckets[62..64], &[60.0, 65.0]);
        assert_eq!(buckets[73], 115.0);
        assert_eq!(
            &buckets[74..],
            &[120.0, 150.0, 180.0, 210.0, 240.0, 270.0, 300.0]
        );
        assert!(buckets.windows(2).all(|pair| pair[0] < pair[1]));

        let mut registry = Registry::default();
        let metrics = ProxyMetrics::register(&mut registry);
        metrics.network_programming(Duration::from_millis(700));
        let text = exposition(&registry);
        assert!(
            text.contains("kubeproxy_network_programming_duration_seconds_bucket{le=\"0.5\"} 0")
        );
        assert!(
            text.contains("kubeproxy_network_programming_duration_seconds_bucket{le=\"1.0\"} 1")
        );
    }
}
