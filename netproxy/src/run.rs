//! The debounced sync loop: waits for store changes, syncs at most every minSyncPeriod, runs a
//! full (kernel-verifying) sync every syncPeriod, clears stale UDP conntrack entries.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};

use crate::conntrack::Conntrack;
use crate::model::ClusterState;
use crate::proxier::{Proxier, StaleUdp, SyncReport};

/// How often to ask again while the stores have not finished their initial lists.
const SNAPSHOT_RETRY: Duration = Duration::from_millis(100);

/// Told about the loop's progress (the health server implements it).
pub trait SyncObserver: Send {
    /// A change arrived and a sync is queued.
    fn change_queued(&mut self);
    /// A sync succeeded.
    fn synced(&mut self, report: &SyncReport);
}

/// Runs `proxier` until `shutdown` resolves or `changes` closes.
///
/// `snapshot()` returns `None` until every store has completed its initial list; no sync
/// happens before that (an empty view would delete every rule after a restart). Stale UDP
/// conntrack entries of each sync are deleted here, over ctnetlink.
pub async fn run(
    mut proxier: Proxier,
    mut changes: watch::Receiver<u64>,
    snapshot: impl Fn() -> Option<ClusterState> + Send + 'static,
    mut observer: Option<Box<dyn SyncObserver>>,
    shutdown: impl Future<Output = ()>,
) {
    let min = proxier.min_sync_period();
    let period = proxier.sync_period();
    let mut pending = true;
    let mut last_sync: Option<Instant> = None;
    let mut last_full: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let now = Instant::now();
        let full_at = last_full.map_or(now, |t| t + period);
        let wake = if pending {
            last_sync.map_or(now, |t| t + min).min(full_at).max(now)
        } else {
            full_at
        };
        tokio::select! {
            biased;
            () = &mut shutdown => return,
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                pending = true;
                if let Some(o) = observer.as_mut() {
                    o.change_queued();
                }
            }
            () = sleep_until(wake) => {
                let Some(state) = snapshot() else {
                    // Not listed yet: look again soon, without counting it as a sync.
                    pending = true;
                    last_sync = Some(Instant::now() - min + SNAPSHOT_RETRY.min(min));
                    continue;
                };
                let full = Instant::now() >= full_at;
                pending = false;
                let (back, result) = match tokio::task::spawn_blocking(move || {
                    let result = proxier.sync(&state, full);
                    if let Ok(report) = &result {
                        clear_conntrack(&report.stale_udp);
                    }
                    (proxier, result)
                })
                .await
                {
                    Ok(done) => done,
                    Err(err) => {
                        tracing::error!(error = %err, "the proxy sync task panicked; stopping the proxy");
                        return;
                    }
                };
                proxier = back;
                last_sync = Some(Instant::now());
                match result {
                    Ok(report) => {
                        if full {
                            last_full = last_sync;
                        }
                        for r in &report.rejected {
                            tracing::warn!(kind = r.kind, namespace = %r.namespace, name = %r.name, reason = %r.reason, "skipping an invalid object");
                        }
                        if let Some(o) = observer.as_mut() {
                            o.synced(&report);
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "nftables sync failed; retrying");
                        pending = true;
                    }
                }
            }
        }
    }
}

/// Delete conntrack entries of UDP flows towards removed endpoints (best effort).
fn clear_conntrack(stale: &[StaleUdp]) {
    if stale.is_empty() {
        return;
    }
    let mut ct = match Conntrack::open() {
        Ok(ct) => ct,
        Err(err) => {
            tracing::warn!(error = %err, "cannot clear stale UDP conntrack entries");
            return;
        }
    };
    for s in stale {
        if let Err(err) = ct.clear_udp_service(s.vip, s.port, s.endpoint) {
            tracing::warn!(error = %err, vip = %s.vip, port = s.port, "clearing UDP conntrack entries failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use prometheus_client::registry::Registry;

    use super::*;
    use crate::config::{GoDuration, ProxyConfig};
    use crate::metrics::ProxyMetrics;
    use crate::model::NodeContext;
    use crate::testutil::Recorder;

    struct Count(Arc<std::sync::Mutex<(usize, usize)>>);

    impl SyncObserver for Count {
        fn change_queued(&mut self) {
            self.0.lock().unwrap().0 += 1;
        }
        fn synced(&mut self, _: &SyncReport) {
            self.0.lock().unwrap().1 += 1;
        }
    }

    #[tokio::test]
    async fn no_sync_before_the_stores_are_listed_and_stop_when_changes_close() {
        let mut config = ProxyConfig::default();
        config.nftables.min_sync_period = GoDuration(Duration::from_millis(10));
        let rec = Recorder::default();
        let metrics = ProxyMetrics::register(&mut Registry::default());
        let proxier = Proxier::new(
            &config,
            NodeContext::default(),
            Box::new(rec.clone()),
            metrics,
        )
        .unwrap();
        let listed = Arc::new(AtomicBool::new(false));
        let flag = listed.clone();
        let snapshot = move || flag.load(Ordering::SeqCst).then(ClusterState::default);
        let (tx, rx) = watch::channel(0u64);
        let counts = Arc::new(std::sync::Mutex::new((0, 0)));
        let observer: Box<dyn SyncObserver> = Box::new(Count(counts.clone()));
        let task = tokio::spawn(run(
            proxier,
            rx,
            snapshot,
            Some(observer),
            std::future::pending(),
        ));

        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            rec.scripts.lock().unwrap().is_empty(),
            "synced before the initial list"
        );
        listed.store(true, Ordering::SeqCst);
        tx.send(1).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            rec.scripts.lock().unwrap().len(),
            1,
            "one full sync declaring the tables"
        );
        assert_eq!(*counts.lock().unwrap(), (1, 1));
        drop(tx);
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .unwrap()
            .unwrap();
    }
}
