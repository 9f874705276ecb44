//! Forwarding of everything outside the cluster zone: cache, in-flight deduplication, round
//! robin over upstreams with failure tracking, and serve-stale (RFC 8767) when all fail.

mod cache;
mod inflight;
mod upstream;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Query, ResponseCode};
use hickory_proto::rr::Record;

pub use cache::{Cache, CacheKey, Cached, Hit};
pub use inflight::{InFlight, Role};

use crate::metrics::{DnsMetrics, ServerMetrics, UpstreamMetrics};
use crate::UpstreamProtocol;

/// Time one upstream gets before the next is tried.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// Total time spent on upstreams for one question without anything stale to fall back on.
const DEADLINE: Duration = Duration::from_secs(4);
/// With a stale answer at hand, give up on upstreams sooner (RFC 8767's client response timer).
const STALE_DEADLINE: Duration = Duration::from_millis(1800);
/// TTL put on stale answers (RFC 8767 §4).
const STALE_TTL: u32 = 30;
/// Upstream questions in flight at once; beyond this new ones fail at once (CoreDNS's
/// `max_concurrent`), bounding the tasks and sockets a flood of unique names can hold.
const MAX_CONCURRENT: usize = 1000;
/// Consecutive failures after which an upstream is tried only when the healthy ones fail.
const MAX_FAILS: u32 = 2;

/// Forwarder settings.
#[derive(Debug, Clone)]
pub struct ForwardSettings {
    /// Upstream servers, tried round robin.
    pub upstreams: Vec<SocketAddr>,
    /// Transport towards upstreams.
    pub protocol: UpstreamProtocol,
    /// Maximum cached answers.
    pub cache_size: usize,
    /// How long past expiry an answer may be served when upstreams fail.
    pub serve_stale: Duration,
}

struct Upstream {
    addr: SocketAddr,
    fails: AtomicU32,
    metrics: UpstreamMetrics,
}

/// An answer to hand to the client.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The cached upstream answer.
    pub entry: Arc<Cached>,
    /// Seconds to subtract from record TTLs, or `None` when served stale.
    age: Option<u32>,
}

impl Answer {
    /// Whether the answer is served stale.
    pub fn is_stale(&self) -> bool {
        self.age.is_none()
    }

    /// Copies of `records` with the TTLs the client should see (aged, or 30 s when stale).
    pub fn records(&self, records: &[Record]) -> Vec<Record> {
        records
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.ttl = match self.age {
                    Some(age) => r.ttl.saturating_sub(age),
                    None => STALE_TTL,
                };
                r
            })
            .collect()
    }
}

/// The caching forwarder.
pub struct Forwarder {
    upstreams: Box<[Upstream]>,
    next: AtomicUsize,
    protocol: UpstreamProtocol,
    cache: Cache,
    inflight: InFlight<CacheKey, Option<Arc<Cached>>>,
    concurrency: tokio::sync::Semaphore,
    metrics: ServerMetrics,
}

impl Forwarder {
    /// A forwarder over `settings.upstreams`, counting into `metrics`.
    pub(crate) fn new(
        settings: &ForwardSettings,
        metrics: &DnsMetrics,
        server: ServerMetrics,
    ) -> Self {
        let upstreams = settings
            .upstreams
            .iter()
            .map(|&addr| Upstream {
                addr,
                fails: AtomicU32::new(0),
                metrics: metrics.upstream(&addr.to_string()),
            })
            .collect();
        Self {
            upstreams,
            next: AtomicUsize::new(0),
            protocol: settings.protocol,
            cache: Cache::new(settings.cache_size, settings.serve_stale),
            inflight: InFlight::default(),
            concurrency: tokio::sync::Semaphore::new(MAX_CONCURRENT),
            metrics: server,
        }
    }

    /// Answers `query` from the cache or upstream; `None` means SERVFAIL.
    pub async fn resolve(&self, query: &Query) -> Option<Answer> {
        let key = CacheKey::new(query.name(), query.query_type());
        let now = Instant::now();
        let stale = match self.cache.get(&key, now) {
            Some(Hit::Fresh(entry)) => {
                self.metrics.cache_hit(entry.answers.is_empty());
                let age = Some(entry.age(now));
                return Some(Answer { entry, age });
            }
            Some(Hit::Stale(entry)) => Some(entry),
            None => None,
        };
        self.metrics.cache_miss();
        let budget = if stale.is_some() {
            STALE_DEADLINE
        } else {
            DEADLINE
        };
        let fetched = match self.inflight.join(&key) {
            Role::Leader(leader) => {
                let fetched = match self.concurrency.try_acquire() {
                    Ok(_permit) => self.fetch(query, budget).await,
                    Err(_) => {
                        tracing::debug!("too many upstream queries in flight");
                        None
                    }
                };
                if let Some(entry) = &fetched {
                    self.cache.insert(key, entry.clone());
                    self.metrics.cache_size(self.cache.len());
                }
                leader.finish(fetched.clone());
                fetched
            }
            Role::Follower(rx) => tokio::time::timeout(budget, inflight::wait(rx))
                .await
                .ok()
                .flatten()
                .flatten(),
        };
        match fetched {
            Some(entry) => Some(Answer {
                entry,
                age: Some(0),
            }),
            None => stale.map(|entry| Answer { entry, age: None }),
        }
    }

    /// Asks upstreams in turn (healthy ones first) until one answers NOERROR or NXDOMAIN.
    async fn fetch(&self, query: &Query, budget: Duration) -> Option<Arc<Cached>> {
        let deadline = Instant::now() + budget;
        for upstream in self.order() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            upstream.metrics.request();
            let attempt = tokio::time::timeout(
                left.min(ATTEMPT_TIMEOUT),
                upstream::exchange(upstream.addr, self.protocol, query),
            )
            .await;
            match attempt {
                Ok(Ok(reply)) => {
                    let rcode = reply.metadata.response_code;
                    upstream.metrics.response(rcode);
                    if matches!(rcode, ResponseCode::NoError | ResponseCode::NXDomain) {
                        upstream.fails.store(0, Ordering::Relaxed);
                        return Some(Arc::new(Cached::new(
                            rcode,
                            reply.answers,
                            reply.authorities,
                            reply.additionals,
                            Instant::now(),
                        )));
                    }
                    tracing::debug!(upstream = %upstream.addr, %rcode, "upstream failed the query");
                }
                Ok(Err(error)) => {
                    tracing::debug!(upstream = %upstream.addr, %error, "upstream exchange failed");
                }
                Err(_) => tracing::debug!(upstream = %upstream.addr, "upstream timed out"),
            }
            upstream.fails.fetch_add(1, Ordering::Relaxed);
        }
        None
    }

    /// Upstreams in round-robin order, the ones failing lately last.
    fn order(&self) -> Vec<&Upstream> {
        let n = self.upstreams.len();
        if n == 0 {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut order: Vec<&Upstream> = (0..n).map(|i| &self.upstreams[(start + i) % n]).collect();
        // Stable: keeps the rotation within the healthy and the failing group.
        order.sort_by_cached_key(|u| u.fails.load(Ordering::Relaxed) >= MAX_FAILS);
        order
    }

    /// Number of cached answers.
    pub fn cache_len(&self) -> usize {
        self.cache.len()
    }
}

#[cfg(test)]
mod tests;
