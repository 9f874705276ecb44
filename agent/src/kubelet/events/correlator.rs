//! client-go's EventCorrelator: similar events (same object, type and reason) with more
//! than 10 distinct messages in 10 minutes become one "(combined from similar events)"
//! event; repeats of an identical event become a PATCH of its count and lastTimestamp; a
//! per-object token bucket drops the rest.

use std::collections::BTreeSet;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::cache::Lru;
use super::spam::SpamFilter;

/// Entries kept per cache, as client-go's maxLruCacheEntries.
const CACHE_ENTRIES: usize = 4096;
/// Distinct messages of similar events before they are combined.
const AGGREGATE_MAX_EVENTS: usize = 10;
/// How long similar events count towards combining.
const AGGREGATE_INTERVAL: SignedDuration = SignedDuration::from_secs(600);

/// What to do with an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Create it.
    Create(Event),
    /// Patch the existing event `event.metadata.name` with `patch` (strategic merge);
    /// `event` is the full updated event, to create if the old one is gone.
    Patch {
        /// The event as it should now be.
        event: Event,
        /// count, lastTimestamp and message.
        patch: serde_json::Value,
    },
    /// Drop it: over the rate limit.
    Skip,
}

#[derive(Debug)]
struct Aggregate {
    messages: BTreeSet<String>,
    last: Timestamp,
}

#[derive(Debug, Clone)]
struct Observation {
    count: i32,
    first_timestamp: Option<Time>,
    name: Option<String>,
}

/// The correlator's state; the caller supplies the clock.
#[derive(Debug)]
pub struct Correlator {
    aggregates: Lru<Aggregate>,
    observed: Lru<Observation>,
    spam: SpamFilter,
}

impl Default for Correlator {
    fn default() -> Self {
        Correlator {
            aggregates: Lru::new(CACHE_ENTRIES),
            observed: Lru::new(CACHE_ENTRIES),
            spam: SpamFilter::new(CACHE_ENTRIES),
        }
    }
}

fn s(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("")
}

/// Source and involved object: the spam filter's key.
fn object_key(event: &Event) -> String {
    let source = event.source.clone().unwrap_or_default();
    let object = &event.involved_object;
    [
        s(&source.component),
        s(&source.host),
        s(&object.kind),
        s(&object.namespace),
        s(&object.name),
        s(&object.uid),
        s(&object.api_version),
    ]
    .join("\u{0}")
}

/// Everything but the message: the aggregation key.
fn aggregate_key(event: &Event) -> String {
    [
        object_key(event).as_str(),
        s(&event.type_),
        s(&event.reason),
        s(&event.reporting_component),
        s(&event.reporting_instance),
    ]
    .join("\u{0}")
}

/// Everything identifying an identical event, fieldPath and message included.
fn event_key(event: &Event) -> String {
    [
        object_key(event).as_str(),
        s(&event.involved_object.field_path),
        s(&event.type_),
        s(&event.reason),
        s(&event.message),
    ]
    .join("\u{0}")
}

impl Correlator {
    /// Decide what to send for `event`, observed at `now`.
    pub fn correlate(&mut self, event: Event, now: Timestamp) -> Decision {
        let (event, key) = self.aggregate(event, now);
        let event = self.observe(event, &key);
        if self.spam.filter(&object_key(&event), now) {
            return Decision::Skip;
        }
        if event.count.unwrap_or(1) > 1 {
            let patch = serde_json::json!({
                "count": event.count,
                "lastTimestamp": event.last_timestamp,
                "message": event.message,
            });
            Decision::Patch { event, patch }
        } else {
            Decision::Create(event)
        }
    }

    /// Remember the server's copy (its name) after a create or patch.
    pub fn update_state(&mut self, event: &Event) {
        self.observed.put(
            event_key(event),
            Observation {
                count: event.count.unwrap_or(1),
                first_timestamp: event.first_timestamp.clone(),
                name: event.metadata.name.clone(),
            },
        );
    }

    fn aggregate(&mut self, event: Event, now: Timestamp) -> (Event, String) {
        let key = aggregate_key(&event);
        let message = event.message.clone().unwrap_or_default();
        let fresh = || Aggregate {
            messages: BTreeSet::new(),
            last: now,
        };
        let mut record = match self.aggregates.get_mut(&key) {
            Some(r) if now.duration_since(r.last) <= AGGREGATE_INTERVAL => {
                std::mem::replace(r, fresh())
            }
            _ => fresh(),
        };
        record.messages.insert(message.clone());
        record.last = now;
        let combine = record.messages.len() >= AGGREGATE_MAX_EVENTS;
        if combine {
            // Keep the set from growing past the threshold.
            if let Some(any) = record.messages.iter().next().cloned() {
                record.messages.remove(&any);
            }
        }
        self.aggregates.put(key.clone(), record);
        if !combine {
            let key = event_key(&event);
            return (event, key);
        }
        let object = event.involved_object.name.clone().unwrap_or_default();
        let combined = Event {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(event_name(&object, now)),
                namespace: event.metadata.namespace.clone(),
                ..Default::default()
            },
            message: Some(format!("(combined from similar events): {message}")),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            ..event
        };
        (combined, key)
    }

    fn observe(&mut self, mut event: Event, key: &str) -> Event {
        if let Some(last) = self.observed.get_mut(key).cloned() {
            if last.count > 0 {
                event.metadata.name = last.name.or(event.metadata.name);
                event.first_timestamp = last.first_timestamp;
                event.count = Some(last.count.saturating_add(1));
            }
        }
        self.observed.put(
            key.to_owned(),
            Observation {
                count: event.count.unwrap_or(1),
                first_timestamp: event.first_timestamp.clone(),
                name: event.metadata.name.clone(),
            },
        );
        event
    }
}

/// client-go's event name: the object's name and the time in hex nanoseconds.
pub fn event_name(object: &str, now: Timestamp) -> String {
    format!("{object}.{:x}", now.as_nanosecond())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{EventSource, ObjectReference};

    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn ev(object: &str, reason: &str, message: &str, now: Timestamp) -> Event {
        Event {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(event_name(object, now)),
                namespace: Some("default".into()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                kind: Some("Pod".into()),
                name: Some(object.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{object}")),
                ..Default::default()
            },
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some("Normal".into()),
            source: Some(EventSource {
                component: Some("kubelet".into()),
                host: Some("node-1".into()),
            }),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            ..Default::default()
        }
    }

    #[test]
    fn identical_events_patch_count_and_last_timestamp() {
        let mut c = Correlator::default();
        let first = ev("web", "Pulled", "pulled nginx", at(0));
        let Decision::Create(created) = c.correlate(first.clone(), at(0)) else {
            panic!("the first event is created");
        };
        assert_eq!(created, first);
        c.update_state(&created);
        let Decision::Patch { event, patch } =
            c.correlate(ev("web", "Pulled", "pulled nginx", at(5)), at(5))
        else {
            panic!("a repeat is a patch");
        };
        assert_eq!(event.metadata.name, first.metadata.name);
        assert_eq!(event.first_timestamp, Some(Time(at(0))));
        assert_eq!(patch["count"], 2);
        assert_eq!(patch["lastTimestamp"], serde_json::json!(Time(at(5))));
        assert_eq!(patch["message"], "pulled nginx");
        let Decision::Patch { patch, .. } =
            c.correlate(ev("web", "Pulled", "pulled nginx", at(6)), at(6))
        else {
            panic!("a second repeat is a patch");
        };
        assert_eq!(patch["count"], 3);
        // A different message is a new event.
        assert!(matches!(
            c.correlate(ev("web", "Pulled", "pulled redis", at(7)), at(7)),
            Decision::Create(_)
        ));
    }

    #[test]
    fn similar_events_beyond_ten_messages_are_combined() {
        let mut c = Correlator::default();
        for i in 0..9 {
            let d = c.correlate(ev("web", "BackOff", &format!("m{i}"), at(i)), at(i));
            assert!(
                matches!(d, Decision::Create(ref e) if e.message.as_deref() == Some(&format!("m{i}")[..])),
                "{i}: {d:?}"
            );
        }
        let Decision::Create(combined) = c.correlate(ev("web", "BackOff", "m9", at(9)), at(9))
        else {
            panic!("the tenth distinct message creates the combined event");
        };
        assert_eq!(
            combined.message.as_deref(),
            Some("(combined from similar events): m9")
        );
        assert_eq!(combined.count, Some(1));
        let Decision::Patch { event, patch } =
            c.correlate(ev("web", "BackOff", "m10", at(10)), at(10))
        else {
            panic!("later similar events update the combined one");
        };
        assert_eq!(event.metadata.name, combined.metadata.name);
        assert_eq!(patch["count"], 2);
        assert_eq!(patch["message"], "(combined from similar events): m10");
        // After 10 quiet minutes similar events count afresh.
        let d = c.correlate(ev("web", "BackOff", "m11", at(10 + 601)), at(10 + 601));
        assert!(
            matches!(d, Decision::Create(ref e) if e.message.as_deref() == Some("m11")),
            "{d:?}"
        );
    }

    #[test]
    fn an_object_gets_25_events_then_one_per_five_minutes() {
        let mut c = Correlator::default();
        for i in 0..25 {
            let d = c.correlate(ev("web", &format!("R{i}"), "m", at(0)), at(0));
            assert_ne!(d, Decision::Skip, "{i}");
        }
        assert_eq!(
            c.correlate(ev("web", "R25", "m", at(1)), at(1)),
            Decision::Skip
        );
        assert_ne!(
            c.correlate(ev("db", "R0", "m", at(1)), at(1)),
            Decision::Skip
        );
        assert_ne!(
            c.correlate(ev("web", "R26", "m", at(302)), at(302)),
            Decision::Skip
        );
    }

    #[test]
    fn names_are_the_object_and_hex_nanoseconds() {
        let t = Timestamp::from_nanosecond(0x17_9a_bc_de_f0_12_34_56).unwrap();
        assert_eq!(event_name("web", t), "web.179abcdef0123456");
    }
}
