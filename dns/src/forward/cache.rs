//! A bounded, sharded cache of upstream answers (positive and negative) with serve-stale.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// Upper bound for positive answers, as CoreDNS's cache plugin.
const MAX_SUCCESS_TTL: u32 = 3600;
/// Upper bound for negative answers, as CoreDNS's cache plugin.
const MAX_DENIAL_TTL: u32 = 1800;
/// TTL of a negative answer without an SOA to take it from.
const DEFAULT_DENIAL_TTL: u32 = 5;
/// Shards keep lock hold times short and contention low on the answer path.
const SHARDS: usize = 16;

/// What a cached answer is keyed by: the lowercased question.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// Lowercased query name.
    pub name: Name,
    /// Query type.
    pub qtype: RecordType,
}

impl CacheKey {
    /// The key of a question (case-folded, since names compare case-insensitively).
    pub fn new(name: &Name, qtype: RecordType) -> Self {
        Self {
            name: name.to_lowercase(),
            qtype,
        }
    }
}

/// An upstream answer as stored.
#[derive(Debug)]
pub struct Cached {
    /// NOERROR or NXDOMAIN.
    pub rcode: ResponseCode,
    /// Answer section.
    pub answers: Vec<Record>,
    /// Authority section.
    pub authorities: Vec<Record>,
    /// Additional section (without OPT).
    pub additionals: Vec<Record>,
    /// When it was stored.
    pub stored: Instant,
    /// Seconds it stays fresh.
    pub ttl: u32,
}

impl Cached {
    /// Wraps an upstream answer, computing its cache TTL (RFC 2308 for negative answers).
    pub fn new(
        rcode: ResponseCode,
        answers: Vec<Record>,
        authorities: Vec<Record>,
        additionals: Vec<Record>,
        now: Instant,
    ) -> Self {
        let ttl = cache_ttl(rcode, &answers, &authorities);
        Self {
            rcode,
            answers,
            authorities,
            additionals,
            stored: now,
            ttl,
        }
    }

    /// Whole seconds since it was stored.
    pub fn age(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.stored).as_secs()).unwrap_or(u32::MAX)
    }

    /// Whether it is still fresh at `now`.
    pub fn is_fresh(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.stored) < Duration::from_secs(self.ttl.into())
    }
}

/// The TTL an answer is cached for: the smallest record TTL, or for a negative answer the
/// SOA's `min(ttl, minimum)`; capped like CoreDNS.
fn cache_ttl(rcode: ResponseCode, answers: &[Record], authorities: &[Record]) -> u32 {
    let negative = rcode == ResponseCode::NXDomain || answers.is_empty();
    if negative {
        let soa = authorities.iter().find_map(|r| match &r.data {
            RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
            _ => None,
        });
        return soa.unwrap_or(DEFAULT_DENIAL_TTL).min(MAX_DENIAL_TTL);
    }
    answers
        .iter()
        .chain(authorities)
        .map(|r| r.ttl)
        .min()
        .unwrap_or(0)
        .min(MAX_SUCCESS_TTL)
}

/// A cache lookup result.
#[derive(Debug, Clone)]
pub enum Hit {
    /// Within its TTL.
    Fresh(Arc<Cached>),
    /// Expired but within the serve-stale window: usable only when upstreams fail.
    Stale(Arc<Cached>),
}

/// One lock's worth of the cache.
type Shard = Mutex<HashMap<CacheKey, Arc<Cached>>>;

/// The cache: `SHARDS` mutex-guarded maps, bounded in total entries.
pub struct Cache {
    shards: Box<[Shard]>,
    hasher: RandomState,
    per_shard: usize,
    serve_stale: Duration,
    entries: AtomicUsize,
}

impl Cache {
    /// A cache for about `capacity` answers, keeping expired ones `serve_stale` longer.
    pub fn new(capacity: usize, serve_stale: Duration) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            per_shard: capacity.div_ceil(SHARDS),
            serve_stale,
            entries: AtomicUsize::new(0),
        }
    }

    fn shard(&self, key: &CacheKey) -> &Shard {
        let index = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        &self.shards[index]
    }

    /// The entry for `key` if fresh or still servable stale at `now`.
    pub fn get(&self, key: &CacheKey, now: Instant) -> Option<Hit> {
        if self.per_shard == 0 {
            return None;
        }
        let mut shard = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        let entry = shard.get(key)?.clone();
        if entry.is_fresh(now) {
            return Some(Hit::Fresh(entry));
        }
        let expiry = entry.stored + Duration::from_secs(entry.ttl.into());
        if now.saturating_duration_since(expiry) <= self.serve_stale {
            return Some(Hit::Stale(entry));
        }
        shard.remove(key);
        self.entries.fetch_sub(1, Ordering::Relaxed);
        None
    }

    /// Stores an answer, evicting another entry of the shard when it is full.
    pub fn insert(&self, key: CacheKey, value: Arc<Cached>) {
        if self.per_shard == 0 {
            return;
        }
        let mut shard = self.shard(&key).lock().unwrap_or_else(|e| e.into_inner());
        if !shard.contains_key(&key) && shard.len() >= self.per_shard {
            // Hash order makes this an effectively random victim, like CoreDNS's cache.
            if let Some(victim) = shard.keys().next().cloned() {
                shard.remove(&victim);
                self.entries.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if shard.insert(key, value).is_none() {
            self.entries.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, SOA};

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn a(ttl: u32) -> Record {
        Record::from_rdata(name("x.example."), ttl, RData::A(A::new(192, 0, 2, 1)))
    }

    fn soa(ttl: u32, minimum: u32) -> Record {
        let soa = SOA::new(name("ns."), name("h."), 1, 1, 1, 1, minimum);
        Record::from_rdata(name("example."), ttl, RData::SOA(soa))
    }

    #[test]
    fn ttls_positive_negative_and_capped() {
        let now = Instant::now();
        let pos = Cached::new(
            ResponseCode::NoError,
            vec![a(60), a(30)],
            vec![],
            vec![],
            now,
        );
        assert_eq!(pos.ttl, 30);
        let big = Cached::new(ResponseCode::NoError, vec![a(86400)], vec![], vec![], now);
        assert_eq!(big.ttl, MAX_SUCCESS_TTL);
        let nx = Cached::new(
            ResponseCode::NXDomain,
            vec![],
            vec![soa(900, 60)],
            vec![],
            now,
        );
        assert_eq!(nx.ttl, 60, "negative TTL = min(SOA TTL, SOA minimum)");
        let nodata = Cached::new(
            ResponseCode::NoError,
            vec![],
            vec![soa(10, 60)],
            vec![],
            now,
        );
        assert_eq!(nodata.ttl, 10);
        let bare = Cached::new(ResponseCode::NXDomain, vec![], vec![], vec![], now);
        assert_eq!(bare.ttl, DEFAULT_DENIAL_TTL);
    }

    #[test]
    fn fresh_then_stale_then_gone_case_insensitive() {
        let cache = Cache::new(100, Duration::from_secs(10));
        let t0 = Instant::now();
        let entry = Arc::new(Cached::new(
            ResponseCode::NoError,
            vec![a(5)],
            vec![],
            vec![],
            t0,
        ));
        cache.insert(CacheKey::new(&name("X.Example."), RecordType::A), entry);
        let key = CacheKey::new(&name("x.example."), RecordType::A);
        assert!(matches!(cache.get(&key, t0), Some(Hit::Fresh(_))));
        assert!(matches!(
            cache.get(&key, t0 + Duration::from_secs(6)),
            Some(Hit::Stale(_))
        ));
        assert!(cache.get(&key, t0 + Duration::from_secs(16)).is_none());
        assert!(cache.is_empty());
        assert!(cache
            .get(&CacheKey::new(&name("x.example."), RecordType::AAAA), t0)
            .is_none());
    }

    #[test]
    fn bounded_size() {
        let cache = Cache::new(32, Duration::ZERO);
        let now = Instant::now();
        for i in 0..1000 {
            let entry = Arc::new(Cached::new(
                ResponseCode::NoError,
                vec![a(60)],
                vec![],
                vec![],
                now,
            ));
            cache.insert(
                CacheKey::new(&name(&format!("n{i}.example.")), RecordType::A),
                entry,
            );
        }
        assert!(cache.len() <= 32, "{}", cache.len());
        assert!(cache.len() >= 16);
        let zero = Cache::new(0, Duration::ZERO);
        let entry = Arc::new(Cached::new(
            ResponseCode::NoError,
            vec![a(60)],
            vec![],
            vec![],
            now,
        ));
        zero.insert(CacheKey::new(&name("a."), RecordType::A), entry);
        assert!(zero.is_empty());
    }
}
