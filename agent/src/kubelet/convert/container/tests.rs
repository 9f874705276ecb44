use serde_json::json;

use super::super::labels::{CONTAINER_NAME_LABEL, RESTART_COUNT_ANNOTATION};
use super::super::test_support::{ctx, first, node, pod_with_spec};
use super::*;

fn config(
    container: serde_json::Value,
    inputs: ContainerInputs,
) -> Result<ContainerConfig, ConvertError> {
    let p = pod_with_spec(json!({"containers": [container]}));
    container_config(&p, first(&p), inputs, &ctx(node()))
}

#[test]
fn full_container_config() {
    let mount = Mount {
        container_path: "/data".into(),
        host_path: "/var/lib/x".into(),
        ..Default::default()
    };
    let c = config(
        json!({"name": "web", "image": "nginx:1", "workingDir": "/srv", "stdin": true, "tty": true,
               "command": ["/bin/sh", "-c", "echo $(GREETING) $$(GREETING) $(MISSING)"],
               "args": ["$(PORT)"],
               "env": [{"name": "GREETING", "value": "hi"}, {"name": "PORT", "value": "80"}]}),
        ContainerInputs {
            restart_count: 3,
            image_ref: "sha256:abc".into(),
            mounts: vec![mount.clone()],
            ..Default::default()
        },
    );
    let Ok(c) = c else { panic!("{c:?}") };
    assert_eq!(
        c.metadata.as_ref().map(|m| (m.name.as_str(), m.attempt)),
        Some(("web", 3))
    );
    let image = c.image.clone().unwrap_or_default();
    assert_eq!(
        (image.image.as_str(), image.user_specified_image.as_str()),
        ("sha256:abc", "nginx:1")
    );
    assert_eq!(
        c.command,
        ["/bin/sh", "-c", "echo hi $(GREETING) $(MISSING)"]
    );
    assert_eq!(c.args, ["80"]);
    assert_eq!(c.working_dir, "/srv");
    assert_eq!(
        c.envs
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.as_str()))
            .collect::<Vec<_>>(),
        [("GREETING", "hi"), ("PORT", "80")]
    );
    assert_eq!(c.mounts, [mount]);
    assert_eq!(c.log_path, "web/3.log");
    assert!(c.stdin && c.tty && !c.stdin_once);
    assert_eq!(
        c.labels.get(CONTAINER_NAME_LABEL).map(String::as_str),
        Some("web")
    );
    assert_eq!(
        c.annotations
            .get(RESTART_COUNT_ANNOTATION)
            .map(String::as_str),
        Some("3")
    );
    let linux = c.linux.unwrap_or_default();
    assert_eq!(linux.resources.map(|r| r.oom_score_adj), Some(1000));
    assert!(linux.security_context.is_some());
}

#[test]
fn no_command_leaves_the_image_entrypoint() {
    let c = config(
        json!({"name": "c", "image": "busybox"}),
        ContainerInputs::default(),
    )
    .unwrap_or_default();
    assert!(c.command.is_empty() && c.args.is_empty());
    assert_eq!(c.image.map(|i| i.image), Some("busybox".to_owned()));
    assert_eq!(c.log_path, "c/0.log");
}

#[test]
fn errors_name_the_field() {
    let err = config(
        json!({"name": "web", "resources": {"limits": {"memory": "12X"}}}),
        ContainerInputs::default(),
    )
    .err();
    assert_eq!(
        err.map(|e| e.to_string()),
        Some("spec.containers[web].resources.limits.memory: invalid quantity \"12X\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'".to_owned())
    );
    for name in ["../x", "Web", "", "a/b"] {
        assert!(
            config(json!({"name": name}), ContainerInputs::default()).is_err(),
            "{name:?}"
        );
    }
    let root = ContainerInputs {
        image_uid: Some(0),
        ..Default::default()
    };
    assert!(config(
        json!({"name": "c", "securityContext": {"runAsNonRoot": true}}),
        root
    )
    .is_err());
}

#[test]
fn init_container_paths_in_errors() {
    let p = pod_with_spec(
        json!({"initContainers": [{"name": "setup", "env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "bogus"}}}]}],
                                 "containers": [{"name": "c"}]}),
    );
    let init = p
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .and_then(|i| i.first())
        .cloned()
        .unwrap_or_default();
    let err = container_config(&p, &init, ContainerInputs::default(), &ctx(node())).err();
    assert_eq!(
        err.map(|e| e.field),
        Some("spec.initContainers[setup].env[X].valueFrom.fieldRef.fieldPath".to_owned())
    );
}
