//! Restart and image-pull back-off with the kubelet's flowcontrol semantics: the first
//! failure retries at once and arms 10 s; each failure inside the window doubles it up to a
//! cap (5 min); an entry idle for twice the cap (10 min) is forgotten.

use std::collections::HashMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// Back-off bounds.
#[derive(Debug, Clone, Copy)]
pub struct BackoffPolicy {
    /// The first delay.
    pub initial: Duration,
    /// The largest delay.
    pub max: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    delay: Duration,
    last_update: Timestamp,
}

/// Back-off state per key (container name, or image).
#[derive(Debug, Default)]
pub struct Backoff {
    policy: BackoffPolicy,
    entries: HashMap<String, Entry>,
}

fn plus(at: Timestamp, d: Duration) -> Timestamp {
    let d = SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX);
    at.checked_add(d).unwrap_or(Timestamp::MAX)
}

impl Backoff {
    /// Empty state under `policy`.
    pub fn new(policy: BackoffPolicy) -> Self {
        Self {
            policy,
            entries: HashMap::new(),
        }
    }

    fn expired(&self, entry: &Entry, event: Timestamp) -> bool {
        event > plus(entry.last_update, self.policy.max.saturating_mul(2))
    }

    /// While the failure at `event` is still inside its back-off window, when the window
    /// ends; `None` when a retry may run now (call [`Self::next`] before retrying).
    pub fn blocked_until(&self, key: &str, event: Timestamp, now: Timestamp) -> Option<Timestamp> {
        let entry = self.entries.get(key)?;
        if self.expired(entry, event) {
            return None;
        }
        let until = plus(event, entry.delay);
        (now < until).then_some(until)
    }

    /// Record a retry after the failure at `event`: arm the initial delay, or double it.
    pub fn next(&mut self, key: &str, event: Timestamp, now: Timestamp) {
        let fresh = Entry {
            delay: self.policy.initial,
            last_update: now,
        };
        let entry = match self.entries.get(key) {
            Some(entry) if !self.expired(entry, event) => Entry {
                delay: entry.delay.saturating_mul(2).min(self.policy.max),
                last_update: now,
            },
            _ => fresh,
        };
        self.entries.insert(key.to_owned(), entry);
    }

    /// Start from `restarts` already made (adopted containers), so an agent restart does
    /// not reset a crash loop.
    pub fn seed(&mut self, key: &str, restarts: u32, last_update: Timestamp) {
        if restarts == 0 || self.entries.contains_key(key) {
            return;
        }
        let doublings = (restarts - 1).min(30);
        let delay = self
            .policy
            .initial
            .saturating_mul(1u32 << doublings)
            .min(self.policy.max);
        self.entries
            .insert(key.to_owned(), Entry { delay, last_update });
    }

    /// The armed delay for `key` (for messages like `back-off 20s`).
    pub fn delay(&self, key: &str) -> Duration {
        self.entries
            .get(key)
            .map_or(self.policy.initial, |e| e.delay)
    }

    /// Forget `key` (an image pulled at last).
    pub fn reset(&mut self, key: &str) {
        self.entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    /// Crash at once after every restart; return the times restarts happened.
    fn crash_loop(backoff: &mut Backoff, crashes: usize) -> Vec<i64> {
        let (mut now, mut restarts) = (0, Vec::new());
        for _ in 0..crashes {
            let finished = at(now);
            while let Some(until) = backoff.blocked_until("c", finished, at(now)) {
                now = until.as_second() - 1_700_000_000;
            }
            backoff.next("c", finished, at(now));
            restarts.push(now);
        }
        restarts
    }

    #[test]
    fn the_first_retry_is_immediate_then_delays_double_to_the_cap() {
        let mut backoff = Backoff::new(BackoffPolicy::default());
        let restarts = crash_loop(&mut backoff, 9);
        let gaps: Vec<i64> = restarts.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(restarts[0], 0);
        assert_eq!(gaps, [10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff.delay("c").as_secs(), 300);
    }

    #[test]
    fn a_failure_long_after_the_last_starts_over() {
        let mut backoff = Backoff::new(BackoffPolicy::default());
        crash_loop(&mut backoff, 4);
        let late = at(10_000);
        assert_eq!(backoff.blocked_until("c", late, late), None);
        backoff.next("c", late, late);
        assert_eq!(backoff.delay("c").as_secs(), 10);
    }

    #[test]
    fn seeds_carry_a_crash_loop_over_an_agent_restart() {
        let mut backoff = Backoff::new(BackoffPolicy::default());
        backoff.seed("c", 3, at(0));
        assert_eq!(backoff.delay("c").as_secs(), 40);
        assert_eq!(backoff.blocked_until("c", at(5), at(6)), Some(at(45)));
        backoff.seed("fresh", 0, at(0));
        assert_eq!(backoff.blocked_until("fresh", at(5), at(6)), None);
    }
}
