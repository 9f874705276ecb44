use serde_json::json;

use super::super::test_support::{first, pod};
use super::*;

fn sample() -> Pod {
    pod(json!({
        "metadata": {
            "name": "web", "namespace": "shop", "uid": "1234-abcd",
            "labels": {"app": "web", "io.kubernetes.pod.uid": "forged"},
            "annotations": {"note": "x"},
            "deletionGracePeriodSeconds": 5,
        },
        "spec": {
            "terminationGracePeriodSeconds": 30,
            "containers": [{
                "name": "nginx", "image": "nginx:1",
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "lifecycle": {"preStop": {"exec": {"command": ["sleep", "1"]}}},
            }],
        },
    }))
}

#[test]
fn sandbox_labels_carry_pod_labels_and_identity_wins() {
    let pod = sample();
    let labels = sandbox_labels(&pod);
    assert_eq!(labels.get("app").map(String::as_str), Some("web"));
    assert_eq!(labels.get(POD_NAME_LABEL).map(String::as_str), Some("web"));
    assert_eq!(
        labels.get(POD_NAMESPACE_LABEL).map(String::as_str),
        Some("shop")
    );
    assert_eq!(
        labels.get(POD_UID_LABEL).map(String::as_str),
        Some("1234-abcd")
    );
    assert_eq!(labels.len(), 4);
    assert_eq!(
        sandbox_annotations(&pod).get("note").map(String::as_str),
        Some("x")
    );
}

#[test]
fn container_labels_are_identity_only() {
    let pod = sample();
    let labels = container_labels(&pod, first(&pod));
    assert_eq!(labels.len(), 4);
    assert_eq!(
        labels.get(CONTAINER_NAME_LABEL).map(String::as_str),
        Some("nginx")
    );
    assert!(!labels.contains_key("app"));
}

#[test]
fn container_annotations_as_the_kubelet_writes_them() {
    let pod = sample();
    let a = container_annotations(&pod, first(&pod), 3);
    let get = |k: &str| a.get(k).map(String::as_str);
    assert_eq!(get(RESTART_COUNT_ANNOTATION), Some("3"));
    assert_eq!(
        get(TERMINATION_MESSAGE_PATH_ANNOTATION),
        Some("/dev/termination-log")
    );
    assert_eq!(get(TERMINATION_MESSAGE_POLICY_ANNOTATION), Some("File"));
    assert_eq!(get(POD_DELETION_GRACE_PERIOD_ANNOTATION), Some("5"));
    assert_eq!(get(POD_TERMINATION_GRACE_PERIOD_ANNOTATION), Some("30"));
    assert_eq!(
        get(CONTAINER_PORTS_ANNOTATION),
        Some(r#"[{"containerPort":80,"protocol":"TCP"}]"#)
    );
    assert_eq!(
        get(PRE_STOP_HANDLER_ANNOTATION),
        Some(r#"{"exec":{"command":["sleep","1"]}}"#)
    );
    assert_eq!(
        get(CONTAINER_HASH_ANNOTATION),
        Some(container_hash(first(&pod)).as_str())
    );
}

#[test]
fn optional_annotations_are_absent_when_unset() {
    let pod = pod(json!({
        "metadata": {"name": "p", "namespace": "n", "uid": "u"},
        "spec": {"containers": [{"name": "c", "terminationMessagePolicy": "FallbackToLogsOnError",
                                 "terminationMessagePath": "/tmp/msg"}]},
    }));
    let a = container_annotations(&pod, first(&pod), 0);
    for key in [
        POD_DELETION_GRACE_PERIOD_ANNOTATION,
        POD_TERMINATION_GRACE_PERIOD_ANNOTATION,
        PRE_STOP_HANDLER_ANNOTATION,
        CONTAINER_PORTS_ANNOTATION,
    ] {
        assert!(!a.contains_key(key), "{key}");
    }
    assert_eq!(
        a.get(TERMINATION_MESSAGE_PATH_ANNOTATION)
            .map(String::as_str),
        Some("/tmp/msg")
    );
    assert_eq!(
        a.get(TERMINATION_MESSAGE_POLICY_ANNOTATION)
            .map(String::as_str),
        Some("FallbackToLogsOnError")
    );
}

#[test]
fn hash_changes_with_the_spec_and_only_then() {
    let pod = sample();
    let c = first(&pod).clone();
    assert_eq!(container_hash(&c), container_hash(&c.clone()));
    let mut changed = c.clone();
    changed.command = Some(vec!["other".into()]);
    assert_ne!(container_hash(&c), container_hash(&changed));
    let mut image = c.clone();
    image.image = Some("nginx:2".into());
    assert_ne!(container_hash(&c), container_hash(&image));
    assert!(container_hash(&c).chars().all(|ch| ch.is_ascii_hexdigit()));
}

#[test]
fn round_trip_sandbox_and_container_identity() {
    let pod = sample();
    let sandbox = SandboxIdentity::from_labels(&sandbox_labels(&pod));
    let want = SandboxIdentity {
        pod_name: "web".into(),
        pod_namespace: "shop".into(),
        pod_uid: "1234-abcd".into(),
    };
    assert_eq!(sandbox.as_ref(), Some(&want));
    let container = ContainerIdentity::from_labels(&container_labels(&pod, first(&pod)));
    assert_eq!(
        container,
        Some(ContainerIdentity {
            pod: want,
            container_name: "nginx".into()
        })
    );
}

#[test]
fn round_trip_container_record() {
    let pod = sample();
    let c = first(&pod);
    let record = ContainerRecord::from_annotations(&container_annotations(&pod, c, 7));
    let record = match record {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(record.hash, container_hash(c));
    assert_eq!(record.restart_count, 7);
    assert_eq!(record.pod_termination_grace_period, Some(30));
    assert_eq!(record.pod_deletion_grace_period, Some(5));
    assert_eq!(record.ports.len(), 1);
    assert_eq!(
        record
            .pre_stop
            .as_ref()
            .and_then(|h| h.exec.as_ref())
            .and_then(|e| e.command.clone()),
        Some(vec!["sleep".to_owned(), "1".to_owned()])
    );
    assert_eq!(record.termination_message_path, "/dev/termination-log");
}

#[test]
fn foreign_objects_are_not_adopted() {
    assert_eq!(SandboxIdentity::from_labels(&HashMap::new()), None);
    let no_uid = HashMap::from([
        (POD_NAME_LABEL.to_owned(), "a".to_owned()),
        (POD_NAMESPACE_LABEL.to_owned(), "b".to_owned()),
        (POD_UID_LABEL.to_owned(), String::new()),
    ]);
    assert_eq!(SandboxIdentity::from_labels(&no_uid), None);
    assert_eq!(ContainerIdentity::from_labels(&no_uid), None);
}

#[test]
fn missing_annotations_default_and_bad_ones_are_named() {
    let empty = ContainerRecord::from_annotations(&HashMap::new());
    assert_eq!(empty.as_ref().map(|r| r.restart_count), Ok(0));
    assert_eq!(empty.as_ref().map(|r| r.ports.is_empty()), Ok(true));
    let bad = HashMap::from([(RESTART_COUNT_ANNOTATION.to_owned(), "-1".to_owned())]);
    let err = ContainerRecord::from_annotations(&bad).err();
    assert_eq!(err.map(|e| e.key), Some(RESTART_COUNT_ANNOTATION));
    let bad = HashMap::from([(CONTAINER_PORTS_ANNOTATION.to_owned(), "{".to_owned())]);
    assert!(ContainerRecord::from_annotations(&bad).is_err());
}
