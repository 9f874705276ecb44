//! Exponential back-off with jitter for calls to the API server, so a restarted server is
//! not hit by every node at the same instant. Capped low enough ([`API_RETRY_MAX`]) that
//! node and pod statuses converge within seconds of the server's return.

use std::time::Duration;

/// First delay after a failed API call.
pub const API_RETRY_MIN: Duration = Duration::from_millis(200);
/// Longest delay between attempts while the API server is away.
pub const API_RETRY_MAX: Duration = Duration::from_secs(4);

/// Doubling delays between `initial` and `max`, each spread by ±20 %.
#[derive(Debug, Clone)]
pub struct Retry {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Retry {
    /// The policy for calls to the API server.
    pub fn api() -> Self {
        Retry::new(API_RETRY_MIN, API_RETRY_MAX)
    }

    /// A back-off starting at `initial`, capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Retry {
            initial,
            max,
            current: initial,
        }
    }

    /// The delay before the next attempt; doubles the one after.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        jitter(base)
    }

    /// Back to the initial delay after a success.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

/// Watch streams take the same policy (`WatchStreamExt::backoff`).
impl Iterator for Retry {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(self.next_delay())
    }
}

impl kube::runtime::utils::Backoff for Retry {
    fn reset(&mut self) {
        Retry::reset(self);
    }
}

fn jitter(base: Duration) -> Duration {
    let spread = rand::random_range(0.8..1.2);
    base.mul_f64(spread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_reset() {
        let mut retry = Retry::new(Duration::from_millis(100), Duration::from_millis(400));
        let delays: Vec<u128> = (0..4).map(|_| retry.next_delay().as_millis()).collect();
        let bounds = [(80, 120), (160, 240), (320, 480), (320, 480)];
        for (delay, (low, high)) in delays.iter().zip(bounds) {
            assert!((low..=high).contains(delay), "{delays:?}");
        }
        retry.reset();
        assert!(retry.next_delay() <= Duration::from_millis(120));
    }
}
