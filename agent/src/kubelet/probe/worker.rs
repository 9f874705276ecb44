//! The periodic probe worker for one container instance and one probe kind, with the
//! kubelet worker's timing, thresholds and initial values.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Probe;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::{run_once, ContainerExec, ProbeKind, ProbeResult, ProbeTarget};

/// How often the kubelet runs a probe whose attempt errored before giving up on the period.
const MAX_ATTEMPTS: usize = 3;

/// The kubelet's event reason for failed and errored probes.
const REASON_UNHEALTHY: &str = "Unhealthy";

/// The kubelet's event reason for probes passing with a warning.
const REASON_WARNING: &str = "ProbeWarning";

/// What a worker needs to probe one container instance.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Which probe this is.
    pub kind: ProbeKind,
    /// The probe spec (unset or non-positive fields take the API defaults).
    pub probe: Probe,
    /// The container and where its probes go.
    pub target: ProbeTarget,
    /// When the container started: `initialDelaySeconds` counts from here.
    pub started_at: Instant,
    /// Liveness and readiness wait until this is true (the startup probe passed, or there is
    /// none); None probes without waiting. A sender dropped while false stops the worker.
    pub started: Option<watch::Receiver<bool>>,
}

/// The thresholded result of a probe, as the kubelet's results manager holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeState {
    /// No result yet (the startup probe's initial value).
    Unknown,
    /// Passed `successThreshold` times in a row (liveness starts here).
    Success,
    /// Failed `failureThreshold` times in a row (readiness starts here).
    Failure,
}

/// An event to record on the pod for the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeEvent {
    /// The event reason: `Unhealthy` or `ProbeWarning` (type Warning for both).
    pub reason: &'static str,
    /// The kubelet's message, e.g. `Readiness probe failed: HTTP probe failed with statuscode: 500`.
    pub message: String,
}

/// What a worker reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeUpdateKind {
    /// The thresholded result changed.
    State(ProbeState),
    /// An attempt failed, errored or warned.
    Event(ProbeEvent),
}

/// A report from a worker, naming the container it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeUpdate {
    /// Which probe reports.
    pub kind: ProbeKind,
    /// The container's name in the pod spec.
    pub container_name: String,
    /// The CRI container ID of the probed instance.
    pub container_id: String,
    /// The report.
    pub update: ProbeUpdateKind,
}

/// A running worker; dropping it stops the probing.
#[derive(Debug)]
pub struct ProbeWorker {
    state: watch::Receiver<ProbeState>,
    task: JoinHandle<()>,
}

impl ProbeWorker {
    /// The current thresholded result.
    pub fn state(&self) -> ProbeState {
        *self.state.borrow()
    }

    /// A receiver of the thresholded result (it keeps the last value once the worker ends).
    pub fn watch(&self) -> watch::Receiver<ProbeState> {
        self.state.clone()
    }
}

impl Drop for ProbeWorker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts probing `config.target` and reporting on `updates`. A liveness or startup worker
/// stops after reporting Failure (the container is restarted, with new workers), a startup
/// worker after reporting Success.
pub fn spawn<E: ContainerExec>(
    config: WorkerConfig,
    exec: E,
    updates: mpsc::UnboundedSender<ProbeUpdate>,
) -> ProbeWorker {
    let initial = match config.kind {
        ProbeKind::Startup => ProbeState::Unknown,
        ProbeKind::Liveness => ProbeState::Success,
        ProbeKind::Readiness => ProbeState::Failure,
    };
    let (state_tx, state) = watch::channel(initial);
    let task = tokio::spawn(run(config, exec, state_tx, updates));
    ProbeWorker { state, task }
}

/// The container start time CRI reports (nanoseconds since the epoch) on the monotonic clock;
/// a time in the future or before the clock's origin counts as now.
pub fn instant_from_unix_nanos(nanos: i64) -> Instant {
    let now = Instant::now();
    let at = UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).unwrap_or(0));
    SystemTime::now()
        .duration_since(at)
        .ok()
        .and_then(|ago| now.checked_sub(ago))
        .unwrap_or(now)
}

/// A probe's timing with the API defaults for unset and non-positive values.
struct Timing {
    initial_delay: Duration,
    period: Duration,
    success_threshold: u32,
    failure_threshold: u32,
}

impl Timing {
    fn of(probe: &Probe) -> Self {
        let positive = |v: Option<i32>, default: u32| {
            v.and_then(|v| u32::try_from(v).ok())
                .filter(|v| *v > 0)
                .unwrap_or(default)
        };
        Timing {
            initial_delay: Duration::from_secs(positive(probe.initial_delay_seconds, 0).into()),
            period: Duration::from_secs(positive(probe.period_seconds, 10).into()),
            success_threshold: positive(probe.success_threshold, 1),
            failure_threshold: positive(probe.failure_threshold, 3),
        }
    }
}

async fn run<E: ContainerExec>(
    config: WorkerConfig,
    exec: E,
    state: watch::Sender<ProbeState>,
    updates: mpsc::UnboundedSender<ProbeUpdate>,
) {
    let WorkerConfig {
        kind,
        probe,
        target,
        started_at,
        started,
    } = config;
    let timing = Timing::of(&probe);
    let report = |update: ProbeUpdateKind| {
        // A closed channel means the pod worker is gone and drops this worker next.
        let _ = updates.send(ProbeUpdate {
            kind,
            container_name: target.container.name.clone(),
            container_id: target.container_id.clone(),
            update,
        });
    };

    if let Some(mut started) = started {
        if started.wait_for(|s| *s).await.is_err() {
            return;
        }
    }
    tokio::time::sleep_until(started_at + timing.initial_delay).await;

    let mut ticker = tokio::time::interval(timing.period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut last: Option<ProbeState> = None;
    let mut run_length = 0u32;
    loop {
        ticker.tick().await;
        let outcome = match attempt(kind, &probe, &target, &exec, &report).await {
            Some(outcome) => outcome,
            None => continue,
        };
        if last == Some(outcome) {
            run_length = run_length.saturating_add(1);
        } else {
            last = Some(outcome);
            run_length = 1;
        }
        let threshold = match outcome {
            ProbeState::Success => timing.success_threshold,
            _ => timing.failure_threshold,
        };
        if run_length < threshold {
            continue;
        }
        if state.send_if_modified(|s| std::mem::replace(s, outcome) != outcome) {
            report(ProbeUpdateKind::State(outcome));
        }
        // On hold until the restarted container gets new workers; a passed startup probe is
        // not run again for this container.
        let done = matches!(
            (kind, outcome),
            (
                ProbeKind::Liveness | ProbeKind::Startup,
                ProbeState::Failure
            ) | (ProbeKind::Startup, ProbeState::Success)
        );
        if done {
            return;
        }
    }
}

/// One period's probe: errored attempts are retried and then discarded (None), as the
/// kubelet's `runProbeWithRetries`; failures and warnings are reported as events.
async fn attempt<E: ContainerExec>(
    kind: ProbeKind,
    probe: &Probe,
    target: &ProbeTarget,
    exec: &E,
    report: &impl Fn(ProbeUpdateKind),
) -> Option<ProbeState> {
    let event = |reason: &'static str, message: String| {
        report(ProbeUpdateKind::Event(ProbeEvent { reason, message }));
    };
    let mut result = run_once(probe, target, exec).await;
    for _ in 1..MAX_ATTEMPTS {
        if !matches!(result, ProbeResult::Unknown(_)) {
            break;
        }
        result = run_once(probe, target, exec).await;
    }
    match result {
        ProbeResult::Success => Some(ProbeState::Success),
        ProbeResult::Warning(message) => {
            event(REASON_WARNING, format!("{kind} probe warning: {message}"));
            Some(ProbeState::Success)
        }
        ProbeResult::Failure(message) => {
            event(REASON_UNHEALTHY, format!("{kind} probe failed: {message}"));
            Some(ProbeState::Failure)
        }
        ProbeResult::Unknown(message) => {
            event(
                REASON_UNHEALTHY,
                format!("{kind} probe errored and resulted in unknown state: {message}"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::probe::test_support::{target, FakeExec};
    use crate::kubelet::probe::{ExecError, ExecResult};
    use k8s_openapi::api::core::v1::ExecAction;
    use std::sync::{Arc, Mutex};

    /// A probe whose attempts answer from `script` in turn (the last answer repeats), and the
    /// times (since `origin`) at which attempts ran.
    struct Scripted {
        exec: FakeExec,
        times: Arc<Mutex<Vec<Duration>>>,
    }

    #[derive(Clone, Copy)]
    enum Answer {
        Pass,
        Fail,
        Error,
    }

    fn scripted(origin: Instant, script: Vec<Answer>) -> Scripted {
        let times = Arc::new(Mutex::new(Vec::new()));
        let recorded = times.clone();
        let exec = FakeExec::new(move |_, _, _| {
            let mut times = recorded.lock().unwrap();
            let answer = script[times.len().min(script.len() - 1)];
            times.push(origin.elapsed());
            match answer {
                Answer::Pass => Ok(ExecResult::default()),
                Answer::Fail => Ok(ExecResult {
                    exit_code: 1,
                    stdout: b"bad".to_vec(),
                    stderr: Vec::new(),
                }),
                Answer::Error => Err(ExecError::Failed("exec failed".into())),
            }
        });
        Scripted { exec, times }
    }

    fn config(kind: ProbeKind, probe: Probe, started_at: Instant) -> WorkerConfig {
        WorkerConfig {
            kind,
            probe: Probe {
                exec: Some(ExecAction {
                    command: Some(vec!["check".into()]),
                }),
                ..probe
            },
            target: target(None),
            started_at,
            started: None,
        }
    }

    fn secs(s: &[u64]) -> Vec<Duration> {
        s.iter().map(|s| Duration::from_secs(*s)).collect()
    }

    /// The next state update, skipping events (collected into `events`).
    async fn next_state(
        rx: &mut mpsc::UnboundedReceiver<ProbeUpdate>,
        events: &mut Vec<ProbeEvent>,
    ) -> ProbeState {
        loop {
            match rx.recv().await.map(|u| u.update) {
                Some(ProbeUpdateKind::State(s)) => return s,
                Some(ProbeUpdateKind::Event(e)) => events.push(e),
                None => panic!("worker ended without a state update"),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_honours_delay_period_and_thresholds() {
        let origin = Instant::now();
        use Answer::*;
        let s = scripted(origin, vec![Pass, Pass, Fail, Pass, Fail, Fail, Pass]);
        let probe = Probe {
            initial_delay_seconds: Some(5),
            period_seconds: Some(10),
            success_threshold: Some(2),
            failure_threshold: Some(2),
            ..Default::default()
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let worker = spawn(
            config(ProbeKind::Readiness, probe, origin),
            s.exec.clone(),
            tx,
        );
        assert_eq!(worker.state(), ProbeState::Failure);
        let mut events = Vec::new();
        assert_eq!(next_state(&mut rx, &mut events).await, ProbeState::Success);
        assert_eq!(origin.elapsed(), Duration::from_secs(15));
        assert_eq!(worker.state(), ProbeState::Success);
        // Fail, Pass, Fail, Fail: only two failures in a row flip it.
        assert_eq!(next_state(&mut rx, &mut events).await, ProbeState::Failure);
        assert_eq!(origin.elapsed(), Duration::from_secs(55));
        assert_eq!(*s.times.lock().unwrap(), secs(&[5, 15, 25, 35, 45, 55]));
        assert_eq!(
            events,
            vec![
                ProbeEvent {
                    reason: "Unhealthy",
                    message: "Readiness probe failed: bad".into()
                };
                3
            ]
        );
        drop(worker);
    }

    #[tokio::test(start_paused = true)]
    async fn liveness_uses_the_defaults_and_stops_after_failing() {
        let origin = Instant::now();
        let s = scripted(origin, vec![Answer::Fail]);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let worker = spawn(
            config(ProbeKind::Liveness, Probe::default(), origin),
            s.exec.clone(),
            tx,
        );
        assert_eq!(worker.state(), ProbeState::Success);
        let mut events = Vec::new();
        assert_eq!(next_state(&mut rx, &mut events).await, ProbeState::Failure);
        assert_eq!(events.len(), 3);
        // The worker is on hold now: nothing more is probed.
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert_eq!(*s.times.lock().unwrap(), secs(&[0, 10, 20]));
        assert!(rx.recv().await.is_none());
        assert_eq!(worker.state(), ProbeState::Failure);
    }

    #[tokio::test(start_paused = true)]
    async fn liveness_waits_for_started_and_delay_counts_from_container_start() {
        let origin = Instant::now();
        let s = scripted(origin, vec![Answer::Fail]);
        let (started_tx, started_rx) = watch::channel(false);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut cfg = config(
            ProbeKind::Liveness,
            Probe {
                initial_delay_seconds: Some(10),
                period_seconds: Some(1),
                failure_threshold: Some(1),
                ..Default::default()
            },
            origin,
        );
        cfg.started = Some(started_rx);
        let _worker = spawn(cfg, s.exec.clone(), tx);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(s.times.lock().unwrap().is_empty());
        started_tx.send_replace(true);
        let mut events = Vec::new();
        assert_eq!(next_state(&mut rx, &mut events).await, ProbeState::Failure);
        // The delay had passed already: the first probe runs as soon as the container started.
        assert_eq!(*s.times.lock().unwrap(), secs(&[30]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_start_signal_dropped_unset_stops_the_worker() {
        let origin = Instant::now();
        let s = scripted(origin, vec![Answer::Pass]);
        let (started_tx, started_rx) = watch::channel(false);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut cfg = config(ProbeKind::Readiness, Probe::default(), origin);
        cfg.started = Some(started_rx);
        let _worker = spawn(cfg, s.exec.clone(), tx);
        drop(started_tx);
        assert!(rx.recv().await.is_none());
        assert_eq!(s.exec.calls(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn startup_starts_unknown_and_stops_after_success() {
        let origin = Instant::now();
        use Answer::*;
        let s = scripted(origin, vec![Fail, Fail, Pass]);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let worker = spawn(
            config(
                ProbeKind::Startup,
                Probe {
                    period_seconds: Some(2),
                    failure_threshold: Some(30),
                    ..Default::default()
                },
                origin,
            ),
            s.exec.clone(),
            tx,
        );
        assert_eq!(worker.state(), ProbeState::Unknown);
        let mut events = Vec::new();
        assert_eq!(next_state(&mut rx, &mut events).await, ProbeState::Success);
        assert!(events
            .iter()
            .all(|e| e.message == "Startup probe failed: bad"));
        assert!(rx.recv().await.is_none());
        assert_eq!(*s.times.lock().unwrap(), secs(&[0, 2, 4]));
    }

    #[tokio::test(start_paused = true)]
    async fn errored_attempts_are_retried_reported_and_not_counted() {
        let origin = Instant::now();
        use Answer::*;
        // Period 1: Error x3 (discarded), then Pass.
        let s = scripted(origin, vec![Error, Error, Error, Pass]);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let worker = spawn(
            config(
                ProbeKind::Readiness,
                Probe {
                    period_seconds: Some(5),
                    ..Default::default()
                },
                origin,
            ),
            s.exec.clone(),
            tx,
        );
        let mut events = Vec::new();
        assert_eq!(next_state(&mut rx, &mut events).await, ProbeState::Success);
        assert_eq!(*s.times.lock().unwrap(), secs(&[0, 0, 0, 5]));
        assert_eq!(
            events,
            vec![ProbeEvent {
                reason: "Unhealthy",
                message: "Readiness probe errored and resulted in unknown state: exec failed"
                    .into()
            }]
        );
        drop(worker);
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_worker_stops_probing() {
        let origin = Instant::now();
        let s = scripted(origin, vec![Answer::Pass]);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let worker = spawn(
            config(ProbeKind::Readiness, Probe::default(), origin),
            s.exec.clone(),
            tx,
        );
        let mut events = Vec::new();
        assert_eq!(next_state(&mut rx, &mut events).await, ProbeState::Success);
        drop(worker);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(s.exec.calls(), 1);
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn unix_start_times_map_to_the_past() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        let ten_ago = instant_from_unix_nanos(now - 10_000_000_000);
        let elapsed = ten_ago.elapsed();
        assert!(elapsed >= Duration::from_secs(10) && elapsed < Duration::from_secs(11));
        assert!(instant_from_unix_nanos(now + 60_000_000_000).elapsed() < Duration::from_secs(1));
        assert!(instant_from_unix_nanos(-5) <= Instant::now());
    }
}
