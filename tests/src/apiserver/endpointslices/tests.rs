//! The controller inside a running server: slices follow a Service and its pods' lifecycle.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::plan::{CONTROLLER_NAME, MANAGED_BY_LABEL, SERVICE_NAME_LABEL, TRIGGER_TIME_ANNOTATION};
use crate::apiserver::ops::{self, DeleteOptions, Part};
use crate::apiserver::resources;
use crate::apiserver::{ApiServer, ApiServerOptions};

/// Generous against a loaded CI machine; the controller normally answers in a few milliseconds.
const DEADLINE: Duration = Duration::from_secs(2);

/// Polls the `web` slices of `default` until `ready` accepts them; the slices and how long it took.
fn wait_for(
    server: &ApiServer,
    what: &str,
    ready: impl Fn(&[Value]) -> bool,
) -> (Vec<Value>, Duration) {
    let start = Instant::now();
    loop {
        let (slices, _) = server.state.store.list("endpointslices", "default");
        if ready(&slices) {
            return (slices, start.elapsed());
        }
        assert!(start.elapsed() < DEADLINE, "{what}: slices are {slices:#?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn set_status(server: &ApiServer, pod: &str, status: Value) {
    let pods = resources::by_name("pods").expect("pods");
    let patch = json!({"status": status});
    ops::patch(
        &server.state.store,
        pods,
        "default",
        pod,
        "application/merge-patch+json",
        &patch,
        Part::Status,
    )
    .expect("status patched");
}

/// A readiness transition newer than the Service's creation, so it is the slice's trigger time.
fn transition_time() -> String {
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3600);
    later.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn ready(status: &str, since: &str) -> Value {
    json!({"phase": "Running", "podIP": "10.244.0.7", "podIPs": [{"ip": "10.244.0.7"}],
           "conditions": [{"type": "Ready", "status": status, "lastTransitionTime": since}]})
}

#[test]
fn slices_follow_the_service_and_its_pods() {
    let server = ApiServer::start().expect("server");
    server
        .create(
            "nodes",
            "",
            json!({"metadata": {"name": "n1", "labels": {"topology.kubernetes.io/zone": "z1"}}}),
        )
        .expect("node");
    let svc = server
        .create("services", "default", json!({"metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}))
        .expect("service");
    let (slices, took) = wait_for(&server, "placeholder", |s| s.len() == 1);
    eprintln!("placeholder slice after {took:?}");
    let slice = &slices[0];
    let name = slice["metadata"]["name"].clone();
    assert!(
        name.as_str().is_some_and(|n| n.starts_with("web-")),
        "{name}"
    );
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(slice["endpoints"], json!([]));
    assert_eq!(slice["metadata"]["labels"][SERVICE_NAME_LABEL], "web");
    assert_eq!(
        slice["metadata"]["labels"][MANAGED_BY_LABEL],
        CONTROLLER_NAME
    );
    assert_eq!(
        slice["metadata"]["ownerReferences"][0]["uid"],
        svc["metadata"]["uid"]
    );

    let pod = json!({"metadata": {"name": "p1", "labels": {"app": "web"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox:1.36",
                 "ports": [{"name": "http", "containerPort": 8080}]}]}});
    server.create("pods", "default", pod).expect("pod");
    let since = transition_time();
    set_status(&server, "p1", ready("True", &since));
    let (slices, took) = wait_for(&server, "ready endpoint", |s| {
        s.len() == 1 && s[0]["endpoints"][0]["conditions"]["ready"] == true
    });
    eprintln!("ready endpoint after {took:?}");
    let slice = &slices[0];
    assert_eq!(slice["metadata"]["name"], name, "updated, not recreated");
    assert_eq!(
        slice["ports"],
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
    );
    let endpoint = &slice["endpoints"][0];
    assert_eq!(endpoint["addresses"], json!(["10.244.0.7"]));
    assert_eq!(
        endpoint["conditions"],
        json!({"ready": true, "serving": true, "terminating": false})
    );
    assert_eq!(endpoint["nodeName"], "n1");
    assert_eq!(endpoint["zone"], "z1");
    assert_eq!(endpoint["targetRef"]["name"], "p1");
    assert_eq!(
        slice["metadata"]["annotations"][TRIGGER_TIME_ANNOTATION],
        since.as_str()
    );

    set_status(&server, "p1", ready("False", &since));
    wait_for(&server, "not-ready endpoint", |s| {
        s.first().map(|s| &s["endpoints"][0]["conditions"])
            == Some(&json!({"ready": false, "serving": false, "terminating": false}))
    });

    let pods = resources::by_name("pods").expect("pods");
    ops::delete(
        &server.state.store,
        pods,
        "default",
        "p1",
        &DeleteOptions::default(),
    )
    .expect("graceful delete");
    wait_for(&server, "terminating endpoint", |s| {
        s.first()
            .is_some_and(|s| s["endpoints"][0]["conditions"]["terminating"] == true)
    });
    let now = DeleteOptions {
        grace_period_seconds: Some(0),
        ..DeleteOptions::default()
    };
    ops::delete(&server.state.store, pods, "default", "p1", &now).expect("delete");
    let (slices, _) = wait_for(&server, "empty slice", |s| {
        s.len() == 1 && s[0]["endpoints"] == json!([])
    });
    assert_eq!(slices[0]["metadata"]["name"], name);

    let services = resources::by_name("services").expect("services");
    ops::delete(
        &server.state.store,
        services,
        "default",
        "web",
        &DeleteOptions::default(),
    )
    .expect("service deleted");
    let (_, took) = wait_for(&server, "slices deleted", <[Value]>::is_empty);
    eprintln!("slices deleted after {took:?}");
}

#[test]
fn dual_stack_services_get_a_slice_per_family_even_after_history_compaction() {
    // A one-event history: the controller finds its events gone and reconciles everything instead.
    let server = ApiServer::start_with(ApiServerOptions {
        service_cidrs: vec!["10.96.0.0/16".into(), "fd00:10:96::/112".into()],
        watch_history: 1,
        ..ApiServerOptions::default()
    })
    .expect("server");
    server
        .create("services", "default", json!({"metadata": {"name": "web"},
            "spec": {"ipFamilyPolicy": "RequireDualStack", "selector": {"app": "web"}, "ports": [{"port": 80}]}}))
        .expect("service");
    for (i, name) in ["p1", "p2"].iter().enumerate() {
        let pod = json!({"metadata": {"name": name, "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}});
        server.create("pods", "default", pod).expect("pod");
        let status = json!({"phase": "Running", "podIPs": [{"ip": format!("10.244.0.{i}")}, {"ip": format!("fd00:244::{i}")}],
                            "conditions": [{"type": "Ready", "status": "True"}]});
        set_status(&server, name, status);
    }
    let (slices, _) = wait_for(&server, "two families, two endpoints each", |s| {
        s.len() == 2
            && s.iter()
                .all(|s| s["endpoints"].as_array().map(Vec::len) == Some(2))
    });
    let mut families: Vec<&str> = slices
        .iter()
        .filter_map(|s| s["addressType"].as_str())
        .collect();
    families.sort_unstable();
    assert_eq!(families, vec!["IPv4", "IPv6"]);
    let v6 = slices
        .iter()
        .find(|s| s["addressType"] == "IPv6")
        .expect("v6 slice");
    assert_eq!(v6["endpoints"][1]["addresses"], json!(["fd00:244::1"]));
    assert_eq!(
        v6["ports"],
        json!([{"name": "", "port": 80, "protocol": "TCP"}])
    );
}
