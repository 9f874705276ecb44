//! The pod lifecycle event generator: container changes pushed by the runtime
//! (GetContainerEvents) wake the owning worker. Runtimes without the stream (containerd
//! 1.6) get the kubelet's generic PLEG instead: a relist every second, diffed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::Shared;
use crate::kubelet::convert::POD_UID_LABEL;

/// Relist period of the generic PLEG (the kubelet's is 1 s).
const RELIST: Duration = Duration::from_secs(1);
/// Pause before re-opening a broken event stream.
const RECONNECT: Duration = Duration::from_millis(500);

/// Start the event generator; abort the handle to stop it (it holds a streaming call open,
/// which a runtime shutting down gracefully would wait for).
pub(super) fn spawn(shared: Arc<Shared>) -> tokio::task::AbortHandle {
    let task = tokio::spawn(async move {
        loop {
            match shared.cri.container_events().await {
                Ok(mut events) => {
                    // Anything may have changed while no stream was open.
                    shared.wake_all();
                    while let Some(Ok(event)) = events.next().await {
                        dispatch(&shared, &event);
                    }
                    tracing::debug!("runtime event stream ended; reopening");
                }
                Err(e) if e.code() == tonic::Code::Unimplemented => {
                    tracing::info!("runtime has no container events; relisting every second");
                    return relist(shared).await;
                }
                Err(e) => tracing::debug!(error = %e, "runtime event stream unavailable"),
            }
            tokio::time::sleep(RECONNECT).await;
        }
    });
    task.abort_handle()
}

fn dispatch(shared: &Shared, event: &k8s_cri::v1::ContainerEventResponse) {
    if shared.wake_container(&event.container_id) {
        return;
    }
    let uid = event
        .pod_sandbox_status
        .as_ref()
        .and_then(|s| s.labels.get(POD_UID_LABEL))
        .or_else(|| {
            let mut statuses = event.containers_statuses.iter();
            statuses.find_map(|s| s.labels.get(POD_UID_LABEL))
        });
    if let Some(uid) = uid {
        shared.wake_pod(uid);
    }
}

async fn relist(shared: Arc<Shared>) {
    let mut last: HashMap<String, (i32, String)> = HashMap::new();
    loop {
        tokio::time::sleep(RELIST).await;
        let Ok(containers) = shared.cri.list_containers(HashMap::new()).await else {
            continue;
        };
        let mut now = HashMap::with_capacity(containers.len());
        for c in containers {
            let uid = c.labels.get(POD_UID_LABEL).cloned().unwrap_or_default();
            now.insert(c.id, (c.state, uid));
        }
        for (id, (state, uid)) in &now {
            if last.get(id).map(|(s, _)| s) != Some(state) {
                shared.wake_pod(uid);
            }
        }
        for (id, (_, uid)) in &last {
            if !now.contains_key(id) {
                shared.wake_pod(uid);
            }
        }
        last = now;
    }
}
