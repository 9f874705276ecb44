//! How a Service's stored EndpointSlices become the desired ones (pure): endpoints stay in the slice that
//! already holds them, new ones fill slices with room (at most [`MAX_ENDPOINTS_PER_SLICE`]), then new
//! slices; slices no longer needed are reused for new groups of their address type before any is deleted,
//! so pod changes update slices instead of recreating them.

use std::collections::{BTreeMap, HashSet};

use serde_json::{json, Map, Value};

use super::desired::{Desired, Endpoint, EndpointPort, GroupKey};
use crate::apiserver::services::cidr::IpFamily;

/// kube-controller-manager's `--max-endpoints-per-slice` default.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming the controller that manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's [`MANAGED_BY_LABEL`] value.
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// The annotation recording the newest change behind a slice's write.
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// The label kube-controller-manager adds to the slices of headless Services.
const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// One write bringing the stored slices to the desired ones.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create this slice (it has a `generateName`).
    Create(Value),
    /// Replace the stored slice with this one (same name and resourceVersion).
    Update(Value),
    /// Delete the slice with this name and uid.
    Delete {
        /// The slice's name.
        name: String,
        /// Its uid (a delete precondition, so a recreated slice of the same name survives).
        uid: String,
    },
}

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Whether this controller manages `slice`, and for which Service (its name).
pub fn managed_service(slice: &Value) -> Option<&str> {
    let labels = slice.pointer("/metadata/labels")?;
    if labels.get(MANAGED_BY_LABEL).and_then(Value::as_str) != Some(CONTROLLER_NAME) {
        return None;
    }
    labels.get(SERVICE_NAME_LABEL).and_then(Value::as_str)
}

/// Deletes every slice in `slices` (those of a Service that is gone or no longer has a selector).
pub fn delete_all(slices: &[Value]) -> Vec<Action> {
    slices.iter().map(delete).collect()
}

fn delete(slice: &Value) -> Action {
    Action::Delete {
        name: text(slice, "/metadata/name").to_string(),
        uid: text(slice, "/metadata/uid").to_string(),
    }
}

fn key_of(slice: &Value) -> Option<GroupKey> {
    let family = IpFamily::parse(text(slice, "/addressType"))?;
    let ports = slice
        .get("ports")
        .and_then(Value::as_array)
        .map(|p| p.iter().map(EndpointPort::from_json).collect())
        .unwrap_or_default();
    Some(GroupKey { family, ports })
}

fn addresses(slice: &Value) -> Vec<String> {
    let endpoints = slice.get("endpoints").and_then(Value::as_array);
    endpoints
        .into_iter()
        .flatten()
        .filter_map(|e| e.pointer("/addresses/0").and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

/// A slice to write: the stored one it replaces (if any), its group, and its endpoints.
struct Slot<'a> {
    stored: Option<&'a Value>,
    key: GroupKey,
    endpoints: Vec<Endpoint>,
}

/// Places a group's endpoints into the stored slices of that group, then into new slots.
fn place<'a>(key: &GroupKey, wanted: &[Endpoint], stored: &[&'a Value]) -> Vec<Slot<'a>> {
    let by_address: BTreeMap<&str, &Endpoint> =
        wanted.iter().map(|e| (e.address.as_str(), e)).collect();
    let mut placed: HashSet<&str> = HashSet::new();
    let mut slots: Vec<Slot<'a>> = stored
        .iter()
        .map(|slice| {
            let mut endpoints = Vec::new();
            for address in addresses(slice) {
                if let Some((addr, ep)) = by_address.get_key_value(address.as_str()) {
                    if endpoints.len() < MAX_ENDPOINTS_PER_SLICE && placed.insert(addr) {
                        endpoints.push((*ep).clone());
                    }
                }
            }
            Slot {
                stored: Some(*slice),
                key: key.clone(),
                endpoints,
            }
        })
        .collect();
    let mut rest = wanted
        .iter()
        .filter(|e| !placed.contains(e.address.as_str()))
        .peekable();
    // Slices left empty are not refilled (kube deletes them); the others take new endpoints while they have room.
    for slot in slots.iter_mut().filter(|s| !s.endpoints.is_empty()) {
        while slot.endpoints.len() < MAX_ENDPOINTS_PER_SLICE {
            match rest.next() {
                Some(ep) => slot.endpoints.push(ep.clone()),
                None => break,
            }
        }
    }
    while rest.peek().is_some() {
        slots.push(Slot {
            stored: None,
            key: key.clone(),
            endpoints: rest
                .by_ref()
                .take(MAX_ENDPOINTS_PER_SLICE)
                .cloned()
                .collect(),
        });
    }
    slots
}

/// The labels of a Service's slices: the Service's own plus the controller's.
fn labels(service: &Value) -> Map<String, Value> {
    let mut labels = service
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    labels.insert(
        SERVICE_NAME_LABEL.into(),
        json!(text(service, "/metadata/name")),
    );
    labels.insert(MANAGED_BY_LABEL.into(), json!(CONTROLLER_NAME));
    if text(service, "/spec/clusterIP") == "None" {
        labels.insert(HEADLESS_LABEL.into(), json!(""));
    }
    labels
}

/// The slice a slot stands for, built on the stored slice when there is one.
fn render(service: &Value, slot: &Slot<'_>, trigger_time: Option<&str>) -> Value {
    let mut slice = slot.stored.cloned().unwrap_or_else(|| {
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"generateName": format!("{}-", text(service, "/metadata/name")),
                            "namespace": text(service, "/metadata/namespace")}})
    });
    slice["metadata"]["labels"] = Value::Object(labels(service));
    slice["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "v1", "kind": "Service", "name": text(service, "/metadata/name"),
        "uid": text(service, "/metadata/uid"), "controller": true, "blockOwnerDeletion": true,
    }]);
    slice["addressType"] = json!(slot.key.family.as_str());
    slice["ports"] = slot.key.ports.iter().map(EndpointPort::to_json).collect();
    slice["endpoints"] = slot.endpoints.iter().map(|e| e.value.clone()).collect();
    if let Some(time) = trigger_time {
        let annotations = slice["metadata"]
            .as_object_mut()
            .map(|m| m.entry("annotations").or_insert(json!({})));
        if let Some(Value::Object(a)) = annotations {
            a.insert(TRIGGER_TIME_ANNOTATION.into(), json!(time));
        }
    }
    slice
}

/// Whether a rendered slice differs from the stored one in anything but its trigger time.
fn changed(stored: &Value, rendered: &Value) -> bool {
    [
        "/addressType",
        "/ports",
        "/endpoints",
        "/metadata/labels",
        "/metadata/ownerReferences",
    ]
    .iter()
    .any(|p| stored.pointer(p) != rendered.pointer(p))
}

/// The writes that turn `stored` (the slices this controller manages for `service`) into the slices of
/// `desired`: one empty placeholder slice for an address type without endpoints, as kube does.
pub fn plan(service: &Value, desired: &Desired, stored: &[Value]) -> Vec<Action> {
    let mut actions = Vec::new();
    for family in &desired.families {
        let mut groups: Vec<(GroupKey, &[Endpoint])> = desired
            .groups
            .iter()
            .filter(|(k, _)| k.family == *family)
            .map(|(k, eps)| (k.clone(), eps.as_slice()))
            .collect();
        if groups.is_empty() {
            let placeholder = GroupKey {
                family: *family,
                ports: Vec::new(),
            };
            groups.push((placeholder, &[]));
        }
        let mut of_family: Vec<&Value> = stored
            .iter()
            .filter(|s| key_of(s).is_some_and(|k| k.family == *family))
            .collect();
        of_family.sort_by_key(|s| text(s, "/metadata/name"));
        let mut slots = Vec::new();
        let mut used: HashSet<&str> = HashSet::new();
        for (key, endpoints) in &groups {
            let same: Vec<&Value> = of_family
                .iter()
                .copied()
                .filter(|s| key_of(s).as_ref() == Some(key))
                .collect();
            let mut placed = place(key, endpoints, &same);
            // A placeholder group keeps one (empty) slice; other groups drop slices left empty.
            let keep_empty = endpoints.is_empty() && placed.iter().all(|s| s.endpoints.is_empty());
            let mut kept_one = false;
            placed.retain(|s| {
                let keep = !s.endpoints.is_empty() || (keep_empty && !kept_one);
                kept_one |= keep;
                keep
            });
            if placed.is_empty() {
                placed.push(Slot {
                    stored: None,
                    key: key.clone(),
                    endpoints: Vec::new(),
                });
            }
            used.extend(
                placed
                    .iter()
                    .filter_map(|s| s.stored.map(|v| text(v, "/metadata/name"))),
            );
            slots.extend(placed);
        }
        // New slots reuse the slices nothing else keeps, so a port change updates a slice in place.
        let mut spare = of_family
            .iter()
            .copied()
            .filter(|s| !used.contains(text(s, "/metadata/name")));
        for slot in slots.iter_mut().filter(|s| s.stored.is_none()) {
            slot.stored = spare.next();
        }
        actions.extend(spare.map(delete));
        for slot in &slots {
            let rendered = render(service, slot, desired.trigger_time.as_deref());
            match slot.stored {
                None => actions.push(Action::Create(rendered)),
                Some(stored) if changed(stored, &rendered) => {
                    actions.push(Action::Update(rendered))
                }
                Some(_) => {}
            }
        }
    }
    let families: HashSet<IpFamily> = desired.families.iter().copied().collect();
    actions.extend(
        stored
            .iter()
            .filter(|s| !key_of(s).is_some_and(|k| families.contains(&k.family)))
            .map(delete),
    );
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> Value {
        json!({"metadata": {"name": "web", "namespace": "ns", "uid": "svc-uid", "labels": {"app": "web"}},
               "spec": {"clusterIP": "10.96.0.10"}})
    }

    fn port(number: i64) -> EndpointPort {
        EndpointPort {
            name: "http".into(),
            port: number,
            protocol: "TCP".into(),
            app_protocol: None,
        }
    }

    fn endpoint(i: usize) -> Endpoint {
        let address = format!("10.0.{}.{}", i / 250, i % 250 + 1);
        Endpoint {
            value: json!({"addresses": [address], "conditions": {"ready": true}}),
            address,
        }
    }

    fn desired(groups: Vec<(u8, i64, std::ops::Range<usize>)>) -> Desired {
        let family = |f: u8| if f == 4 { IpFamily::V4 } else { IpFamily::V6 };
        Desired {
            families: vec![IpFamily::V4],
            groups: groups
                .into_iter()
                .map(|(f, p, r)| {
                    (
                        GroupKey {
                            family: family(f),
                            ports: vec![port(p)],
                        },
                        r.map(endpoint).collect(),
                    )
                })
                .collect(),
            trigger_time: Some("2024-01-01T00:01:00Z".into()),
        }
    }

    /// Applies actions to a store of slices the way the server would, naming created ones `web-<n>`.
    fn apply(stored: &mut Vec<Value>, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Create(mut s) => {
                    let name = format!("web-{}", stored.len() + 100);
                    s["metadata"]["name"] = json!(name);
                    s["metadata"]["uid"] = json!(format!("{name}-uid"));
                    stored.push(s);
                }
                Action::Update(s) => {
                    let name = s["metadata"]["name"].clone();
                    stored.retain(|o| o["metadata"]["name"] != name);
                    stored.push(s);
                }
                Action::Delete { name, .. } => stored.retain(|o| o["metadata"]["name"] != name),
            }
        }
    }

    fn sizes(stored: &[Value]) -> Vec<(String, usize)> {
        let mut out: Vec<(String, usize)> = stored
            .iter()
            .map(|s| (text(s, "/metadata/name").to_string(), addresses(s).len()))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn endpoints_spill_over_into_slices_of_at_most_a_hundred() {
        let mut stored = Vec::new();
        let actions = plan(&service(), &desired(vec![(4, 80, 0..250)]), &stored);
        assert_eq!(actions.len(), 3);
        let Action::Create(first) = &actions[0] else {
            panic!("a create: {actions:?}");
        };
        assert_eq!(first["metadata"]["generateName"], "web-");
        assert_eq!(first["metadata"]["labels"][SERVICE_NAME_LABEL], "web");
        assert_eq!(
            first["metadata"]["labels"][MANAGED_BY_LABEL],
            CONTROLLER_NAME
        );
        assert_eq!(first["metadata"]["labels"]["app"], "web");
        assert_eq!(first["metadata"]["ownerReferences"][0]["uid"], "svc-uid");
        assert_eq!(
            first["metadata"]["annotations"][TRIGGER_TIME_ANNOTATION],
            "2024-01-01T00:01:00Z"
        );
        assert_eq!(first["addressType"], "IPv4");
        assert_eq!(
            first["ports"],
            json!([{"name": "http", "port": 80, "protocol": "TCP"}])
        );
        apply(&mut stored, actions);
        assert_eq!(
            sizes(&stored),
            vec![
                ("web-100".into(), 100),
                ("web-101".into(), 100),
                ("web-102".into(), 50)
            ]
        );
        assert!(plan(&service(), &desired(vec![(4, 80, 0..250)]), &stored).is_empty());
        // Endpoints 0..100 go: the first slice empties and is deleted; the rest stay where they are.
        let actions = plan(&service(), &desired(vec![(4, 80, 100..260)]), &stored);
        apply(&mut stored, actions);
        assert_eq!(
            sizes(&stored),
            vec![("web-101".into(), 100), ("web-102".into(), 60)]
        );
    }

    #[test]
    fn slices_are_updated_in_place_and_an_empty_service_keeps_a_placeholder() {
        let mut stored = Vec::new();
        let actions = plan(&service(), &desired(vec![(4, 80, 0..2)]), &stored);
        apply(&mut stored, actions);
        let name = stored[0]["metadata"]["name"].clone();
        // The target port changes: the same slice is rewritten with the new port.
        let actions = plan(&service(), &desired(vec![(4, 8080, 0..2)]), &stored);
        assert!(
            matches!(&actions[..], [Action::Update(s)] if s["metadata"]["name"] == name && s["ports"][0]["port"] == 8080)
        );
        apply(&mut stored, actions);
        // No endpoints left: the slice becomes the family's placeholder.
        let actions = plan(&service(), &desired(vec![]), &stored);
        assert!(
            matches!(&actions[..], [Action::Update(s)] if s["metadata"]["name"] == name && s["endpoints"] == json!([]) && s["ports"] == json!([]))
        );
        apply(&mut stored, actions);
        assert!(plan(&service(), &desired(vec![]), &stored).is_empty());
        // A slice of a family the Service no longer has goes; deleting the Service deletes all.
        let mut v6 = stored[0].clone();
        v6["addressType"] = json!("IPv6");
        v6["metadata"]["name"] = json!("web-v6");
        stored.push(v6);
        let actions = plan(&service(), &desired(vec![]), &stored);
        assert!(matches!(&actions[..], [Action::Delete { name, .. }] if name == "web-v6"));
        assert_eq!(delete_all(&stored).len(), 2);
        assert_eq!(managed_service(&stored[0]), Some("web"));
        assert_eq!(
            managed_service(&json!({"metadata": {"labels": {SERVICE_NAME_LABEL: "web"}}})),
            None
        );
    }

    #[test]
    fn headless_services_label_their_slices() {
        let mut svc = service();
        svc["spec"]["clusterIP"] = json!("None");
        let actions = plan(&svc, &desired(vec![(4, 80, 0..1)]), &[]);
        assert!(
            matches!(&actions[..], [Action::Create(s)] if s["metadata"]["labels"][HEADLESS_LABEL] == "")
        );
    }
}
