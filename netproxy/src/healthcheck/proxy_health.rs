//! The proxy's health state (kube-proxy's ProxyHealthServer without the HTTP): unhealthy once a
//! queued change has waited longer than the timeout without a successful sync.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

/// Time source, injectable so tests can move time without sleeping.
pub trait Clock: Send + Sync {
    /// Monotonic time, for how long an update has been pending (immune to wall-clock steps).
    fn instant(&self) -> Instant;
    /// Wall-clock time, for the timestamps reported in the JSON body.
    fn wall(&self) -> SystemTime;
}

/// The real clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn instant(&self) -> Instant {
        Instant::now()
    }

    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// One reading of the proxy's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthStatus {
    /// No queued change has waited for a sync as long as the timeout.
    pub healthy: bool,
    /// When the rules were last synced successfully (`None`: never).
    pub last_updated: Option<SystemTime>,
    /// The clock's wall time at this reading.
    pub current_time: SystemTime,
    /// The Node is neither being deleted nor tainted ToBeDeletedByClusterAutoscaler.
    pub node_eligible: bool,
}

/// Shared proxy health: the sync loop reports into it, the HTTP handlers read it.
#[derive(Clone)]
pub struct ProxyHealth {
    timeout: Duration,
    clock: Arc<dyn Clock>,
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    last_updated: Option<SystemTime>,
    /// The first change queued since the last successful sync.
    oldest_pending: Option<Instant>,
    node_eligible: bool,
}

impl ProxyHealth {
    /// Health on the real clock; kube-proxy uses twice its sync period as `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self::with_clock(timeout, Arc::new(SystemClock))
    }

    /// Health on an injected clock.
    pub fn with_clock(timeout: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            timeout,
            clock,
            state: Arc::new(Mutex::new(State {
                last_updated: None,
                oldest_pending: None,
                // Eligible while starting up, until a Node event says otherwise (as kube-proxy).
                node_eligible: true,
            })),
        }
    }

    /// A Service or EndpointSlice change arrived that the rules do not reflect yet.
    pub fn queued_update(&self) {
        let now = self.clock.instant();
        // Only the oldest pending change counts: later ones must not push the deadline out.
        self.lock().oldest_pending.get_or_insert(now);
    }

    /// The rules were synced successfully and reflect everything queued so far.
    pub fn updated(&self) {
        let now = self.clock.wall();
        let mut state = self.lock();
        state.oldest_pending = None;
        state.last_updated = Some(now);
    }

    /// Record whether the Node may take load-balancer traffic (false while it is being deleted
    /// or carries the ToBeDeletedByClusterAutoscaler taint).
    pub fn set_node_eligible(&self, eligible: bool) {
        self.lock().node_eligible = eligible;
    }

    /// The proxy's own health, ignoring the Node's eligibility.
    pub fn is_healthy(&self) -> bool {
        self.status().healthy
    }

    /// Read everything the health endpoints report, at one instant.
    pub fn status(&self) -> HealthStatus {
        let now = self.clock.instant();
        let current_time = self.clock.wall();
        let state = self.lock();
        let late = state
            .oldest_pending
            .is_some_and(|queued| now.saturating_duration_since(queued) >= self.timeout);
        HealthStatus {
            healthy: !late,
            last_updated: state.last_updated,
            current_time,
            node_eligible: state.node_eligible,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding it: every write is a
        // single field assignment.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A clock that only moves when told to.
    pub(crate) struct FakeClock {
        start: (Instant, SystemTime),
        offset: Mutex<Duration>,
    }

    impl FakeClock {
        pub(crate) fn new() -> Arc<Self> {
            Arc::new(Self {
                start: (
                    Instant::now(),
                    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
                ),
                offset: Mutex::new(Duration::ZERO),
            })
        }

        pub(crate) fn advance(&self, by: Duration) {
            *self.offset.lock().unwrap() += by;
        }
    }

    impl Clock for FakeClock {
        fn instant(&self) -> Instant {
            self.start.0 + *self.offset.lock().unwrap()
        }

        fn wall(&self) -> SystemTime {
            self.start.1 + *self.offset.lock().unwrap()
        }
    }

    const TIMEOUT: Duration = Duration::from_secs(60);

    fn health() -> (ProxyHealth, Arc<FakeClock>) {
        let clock = FakeClock::new();
        (ProxyHealth::with_clock(TIMEOUT, clock.clone()), clock)
    }

    #[test]
    fn healthy_while_starting_and_nothing_is_queued() {
        let (health, clock) = health();
        clock.advance(TIMEOUT * 10);
        let status = health.status();
        assert!(status.healthy);
        assert!(status.node_eligible);
        assert_eq!(status.last_updated, None);
        assert_eq!(status.current_time, clock.wall());
    }

    #[test]
    fn a_change_pending_for_the_timeout_is_unhealthy_until_synced() {
        let (health, clock) = health();
        health.queued_update();
        clock.advance(TIMEOUT - Duration::from_millis(1));
        assert!(health.is_healthy(), "not late yet");
        clock.advance(Duration::from_millis(1));
        assert!(!health.is_healthy(), "late at exactly the timeout");
        health.updated();
        let status = health.status();
        assert!(status.healthy);
        assert_eq!(status.last_updated, Some(clock.wall()));
    }

    #[test]
    fn later_changes_do_not_extend_the_deadline() {
        let (health, clock) = health();
        health.queued_update();
        clock.advance(TIMEOUT / 2);
        health.queued_update();
        clock.advance(TIMEOUT / 2);
        assert!(!health.is_healthy());
    }

    #[test]
    fn node_eligibility_is_reported_apart_from_health() {
        let (health, _clock) = health();
        health.set_node_eligible(false);
        let status = health.status();
        assert!(status.healthy);
        assert!(!status.node_eligible);
        health.set_node_eligible(true);
        assert!(health.status().node_eligible);
    }
}
