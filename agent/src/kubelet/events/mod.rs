//! Kubernetes Events from the kubelet, recorded like client-go's broadcaster and recorder:
//! `record` never blocks (a bounded queue; full means dropped), a background task
//! correlates (aggregates, counts, rate limits) and writes core/v1 Events, and API errors
//! are logged, never returned.

mod cache;
mod correlator;
mod spam;

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::mpsc;

pub use correlator::{event_name, Correlator, Decision};

use crate::kubelet::bootstrap::ApiClient;

/// Events waiting to be written, as client-go's broadcaster queue.
const QUEUE: usize = 1000;
/// Attempts per event while the API server is unreachable, as client-go's maxTriesPerEvent.
const MAX_TRIES: u32 = 12;
/// The pause between attempts, as client-go's sleepDuration.
const RETRY_SLEEP: Duration = Duration::from_secs(10);
/// The component named as the source of every event.
pub const COMPONENT: &str = "kubelet";

/// Records events for one node; cheap to clone, usable from any task.
#[derive(Debug, Clone)]
pub struct EventSink {
    node: String,
    queue: mpsc::Sender<Event>,
}

impl EventSink {
    /// Start the writer task (needs a tokio runtime) for events from node `node`.
    pub fn new(client: ApiClient, node: &str) -> EventSink {
        let (queue, events) = mpsc::channel(QUEUE);
        tokio::spawn(write_events(client, events, RETRY_SLEEP));
        EventSink {
            node: node.to_owned(),
            queue,
        }
    }

    /// Record an event of `type_` (`Normal` or `Warning`) about `object`; never blocks.
    pub fn record(&self, object: &ObjectReference, type_: &str, reason: &str, message: &str) {
        let event = build(object, &self.node, type_, reason, message, Timestamp::now());
        if let Err(mpsc::error::TrySendError::Full(event)) = self.queue.try_send(event) {
            tracing::warn!(
                reason = event.reason.as_deref().unwrap_or(""),
                "event queue full: dropping the event"
            );
        }
    }
}

/// The core/v1 Event for one occurrence, as the kubelet's recorder fills it in.
fn build(
    object: &ObjectReference,
    node: &str,
    type_: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> Event {
    let namespace = object
        .namespace
        .clone()
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| "default".to_owned());
    let object_name = object.name.as_deref().unwrap_or("");
    Event {
        metadata: ObjectMeta {
            name: Some(event_name(object_name, now)),
            namespace: Some(namespace),
            ..ObjectMeta::default()
        },
        involved_object: object.clone(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        type_: Some(type_.to_owned()),
        source: Some(EventSource {
            component: Some(COMPONENT.to_owned()),
            host: Some(node.to_owned()),
        }),
        reporting_component: Some(COMPONENT.to_owned()),
        reporting_instance: Some(node.to_owned()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Event::default()
    }
}

/// The writer: correlate each event, then create or patch it.
async fn write_events(client: ApiClient, mut events: mpsc::Receiver<Event>, retry_sleep: Duration) {
    let mut correlator = Correlator::default();
    while let Some(event) = events.recv().await {
        let decision = correlator.correlate(event, Timestamp::now());
        for attempt in 1..=MAX_TRIES {
            match write(&client, &decision).await {
                Written::Done(Some(stored)) => {
                    correlator.update_state(&stored);
                    break;
                }
                Written::Done(None) => break,
                Written::Retry(e) if attempt < MAX_TRIES => {
                    tracing::warn!(error = %e, attempt, "writing event failed, retrying");
                    tokio::time::sleep(retry_sleep).await;
                }
                Written::Retry(e) => {
                    tracing::error!(error = %e, "writing event failed, giving up");
                }
            }
        }
    }
}

enum Written {
    /// Written (the server's copy) or rejected for good (nothing).
    Done(Option<Box<Event>>),
    /// The server could not be reached.
    Retry(kube::Error),
}

async fn write(client: &ApiClient, decision: &Decision) -> Written {
    let (event, patch) = match decision {
        Decision::Skip => return Written::Done(None),
        Decision::Create(event) => (event, None),
        Decision::Patch { event, patch } => (event, Some(patch)),
    };
    let namespace = event.metadata.namespace.as_deref().unwrap_or("default");
    let api: Api<Event> = Api::namespaced(client.current(), namespace);
    if let (Some(patch), Some(name)) = (patch, event.metadata.name.as_deref()) {
        match api
            .patch(name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
        {
            Ok(stored) => return Written::Done(Some(Box::new(stored))),
            // The event expired or was deleted: create it afresh.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return outcome(e, event),
        }
    }
    let mut fresh = event.clone();
    fresh.metadata.resource_version = None;
    match api.create(&PostParams::default(), &fresh).await {
        Ok(stored) => Written::Done(Some(Box::new(stored))),
        Err(e) => outcome(e, event),
    }
}

/// API errors are final (client-go does not retry what the server rejected); transport
/// errors are retried.
fn outcome(error: kube::Error, event: &Event) -> Written {
    match error {
        kube::Error::Api(status) => {
            if status.code != 409 {
                tracing::error!(
                    reason = event.reason.as_deref().unwrap_or(""),
                    error = %status,
                    "the API server rejected the event (not retried)"
                );
            }
            Written::Done(None)
        }
        other => Written::Retry(other),
    }
}

#[cfg(test)]
mod tests;
