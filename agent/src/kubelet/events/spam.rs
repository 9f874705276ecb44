//! The per-object rate limit of client-go's EventSourceObjectSpamFilter: a token bucket per
//! source and involved object, 25 events of burst refilled at one per 5 minutes.

use jiff::Timestamp;

use super::cache::Lru;

/// Events a source may emit about one object at once.
pub const BURST: f64 = 25.0;
/// Refill: one event per 300 s.
pub const QPS: f64 = 1.0 / 300.0;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Timestamp,
}

/// The token buckets, keyed by source and involved object.
#[derive(Debug)]
pub struct SpamFilter {
    buckets: Lru<Bucket>,
}

impl SpamFilter {
    /// Buckets for up to `capacity` objects.
    pub fn new(capacity: usize) -> Self {
        SpamFilter {
            buckets: Lru::new(capacity),
        }
    }

    /// Whether an event under `key` at `now` is over the limit (and must be dropped).
    pub fn filter(&mut self, key: &str, now: Timestamp) -> bool {
        let mut bucket = self.buckets.get_mut(key).copied().unwrap_or(Bucket {
            tokens: BURST,
            last: now,
        });
        let elapsed = now.duration_since(bucket.last).as_secs_f64().max(0.0);
        bucket.tokens = (bucket.tokens + elapsed * QPS).min(BURST);
        bucket.last = now;
        let accepted = bucket.tokens >= 1.0;
        if accepted {
            bucket.tokens -= 1.0;
        }
        self.buckets.put(key.to_owned(), bucket);
        !accepted
    }
}

#[cfg(test)]
mod tests {
    use jiff::SignedDuration;

    use super::*;

    #[test]
    fn bursts_25_then_one_per_five_minutes() {
        let mut filter = SpamFilter::new(16);
        let start = Timestamp::from_second(1_000_000).unwrap();
        for i in 0..25 {
            assert!(!filter.filter("pod-a", start), "event {i} of the burst");
        }
        assert!(filter.filter("pod-a", start));
        // Another object has its own bucket.
        assert!(!filter.filter("pod-b", start));
        let later = |secs| start + SignedDuration::from_secs(secs);
        assert!(filter.filter("pod-a", later(299)));
        assert!(!filter.filter("pod-a", later(301)));
        assert!(filter.filter("pod-a", later(302)));
        assert!(!filter.filter("pod-a", later(602)));
    }
}
