//! Proxier sync cost at cluster scale, without the kernel: the first (full) sync of N Services
//! with two endpoints each, then repeated syncs where one Service's slice changed (what every
//! endpoint change costs: grouping, re-planning one Service, diffing, rendering).
//! `NETPROXY_BENCH_SERVICES` sets N (default 44000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use netproxy::model::IpFamily;
use netproxy::{
    ClusterState, NftBackend, NodeContext, Proxier, ProxyConfig, ProxyError, ProxyMetrics,
};
use serde_json::{json, Value};

/// Counts script bytes instead of applying them.
struct Null(Arc<std::sync::atomic::AtomicUsize>);

impl NftBackend for Null {
    fn apply(&mut self, script: &str) -> Result<(), ProxyError> {
        self.0
            .store(script.len(), std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn list_table(&mut self, _: IpFamily, _: &str) -> Result<Option<Value>, ProxyError> {
        Ok(None)
    }
}

fn service(i: usize) -> Arc<Service> {
    let ip = format!("10.{}.{}.{}", 96 + i / 65536, (i / 256) % 256, i % 256);
    Arc::new(serde_json::from_value(json!({
        "metadata": {"namespace": "bench", "name": format!("svc-{i}")},
        "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": [{"name": "http", "protocol": "TCP", "port": 80}]}
    })).unwrap())
}

fn slice(i: usize, generation: usize) -> Arc<EndpointSlice> {
    let eps: Vec<Value> = (0..2)
        .map(|e| json!({"addresses": [format!("10.{}.{}.{}", 128 + (i / 256) % 64, i % 256, e + 2 + generation % 100)], "conditions": {"ready": true}}))
        .collect();
    Arc::new(serde_json::from_value(json!({
        "metadata": {"namespace": "bench", "name": format!("svc-{i}-x"), "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4", "ports": [{"name": "http", "protocol": "TCP", "port": 8080}], "endpoints": eps
    })).unwrap())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let n: usize = std::env::var("NETPROXY_BENCH_SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(44_000);
    let mut state = ClusterState {
        services: (0..n).map(service).collect(),
        slices: (0..n).map(|i| slice(i, 0)).collect(),
    };
    let bytes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let config = ProxyConfig {
        cluster_cidr: "10.128.0.0/10".into(),
        ..Default::default()
    };
    let metrics = ProxyMetrics::register(&mut Default::default());
    let mut proxier = Proxier::new(
        &config,
        NodeContext::default(),
        Box::new(Null(bytes.clone())),
        metrics,
    )
    .unwrap();

    let started = Instant::now();
    proxier.sync(&state, false).unwrap();
    let first = started.elapsed();
    let first_bytes = bytes.load(std::sync::atomic::Ordering::Relaxed);

    let mut times = Vec::new();
    for round in 1..=200 {
        let i = (round * 7919) % n;
        state.slices[i] = slice(i, round);
        let started = Instant::now();
        let report = proxier.sync(&state, false).unwrap();
        times.push(started.elapsed());
        assert_eq!(report.changed_services, 1);
    }
    times.sort();
    let last_bytes = bytes.load(std::sync::atomic::Ordering::Relaxed);
    println!("netproxy_sync services={n}");
    println!("  first sync (plan + render all): {first:?}, script {first_bytes} bytes");
    println!(
        "  one endpoint change: p50 {:?} p99 {:?}, script {last_bytes} bytes",
        percentile(&times, 0.5),
        percentile(&times, 0.99)
    );
}
