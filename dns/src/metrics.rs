//! CoreDNS-named Prometheus families, and pre-resolved per-server handles so that counting a
//! query touches only atomics (no family map lookups or locks on the answer path).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// Query types counted by name; everything else is counted as `other`, like CoreDNS.
const TYPES: [RecordType; 11] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::PTR,
    RecordType::SRV,
    RecordType::TXT,
    RecordType::CNAME,
    RecordType::SOA,
    RecordType::NS,
    RecordType::MX,
    RecordType::HTTPS,
    RecordType::ANY,
];
/// Response codes counted by name; the rest as `other`.
const RCODES: [(ResponseCode, &str); 6] = [
    (ResponseCode::NoError, "NOERROR"),
    (ResponseCode::FormErr, "FORMERR"),
    (ResponseCode::ServFail, "SERVFAIL"),
    (ResponseCode::NXDomain, "NXDOMAIN"),
    (ResponseCode::NotImp, "NOTIMP"),
    (ResponseCode::Refused, "REFUSED"),
];
/// CoreDNS's request duration buckets: 0.25 ms doubling 16 times.
const BUCKETS: usize = 16;
const FIRST_BUCKET: f64 = 0.000_25;

/// Which zone a query was answered for (CoreDNS's `zone` label: the server block).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneKind {
    /// The cluster zone (and its reverse names).
    Cluster,
    /// Everything forwarded (`.`).
    Root,
}

/// Transport a query arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    server: String,
    zone: String,
    proto: String,
    family: String,
    r#type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResponseLabels {
    server: String,
    zone: String,
    rcode: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ZoneLabels {
    server: String,
    zone: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CacheLabels {
    server: String,
    r#type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ServerLabels {
    server: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ToLabels {
    to: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ToRcodeLabels {
    to: String,
    rcode: String,
}

/// A histogram of atomics (prometheus-client's own one takes a mutex per observation).
#[derive(Debug, Clone, Default)]
pub struct AtomicHistogram(Arc<HistogramInner>);

#[derive(Debug, Default)]
struct HistogramInner {
    /// Per-bucket (not cumulative) counts; the last slot is +Inf.
    buckets: [AtomicU64; BUCKETS + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl AtomicHistogram {
    /// Records one duration.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let index = (0..BUCKETS)
            .find(|&i| seconds <= upper_bound(i))
            .unwrap_or(BUCKETS);
        self.0.buckets[index].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.0.count.fetch_add(1, Ordering::Relaxed);
    }
}

fn upper_bound(index: usize) -> f64 {
    FIRST_BUCKET * f64::from(1u32 << index)
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = self
            .0
            .buckets
            .iter()
            .enumerate()
            .map(|(i, count)| {
                let bound = if i < BUCKETS {
                    upper_bound(i)
                } else {
                    f64::INFINITY
                };
                (bound, count.load(Ordering::Relaxed))
            })
            .collect();
        // Nanosecond sums stay exact in u64; f64 rounding only happens at scrape time.
        #[allow(clippy::cast_precision_loss)]
        let sum = self.0.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(
            sum,
            self.0.count.load(Ordering::Relaxed),
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The `coredns_*` families, registered once in the agent's registry.
#[derive(Debug, Clone, Default)]
pub struct DnsMetrics {
    requests: Family<RequestLabels, Counter>,
    responses: Family<ResponseLabels, Counter>,
    duration: Family<ZoneLabels, AtomicHistogram>,
    cache_entries: Family<CacheLabels, Gauge>,
    cache_hits: Family<CacheLabels, Counter>,
    cache_misses: Family<ServerLabels, Counter>,
    forward_requests: Family<ToLabels, Counter>,
    forward_responses: Family<ToRcodeLabels, Counter>,
}

impl DnsMetrics {
    /// Registers the coredns_* families in the agent's one registry.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let r = registry.sub_registry_with_prefix("coredns");
        r.register(
            "dns_requests",
            "Counter of DNS requests made per zone, protocol and family.",
            metrics.requests.clone(),
        );
        r.register(
            "dns_responses",
            "Counter of response status codes.",
            metrics.responses.clone(),
        );
        r.register(
            "dns_request_duration_seconds",
            "Histogram of the time (in seconds) each request took per zone.",
            metrics.duration.clone(),
        );
        r.register(
            "cache_entries",
            "The number of elements in the cache.",
            metrics.cache_entries.clone(),
        );
        r.register(
            "cache_hits",
            "The count of cache hits.",
            metrics.cache_hits.clone(),
        );
        r.register(
            "cache_misses",
            "The count of cache misses.",
            metrics.cache_misses.clone(),
        );
        r.register(
            "forward_requests",
            "Counter of requests made per upstream.",
            metrics.forward_requests.clone(),
        );
        r.register(
            "forward_responses",
            "Counter of responses received per upstream.",
            metrics.forward_responses.clone(),
        );
        metrics
    }

    /// Resolves every series one server can touch, for lock-free counting.
    pub(crate) fn server(&self, server: &str, cluster_zone: &str) -> ServerMetrics {
        let zones = [format!("{cluster_zone}."), ".".to_owned()];
        let requests = zones.each_ref().map(|zone| {
            ["udp", "tcp"].map(|proto| {
                ["1", "2"].map(|family| {
                    type_names().map(|ty| {
                        self.requests
                            .get_or_create(&RequestLabels {
                                server: server.to_owned(),
                                zone: zone.clone(),
                                proto: proto.to_owned(),
                                family: family.to_owned(),
                                r#type: ty.to_owned(),
                            })
                            .clone()
                    })
                })
            })
        });
        let responses = zones.each_ref().map(|zone| {
            rcode_names().map(|rcode| {
                self.responses
                    .get_or_create(&ResponseLabels {
                        server: server.to_owned(),
                        zone: zone.clone(),
                        rcode: rcode.to_owned(),
                    })
                    .clone()
            })
        });
        let duration = zones.each_ref().map(|zone| {
            self.duration
                .get_or_create(&ZoneLabels {
                    server: server.to_owned(),
                    zone: zone.clone(),
                })
                .clone()
        });
        let cache = |family: &Family<CacheLabels, Counter>, ty: &str| {
            family
                .get_or_create(&CacheLabels {
                    server: server.to_owned(),
                    r#type: ty.to_owned(),
                })
                .clone()
        };
        ServerMetrics {
            requests: Box::new(requests),
            responses,
            duration,
            cache_hits: [
                cache(&self.cache_hits, "success"),
                cache(&self.cache_hits, "denial"),
            ],
            cache_entries: self
                .cache_entries
                .get_or_create(&CacheLabels {
                    server: server.to_owned(),
                    r#type: "total".to_owned(),
                })
                .clone(),
            cache_misses: self
                .cache_misses
                .get_or_create(&ServerLabels {
                    server: server.to_owned(),
                })
                .clone(),
        }
    }

    /// Resolves the series of one upstream.
    pub(crate) fn upstream(&self, to: &str) -> UpstreamMetrics {
        UpstreamMetrics {
            requests: self
                .forward_requests
                .get_or_create(&ToLabels { to: to.to_owned() })
                .clone(),
            responses: rcode_names().map(|rcode| {
                self.forward_responses
                    .get_or_create(&ToRcodeLabels {
                        to: to.to_owned(),
                        rcode: rcode.to_owned(),
                    })
                    .clone()
            }),
        }
    }
}

fn type_names() -> [&'static str; TYPES.len() + 1] {
    let mut names = ["other"; TYPES.len() + 1];
    for (slot, ty) in names.iter_mut().zip(TYPES) {
        *slot = record_type_name(ty);
    }
    names
}

fn record_type_name(ty: RecordType) -> &'static str {
    match ty {
        RecordType::A => "A",
        RecordType::AAAA => "AAAA",
        RecordType::PTR => "PTR",
        RecordType::SRV => "SRV",
        RecordType::TXT => "TXT",
        RecordType::CNAME => "CNAME",
        RecordType::SOA => "SOA",
        RecordType::NS => "NS",
        RecordType::MX => "MX",
        RecordType::HTTPS => "HTTPS",
        RecordType::ANY => "ANY",
        _ => "other",
    }
}

fn rcode_names() -> [&'static str; RCODES.len() + 1] {
    let mut names = ["other"; RCODES.len() + 1];
    for (slot, (_, name)) in names.iter_mut().zip(RCODES) {
        *slot = name;
    }
    names
}

fn type_index(ty: RecordType) -> usize {
    TYPES.iter().position(|&t| t == ty).unwrap_or(TYPES.len())
}

fn rcode_index(rcode: ResponseCode) -> usize {
    RCODES
        .iter()
        .position(|&(r, _)| r == rcode)
        .unwrap_or(RCODES.len())
}

type TypeCounters = [Counter; TYPES.len() + 1];
type RcodeCounters = [Counter; RCODES.len() + 1];

/// One server's pre-resolved series.
#[derive(Debug, Clone)]
pub(crate) struct ServerMetrics {
    /// [zone][proto][family][type]
    requests: Box<[[[TypeCounters; 2]; 2]; 2]>,
    responses: [RcodeCounters; 2],
    duration: [AtomicHistogram; 2],
    cache_hits: [Counter; 2],
    cache_entries: Gauge,
    cache_misses: Counter,
}

impl ServerMetrics {
    /// Counts one answered query.
    pub(crate) fn query(
        &self,
        zone: ZoneKind,
        transport: Transport,
        ipv6_client: bool,
        qtype: RecordType,
        rcode: ResponseCode,
        elapsed: Duration,
    ) {
        let z = usize::from(zone == ZoneKind::Root);
        let p = usize::from(transport == Transport::Tcp);
        let f = usize::from(ipv6_client);
        self.requests[z][p][f][type_index(qtype)].inc();
        self.responses[z][rcode_index(rcode)].inc();
        self.duration[z].observe(elapsed);
    }

    /// Counts a cache hit (`denial` for negative answers).
    pub(crate) fn cache_hit(&self, denial: bool) {
        self.cache_hits[usize::from(denial)].inc();
    }

    /// Counts a cache miss.
    pub(crate) fn cache_miss(&self) {
        self.cache_misses.inc();
    }

    /// Publishes the cache size.
    pub(crate) fn cache_size(&self, entries: usize) {
        self.cache_entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
    }
}

/// One upstream's pre-resolved series.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamMetrics {
    requests: Counter,
    responses: RcodeCounters,
}

impl UpstreamMetrics {
    /// Counts a query sent.
    pub(crate) fn request(&self) {
        self.requests.inc();
    }

    /// Counts a response received.
    pub(crate) fn response(&self, rcode: ResponseCode) {
        self.responses[rcode_index(rcode)].inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_encode_with_coredns_names() {
        let mut registry = Registry::default();
        let metrics = DnsMetrics::register(&mut registry);
        let server = metrics.server("dns://:53", "cluster.local");
        server.query(
            ZoneKind::Cluster,
            Transport::Udp,
            false,
            RecordType::A,
            ResponseCode::NoError,
            Duration::from_micros(300),
        );
        server.query(
            ZoneKind::Root,
            Transport::Tcp,
            true,
            RecordType::CAA,
            ResponseCode::ServFail,
            Duration::from_secs(20),
        );
        server.cache_hit(true);
        server.cache_miss();
        server.cache_size(3);
        let up = metrics.upstream("10.0.0.1:53");
        up.request();
        up.response(ResponseCode::NXDomain);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            r#"coredns_dns_requests_total{server="dns://:53",zone="cluster.local.",proto="udp",family="1",type="A"} 1"#,
            r#"coredns_dns_requests_total{server="dns://:53",zone=".",proto="tcp",family="2",type="other"} 1"#,
            r#"coredns_dns_responses_total{server="dns://:53",zone=".",rcode="SERVFAIL"} 1"#,
            r#"coredns_dns_request_duration_seconds_bucket{le="0.0005",server="dns://:53",zone="cluster.local."} 1"#,
            r#"coredns_dns_request_duration_seconds_bucket{le="+Inf",server="dns://:53",zone="."} 1"#,
            r#"coredns_dns_request_duration_seconds_bucket{le="8.192",server="dns://:53",zone="."} 0"#,
            r#"coredns_cache_hits_total{server="dns://:53",type="denial"} 1"#,
            r#"coredns_cache_misses_total{server="dns://:53"} 1"#,
            r#"coredns_cache_entries{server="dns://:53",type="total"} 3"#,
            r#"coredns_forward_requests_total{to="10.0.0.1:53"} 1"#,
            r#"coredns_forward_responses_total{to="10.0.0.1:53",rcode="NXDOMAIN"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
