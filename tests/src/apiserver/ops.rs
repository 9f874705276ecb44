//! kube-apiserver's write semantics on top of the store: create (generateName, uid, timestamps, defaults),
//! update and patch (optimistic concurrency, immutable fields, status subresources), delete (preconditions,
//! finalizers, graceful pod deletion) and the system upsert security's controllers use.

use jiff::Timestamp;
use serde_json::{json, Map, Value};

use super::defaults;
use super::patch;
use super::resources::{self, Kind};
use super::security::{Objects, User};
use super::services;
use super::status::ApiError;
use super::store::{Change, Siblings, Store};

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The main resource: `.status` changes are ignored for kinds with a status subresource.
    Main,
    /// `/status`: only `.status` changes.
    Status,
    /// `/approval` (CSRs): only `.status.conditions` changes.
    Approval,
}

impl Part {
    /// The subresource a path names, if writable.
    pub fn from_subresource(kind: &Kind, sub: &str) -> Option<Part> {
        match sub {
            "" => Some(Part::Main),
            "status" if kind.status => Some(Part::Status),
            "approval" if kind.key == "certificatesigningrequests" => Some(Part::Approval),
            _ => None,
        }
    }
}

/// DeleteOptions that matter here.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeleteOptions {
    /// `gracePeriodSeconds`.
    pub grace_period_seconds: Option<i64>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
}

impl DeleteOptions {
    /// Reads a DeleteOptions body (empty = defaults); `gracePeriodSeconds` from the query wins when given.
    pub fn parse(body: &[u8], query_grace: Option<i64>) -> Result<DeleteOptions, ApiError> {
        let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
        };
        let text = |p: &str| {
            value
                .pointer(p)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        Ok(DeleteOptions {
            grace_period_seconds: query_grace
                .or_else(|| value.get("gracePeriodSeconds").and_then(Value::as_i64)),
            uid: text("/preconditions/uid"),
            resource_version: text("/preconditions/resourceVersion"),
        })
    }
}

/// `pods`, `leases.coordination.k8s.io`: how kube-apiserver names a resource in messages.
pub fn qualified(kind: &Kind) -> String {
    if kind.group.is_empty() {
        kind.plural.to_string()
    } else {
        format!("{}.{}", kind.plural, kind.group)
    }
}

fn now() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn uid() -> String {
    let b = rand::random::<u128>().to_be_bytes();
    let h = hex::encode(b);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn meta(obj: &Value, field: &str) -> Option<String> {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn meta_mut(obj: &mut Value) -> Result<&mut Map<String, Value>, ApiError> {
    let map = obj
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the object must be a JSON object"))?;
    let m = map.entry("metadata").or_insert(json!({}));
    if !m.is_object() {
        *m = json!({});
    }
    m.as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be an object"))
}

fn conflict(kind: &Kind, name: &str) -> ApiError {
    ApiError::conflict(format!(
        "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
        qualified(kind)
    ))
}

fn set_type_meta(kind: &Kind, obj: &mut Value) {
    if let Some(map) = obj.as_object_mut() {
        map.insert("apiVersion".into(), json!(kind.api_version()));
        map.insert("kind".into(), json!(kind.kind));
    }
}

/// Checks that a namespaced object names an existing namespace and a cluster-scoped one none.
fn check_namespace(store: &Store, kind: &Kind, namespace: &str) -> Result<(), ApiError> {
    if kind.namespaced {
        if namespace.is_empty() {
            return Err(ApiError::bad_request(format!(
                "{} must be created in a namespace",
                qualified(kind)
            )));
        }
        if store.get("namespaces", "", namespace).is_none() {
            return Err(ApiError::not_found("namespaces", namespace));
        }
    }
    Ok(())
}

/// Creates `obj` in `namespace` as `user` (whose identity CSRs record), like POST on the collection.
pub fn create(
    store: &Store,
    kind: &'static Kind,
    namespace: &str,
    mut obj: Value,
    user: Option<&User>,
) -> Result<Value, ApiError> {
    check_namespace(store, kind, namespace)?;
    let ns_in_body = meta(&obj, "namespace").unwrap_or_default();
    if kind.namespaced && !ns_in_body.is_empty() && ns_in_body != namespace {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let name = match (
        meta(&obj, "name").filter(|n| !n.is_empty()),
        meta(&obj, "generateName"),
    ) {
        (Some(name), _) => name,
        (None, Some(prefix)) if !prefix.is_empty() => format!("{prefix}{}", random_suffix()),
        _ => {
            return Err(ApiError::invalid(format!(
            "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
            kind.kind
        )))
        }
    };
    let m = meta_mut(&mut obj)?;
    m.insert("name".into(), json!(name));
    if kind.namespaced {
        m.insert("namespace".into(), json!(namespace));
    } else {
        m.remove("namespace");
    }
    m.insert("uid".into(), json!(uid()));
    m.insert("creationTimestamp".into(), json!(now()));
    m.insert("generation".into(), json!(1));
    for field in [
        "managedFields",
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        m.remove(field);
    }
    set_type_meta(kind, &mut obj);
    match kind.key {
        "pods" => defaults::pod(&mut obj),
        "namespaces" => defaults::namespace(&mut obj, &name),
        "secrets" => defaults::secret(&mut obj),
        "certificatesigningrequests" => {
            if let Some(map) = obj.as_object_mut() {
                map.insert("status".into(), json!({}));
                if let Some(spec) = map.get_mut("spec").and_then(Value::as_object_mut) {
                    let (name, uid, groups) = user
                        .map(|u| (u.name.clone(), u.uid.clone(), u.groups.clone()))
                        .unwrap_or_default();
                    spec.insert("username".into(), json!(name));
                    spec.insert("uid".into(), json!(uid));
                    spec.insert("groups".into(), json!(groups));
                }
            }
        }
        _ => {}
    }
    let key = kind.key;
    let created = store.mutate_with(
        key,
        if kind.namespaced { namespace } else { "" },
        &name,
        |existing, siblings| {
            if key == "services" {
                let taken = services::taken(siblings.iter());
                services::admit_create(store.service_ranges(), &mut obj, &taken)?;
            }
            match existing {
                Some(_) => Err(ApiError::already_exists(&qualified(kind), &name)),
                None => Ok(Change::Put(obj)),
            }
        },
    )?;
    if kind.key == "namespaces" {
        // Like the service-account controller: every namespace gets a `default` ServiceAccount.
        let sa = json!({"metadata": {"name": "default"}});
        if let Some(sa_kind) = resources::by_name("serviceaccounts") {
            let _ = create(store, sa_kind, &name, sa, None);
        }
    }
    Ok(created)
}

/// The object a write of `new` over `old` stores, keeping what the addressed part may not change.
fn merge_write(kind: &Kind, old: &Value, mut new: Value, part: Part) -> Result<Value, ApiError> {
    if !new.is_object() {
        return Err(ApiError::bad_request("the object must be a JSON object"));
    }
    let name = meta(old, "name").unwrap_or_default();
    if meta(&new, "name").is_some_and(|n| n != name) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            meta(&new, "name").unwrap_or_default()
        )));
    }
    let mut out = match part {
        Part::Main => {
            if kind.status {
                if let Some(map) = new.as_object_mut() {
                    match old.get("status") {
                        Some(status) => map.insert("status".into(), status.clone()),
                        None => map.remove("status"),
                    };
                }
            }
            new
        }
        Part::Status => {
            let mut out = old.clone();
            if let (Some(map), Some(status)) = (out.as_object_mut(), new.get("status")) {
                map.insert("status".into(), status.clone());
            }
            out
        }
        Part::Approval => {
            let mut out = old.clone();
            let conditions = new
                .pointer("/status/conditions")
                .cloned()
                .unwrap_or(json!([]));
            if let Some(map) = out.as_object_mut() {
                let status = map.entry("status").or_insert(json!({}));
                if let Some(status) = status.as_object_mut() {
                    status.insert("conditions".into(), conditions);
                }
            }
            out
        }
    };
    if kind.key == "secrets" {
        defaults::secret(&mut out);
    }
    let spec_changed = old.get("spec") != out.get("spec");
    let old_meta = old
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let m = meta_mut(&mut out)?;
    m.remove("managedFields");
    m.insert("name".into(), json!(name));
    for field in [
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "resourceVersion",
    ] {
        match old_meta.get(field) {
            Some(v) => m.insert(field.to_string(), v.clone()),
            None => m.remove(field),
        };
    }
    let generation = old_meta
        .get("generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    m.insert(
        "generation".into(),
        json!(if spec_changed {
            generation + 1
        } else {
            generation
        }),
    );
    set_type_meta(kind, &mut out);
    Ok(out)
}

/// Kind-specific checks and allocations of a write to the main resource (Services: defaults, validation,
/// kept and new allocations).
fn admit_update(
    store: &Store,
    kind: &Kind,
    part: Part,
    current: &Value,
    mut written: Value,
    siblings: &Siblings<'_>,
) -> Result<Value, ApiError> {
    if kind.key == "services" && part == Part::Main {
        let taken = services::taken(siblings.iter());
        services::admit_update(store.service_ranges(), current, &mut written, &taken)?;
    }
    Ok(written)
}

/// The store decision for a write that produced `new` from `old`: no-op writes keep the resourceVersion, and
/// an object being deleted goes once its last finalizer is removed.
fn decide(old: &Value, new: Value) -> Change {
    if *old == new {
        return Change::Keep;
    }
    let deleting = new.pointer("/metadata/deletionTimestamp").is_some();
    let finalizers = new
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    let grace = new
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if deleting && !finalizers && grace == 0 {
        Change::Delete(new)
    } else {
        Change::Put(new)
    }
}

fn check_rv(
    kind: &Kind,
    name: &str,
    current: &Value,
    given: Option<String>,
) -> Result<(), ApiError> {
    match given.filter(|rv| !rv.is_empty()) {
        Some(rv) if Some(&rv) != meta(current, "resourceVersion").as_ref() => {
            Err(conflict(kind, name))
        }
        _ => Ok(()),
    }
}

/// Replaces the object (PUT), 409 on a stale `metadata.resourceVersion`.
pub fn update(
    store: &Store,
    kind: &'static Kind,
    namespace: &str,
    name: &str,
    new: Value,
    part: Part,
) -> Result<Value, ApiError> {
    store.mutate_with(kind.key, namespace, name, |existing, siblings| {
        let current = existing.ok_or_else(|| ApiError::not_found(&qualified(kind), name))?;
        check_rv(kind, name, current, meta(&new, "resourceVersion"))?;
        let written = merge_write(kind, current, new, part)?;
        Ok(decide(
            current,
            admit_update(store, kind, part, current, written, &siblings)?,
        ))
    })
}

/// Patches the object with a patch of `content_type` (merge, strategic merge or JSON patch).
pub fn patch(
    store: &Store,
    kind: &'static Kind,
    namespace: &str,
    name: &str,
    content_type: &str,
    body: &Value,
    part: Part,
) -> Result<Value, ApiError> {
    store.mutate_with(kind.key, namespace, name, |existing, siblings| {
        let current = existing.ok_or_else(|| ApiError::not_found(&qualified(kind), name))?;
        let mut patched = current.clone();
        patch::apply(content_type, &mut patched, body, kind.key)?;
        if meta(&patched, "resourceVersion") != meta(current, "resourceVersion") {
            check_rv(kind, name, current, meta(&patched, "resourceVersion"))?;
        }
        if meta(&patched, "uid") != meta(current, "uid") {
            return Err(ApiError::invalid(format!(
                "{} \"{name}\" is invalid: metadata.uid: Invalid value: field is immutable",
                kind.kind
            )));
        }
        let written = merge_write(kind, current, patched, part)?;
        Ok(decide(
            current,
            admit_update(store, kind, part, current, written, &siblings)?,
        ))
    })
}

fn check_preconditions(
    kind: &Kind,
    name: &str,
    current: &Value,
    opts: &DeleteOptions,
) -> Result<(), ApiError> {
    let cur_uid = meta(current, "uid").unwrap_or_default();
    if let Some(uid) = opts.uid.as_ref().filter(|u| **u != cur_uid) {
        return Err(ApiError::conflict(format!(
            "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {cur_uid}",
            qualified(kind)
        )));
    }
    let cur_rv = meta(current, "resourceVersion").unwrap_or_default();
    if let Some(rv) = opts.resource_version.as_ref().filter(|r| **r != cur_rv) {
        return Err(ApiError::conflict(format!(
            "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {cur_rv}",
            qualified(kind)
        )));
    }
    Ok(())
}

/// How a delete ends for the current object.
fn delete_decision(kind: &Kind, current: &Value, opts: &DeleteOptions) -> Change {
    let mut marked = current.clone();
    let finalizers = current
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    let already = current.pointer("/metadata/deletionTimestamp").is_some();
    let phase = current
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let bound = current
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let graceful_pod = kind.key == "pods" && bound && phase != "Succeeded" && phase != "Failed";
    let grace = if graceful_pod {
        opts.grace_period_seconds
            .or_else(|| {
                current
                    .pointer("/metadata/deletionGracePeriodSeconds")
                    .and_then(Value::as_i64)
            })
            .or_else(|| {
                current
                    .pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
            })
            .unwrap_or(30)
            .max(0)
    } else {
        0
    };
    let current_grace = current
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64);
    if already && current_grace.is_some_and(|g| g <= grace) {
        return Change::Keep;
    }
    if grace == 0 && !finalizers {
        return Change::Delete(marked);
    }
    if let Ok(m) = meta_mut(&mut marked) {
        let at = Timestamp::now()
            .checked_add(jiff::SignedDuration::from_secs(grace))
            .unwrap_or_else(|_| Timestamp::now());
        if !already || grace > 0 {
            m.insert(
                "deletionTimestamp".into(),
                json!(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
            );
        }
        m.insert("deletionGracePeriodSeconds".into(), json!(grace));
    }
    Change::Put(marked)
}

/// Deletes the object (DELETE): preconditions, finalizers, and graceful deletion of bound, running pods.
pub fn delete(
    store: &Store,
    kind: &'static Kind,
    namespace: &str,
    name: &str,
    opts: &DeleteOptions,
) -> Result<Value, ApiError> {
    let result = store.mutate(kind.key, namespace, name, |existing| {
        let current = existing.ok_or_else(|| ApiError::not_found(&qualified(kind), name))?;
        check_preconditions(kind, name, current, opts)?;
        Ok(delete_decision(kind, current, opts))
    })?;
    if kind.key == "namespaces" && store.get("namespaces", "", name).is_none() {
        // The namespace controller's job, done at once: everything in it goes.
        for (resource, object) in store.keys_in_namespace(name) {
            let _ = store.mutate(resource, name, &object, |existing| {
                Ok(existing.cloned().map_or(Change::Keep, Change::Delete))
            });
        }
    }
    Ok(result)
}

/// Binds a pod to a node (`pods/binding`), 409 when it already is.
pub fn bind(
    store: &Store,
    namespace: &str,
    name: &str,
    binding: &Value,
) -> Result<Value, ApiError> {
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty());
    let node = node
        .ok_or_else(|| ApiError::invalid("Binding is invalid: target.name: Required value"))?
        .to_string();
    store.mutate("pods", namespace, name, |existing| {
        let current = existing.ok_or_else(|| ApiError::not_found("pods", name))?;
        if let Some(bound) = current.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) {
            return Err(ApiError::conflict(format!("Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{bound}\"")));
        }
        let mut pod = current.clone();
        if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("nodeName".into(), json!(node));
        }
        Ok(Change::Put(pod))
    })
}

/// Creates or replaces `obj` as the system: spec and status as given, identity kept from the stored object.
pub fn upsert(
    store: &Store,
    kind: &'static Kind,
    namespace: &str,
    mut obj: Value,
) -> Result<Value, ApiError> {
    let name = meta(&obj, "name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::invalid("metadata.name: Required value"))?;
    let namespace = if kind.namespaced { namespace } else { "" };
    set_type_meta(kind, &mut obj);
    store.mutate(kind.key, namespace, &name, |existing| {
        let m = meta_mut(&mut obj)?;
        m.remove("managedFields");
        if kind.namespaced {
            m.insert("namespace".into(), json!(namespace));
        }
        match existing {
            Some(current) => {
                let old = current
                    .get("metadata")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                for field in ["uid", "creationTimestamp", "generation", "resourceVersion"] {
                    if let Some(v) = old.get(field) {
                        m.insert(field.to_string(), v.clone());
                    }
                }
                if kind.key == "secrets" {
                    defaults::secret(&mut obj);
                }
                Ok(if *current == obj {
                    Change::Keep
                } else {
                    Change::Put(obj)
                })
            }
            None => {
                m.entry("uid").or_insert(json!(uid()));
                m.entry("creationTimestamp").or_insert(json!(now()));
                m.entry("generation").or_insert(json!(1));
                if kind.key == "secrets" {
                    defaults::secret(&mut obj);
                }
                Ok(Change::Put(obj))
            }
        }
    })
}

fn kind_of(resource: &str) -> Result<&'static Kind, ApiError> {
    resources::by_name(resource).ok_or_else(|| ApiError::not_found("resources", resource))
}

impl Objects for Store {
    fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let kind = resources::by_name(resource)?;
        Store::get(
            self,
            kind.key,
            if kind.namespaced { namespace } else { "" },
            name,
        )
    }

    fn list(&self, resource: &str, namespace: &str) -> Vec<Value> {
        match resources::by_name(resource) {
            Some(kind) => Store::list(self, kind.key, namespace).0,
            None => Vec::new(),
        }
    }

    fn upsert(&self, resource: &str, namespace: &str, obj: Value) -> Result<Value, ApiError> {
        upsert(self, kind_of(resource)?, namespace, obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(name: &str) -> &'static Kind {
        resources::by_name(name).expect("known kind")
    }

    fn store() -> Store {
        let store = Store::new(100);
        for ns in ["default", "kube-system"] {
            create(
                &store,
                kind("namespaces"),
                "",
                json!({"metadata": {"name": ns}}),
                None,
            )
            .expect("namespace");
        }
        store
    }

    fn rv(obj: &Value) -> String {
        meta(obj, "resourceVersion").unwrap_or_default()
    }

    #[test]
    fn create_fills_identity_and_refuses_duplicates_and_missing_namespaces() {
        let s = store();
        let pod = json!({"metadata": {"generateName": "web-"}, "spec": {"containers": [{"name": "a", "image": "busybox"}]}, "status": {"phase": "Running"}});
        let created = create(&s, kind("pods"), "default", pod, None).expect("created");
        let name = meta(&created, "name").unwrap_or_default();
        assert!(name.starts_with("web-") && name.len() == 9, "{name}");
        assert_eq!(created["metadata"]["namespace"], "default");
        assert_eq!(created["status"]["phase"], "Pending");
        assert_eq!(created["kind"], "Pod");
        assert!(meta(&created, "uid").is_some() && meta(&created, "creationTimestamp").is_some());
        let dup = json!({"metadata": {"name": name}, "spec": {}});
        assert_eq!(
            create(&s, kind("pods"), "default", dup, None).map_err(|e| e.reason),
            Err("AlreadyExists")
        );
        let missing = json!({"metadata": {"name": "x"}});
        assert_eq!(
            create(&s, kind("configmaps"), "nope", missing, None).map_err(|e| e.code),
            Err(404)
        );
        assert!(s.get("serviceaccounts", "default", "default").is_some());
    }

    #[test]
    fn updates_conflict_on_stale_versions_and_keep_status_and_identity() {
        let s = store();
        let node = json!({"metadata": {"name": "n1"}, "spec": {}, "status": {"capacity": {"pods": "110"}}});
        let created = create(&s, kind("nodes"), "", node, None).expect("created");
        assert_eq!(
            created["status"]["capacity"]["pods"], "110",
            "nodes keep their status on create"
        );
        let mut changed = created.clone();
        changed["spec"]["unschedulable"] = json!(true);
        changed["status"] = json!({"capacity": {"pods": "1"}});
        changed["metadata"]["uid"] = json!("forged");
        let updated =
            update(&s, kind("nodes"), "", "n1", changed.clone(), Part::Main).expect("updated");
        assert_eq!(updated["status"]["capacity"]["pods"], "110");
        assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);
        assert_eq!(updated["metadata"]["generation"], 2);
        assert_eq!(
            update(&s, kind("nodes"), "", "n1", changed.clone(), Part::Main).map_err(|e| e.code),
            Err(409)
        );
        let status = update(
            &s,
            kind("nodes"),
            "",
            "n1",
            json!({"metadata": {"name": "n1"}, "spec": {}, "status": {"phase": "x"}}),
            Part::Status,
        )
        .expect("status update");
        assert_eq!(status["status"], json!({"phase": "x"}));
        assert_eq!(
            status["spec"]["unschedulable"], true,
            "status writes leave spec alone"
        );
        let same = update(&s, kind("nodes"), "", "n1", status.clone(), Part::Main).expect("no-op");
        assert_eq!(
            rv(&same),
            rv(&status),
            "a no-op update keeps the resourceVersion"
        );
    }

    #[test]
    fn patches_respect_parts_and_resource_version_preconditions() {
        let s = store();
        let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "containers": [{"name": "a", "image": "x:1"}]}});
        let created = create(&s, kind("pods"), "default", pod, None).expect("created");
        let status_patch = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
        let main = patch(
            &s,
            kind("pods"),
            "default",
            "p",
            "application/strategic-merge-patch+json",
            &status_patch,
            Part::Main,
        )
        .expect("patched");
        assert_eq!(main["status"]["phase"], "Pending");
        let st = patch(
            &s,
            kind("pods"),
            "default",
            "p",
            "application/strategic-merge-patch+json",
            &status_patch,
            Part::Status,
        )
        .expect("patched");
        assert_eq!(st["status"]["phase"], "Running");
        let stale = json!({"metadata": {"resourceVersion": rv(&created), "labels": {"a": "b"}}});
        assert_eq!(
            patch(
                &s,
                kind("pods"),
                "default",
                "p",
                "application/merge-patch+json",
                &stale,
                Part::Main
            )
            .map_err(|e| e.code),
            Err(409)
        );
        assert_eq!(
            patch(
                &s,
                kind("pods"),
                "default",
                "p",
                "application/apply-patch+yaml",
                &stale,
                Part::Main
            )
            .map_err(|e| e.code),
            Err(415)
        );
    }

    #[test]
    fn bound_pods_delete_gracefully_and_go_with_grace_zero() {
        let s = store();
        let pod = |name: &str, node: Option<&str>| json!({"metadata": {"name": name}, "spec": {"nodeName": node, "terminationGracePeriodSeconds": 20, "containers": [{"name": "a", "image": "x:1"}]}});
        create(&s, kind("pods"), "default", pod("unbound", None), None).expect("created");
        delete(
            &s,
            kind("pods"),
            "default",
            "unbound",
            &DeleteOptions::default(),
        )
        .expect("deleted");
        assert!(s.get("pods", "default", "unbound").is_none());
        let created =
            create(&s, kind("pods"), "default", pod("bound", Some("n1")), None).expect("created");
        let marked = delete(
            &s,
            kind("pods"),
            "default",
            "bound",
            &DeleteOptions::default(),
        )
        .expect("marked");
        assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 20);
        assert!(marked["metadata"]["deletionTimestamp"].is_string());
        assert!(s.get("pods", "default", "bound").is_some());
        let again = delete(
            &s,
            kind("pods"),
            "default",
            "bound",
            &DeleteOptions::default(),
        )
        .expect("still marked");
        assert_eq!(rv(&again), rv(&marked));
        let wrong_uid = DeleteOptions {
            grace_period_seconds: Some(0),
            uid: Some("other".into()),
            resource_version: None,
        };
        assert_eq!(
            delete(&s, kind("pods"), "default", "bound", &wrong_uid).map_err(|e| e.code),
            Err(409)
        );
        let force = DeleteOptions {
            grace_period_seconds: Some(0),
            uid: meta(&created, "uid"),
            resource_version: None,
        };
        delete(&s, kind("pods"), "default", "bound", &force).expect("removed");
        assert!(s.get("pods", "default", "bound").is_none());
    }

    #[test]
    fn finalizers_hold_deletion_until_removed() {
        let s = store();
        let cm = json!({"metadata": {"name": "c", "finalizers": ["example.com/hold"]}});
        create(&s, kind("configmaps"), "default", cm, None).expect("created");
        let marked = delete(
            &s,
            kind("configmaps"),
            "default",
            "c",
            &DeleteOptions::default(),
        )
        .expect("marked");
        assert!(marked["metadata"]["deletionTimestamp"].is_string());
        let release = json!({"metadata": {"finalizers": null}});
        patch(
            &s,
            kind("configmaps"),
            "default",
            "c",
            "application/merge-patch+json",
            &release,
            Part::Main,
        )
        .expect("released");
        assert!(s.get("configmaps", "default", "c").is_none());
    }

    #[test]
    fn csrs_record_the_requesting_user_and_upsert_keeps_identity() {
        let s = store();
        let user = User {
            name: "system:bootstrap:abcdef".into(),
            uid: String::new(),
            groups: vec!["system:bootstrappers".into()],
        };
        let csr = json!({"metadata": {"name": "c1"}, "spec": {"request": "x", "username": "forged"}, "status": {"certificate": "y"}});
        let created =
            create(&s, kind("certificatesigningrequests"), "", csr, Some(&user)).expect("created");
        assert_eq!(created["spec"]["username"], "system:bootstrap:abcdef");
        assert_eq!(created["status"], json!({}));
        let mut signed = created.clone();
        signed["status"] = json!({"certificate": "Y2VydA=="});
        signed["metadata"]["uid"] = json!("other");
        let stored =
            Objects::upsert(&s, "certificatesigningrequests", "", signed).expect("upserted");
        assert_eq!(stored["status"]["certificate"], "Y2VydA==");
        assert_eq!(stored["metadata"]["uid"], created["metadata"]["uid"]);
    }
}
