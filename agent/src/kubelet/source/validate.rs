//! The API server's checks that matter on a node, applied to pods no API server has seen
//! (static manifests): names, containers, ports, volumes, policies.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, Pod};

/// Every problem with `pod`, each naming its field; `Ok` when there is none.
pub fn validate_pod(pod: &Pod) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    let meta = &pod.metadata;
    check_subdomain(
        "metadata.name",
        meta.name.as_deref().unwrap_or(""),
        &mut errors,
    );
    check_label(
        "metadata.namespace",
        meta.namespace.as_deref().unwrap_or(""),
        &mut errors,
    );
    let Some(spec) = pod.spec.as_ref() else {
        errors.push("spec: required".to_owned());
        return Err(errors);
    };
    if spec.containers.is_empty() {
        errors.push("spec.containers: at least one container is required".to_owned());
    }
    let mut names = BTreeSet::new();
    let init = spec.init_containers.iter().flatten();
    for (kind, container) in init
        .map(|c| ("initContainers", c))
        .chain(spec.containers.iter().map(|c| ("containers", c)))
    {
        let field = format!("spec.{kind}[{}]", container.name);
        check_label(&format!("{field}.name"), &container.name, &mut errors);
        if !names.insert(container.name.clone()) {
            errors.push(format!("{field}.name: duplicate container name"));
        }
        check_container(&field, container, kind == "initContainers", &mut errors);
    }
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    if !matches!(policy, "Always" | "OnFailure" | "Never") {
        errors.push(format!(
            "spec.restartPolicy: unsupported value {policy:?} (Always, OnFailure, Never)"
        ));
    }
    if let Some(grace) = spec.termination_grace_period_seconds {
        if grace < 0 {
            errors.push("spec.terminationGracePeriodSeconds: must be >= 0".to_owned());
        }
    }
    let mut volumes = BTreeSet::new();
    for volume in spec.volumes.iter().flatten() {
        check_label(
            &format!("spec.volumes[{}].name", volume.name),
            &volume.name,
            &mut errors,
        );
        if !volumes.insert(volume.name.as_str()) {
            errors.push(format!(
                "spec.volumes[{}]: duplicate volume name",
                volume.name
            ));
        }
    }
    let all = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers);
    for container in all {
        for mount in container.volume_mounts.iter().flatten() {
            if !volumes.contains(mount.name.as_str()) {
                errors.push(format!(
                    "spec.containers[{}].volumeMounts[{}]: no volume of that name",
                    container.name, mount.name
                ));
            }
            if !mount.mount_path.starts_with('/') {
                errors.push(format!(
                    "spec.containers[{}].volumeMounts[{}].mountPath: must be absolute, got {:?}",
                    container.name, mount.name, mount.mount_path
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn check_container(field: &str, container: &Container, init: bool, errors: &mut Vec<String>) {
    if container.image.as_deref().unwrap_or("").trim().is_empty() {
        errors.push(format!("{field}.image: required"));
    }
    if let Some(policy) = container.image_pull_policy.as_deref() {
        if !matches!(policy, "Always" | "IfNotPresent" | "Never") {
            errors.push(format!(
                "{field}.imagePullPolicy: unsupported value {policy:?} (Always, IfNotPresent, Never)"
            ));
        }
    }
    match container.restart_policy.as_deref() {
        None => {}
        Some("Always") if init => {}
        Some(other) => errors.push(format!(
            "{field}.restartPolicy: unsupported value {other:?} (only Always, on init containers)"
        )),
    }
    for port in container.ports.iter().flatten() {
        if !(1..=65535).contains(&port.container_port) {
            errors.push(format!(
                "{field}.ports: containerPort {} must be between 1 and 65535",
                port.container_port
            ));
        }
        if let Some(host) = port.host_port {
            if !(0..=65535).contains(&host) {
                errors.push(format!(
                    "{field}.ports: hostPort {host} must be between 1 and 65535"
                ));
            }
        }
        if let Some(protocol) = port.protocol.as_deref() {
            if !matches!(protocol, "TCP" | "UDP" | "SCTP") {
                errors.push(format!(
                    "{field}.ports: unsupported protocol {protocol:?} (TCP, UDP, SCTP)"
                ));
            }
        }
    }
    if init && container.restart_policy.is_none() {
        let probes = [
            ("livenessProbe", container.liveness_probe.is_some()),
            ("readinessProbe", container.readiness_probe.is_some()),
            ("startupProbe", container.startup_probe.is_some()),
        ];
        for (name, set) in probes {
            if set {
                errors.push(format!(
                    "{field}.{name}: may not be set for init containers without restartPolicy Always"
                ));
            }
        }
    }
}

/// RFC 1123 label: what namespaces, container and volume names must be.
fn check_label(field: &str, value: &str, errors: &mut Vec<String>) {
    if !is_label(value) {
        errors.push(format!(
            "{field}: {value:?} must be a lowercase RFC 1123 label (a-z, 0-9, '-', at most 63 characters)"
        ));
    }
}

/// RFC 1123 subdomain: what pod names must be.
fn check_subdomain(field: &str, value: &str, errors: &mut Vec<String>) {
    if value.len() > 253 || value.split('.').any(|part| !is_label(part)) {
        errors.push(format!(
            "{field}: {value:?} must be a lowercase RFC 1123 subdomain (at most 253 characters)"
        ));
    }
}

fn is_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn a_plain_pod_is_valid() {
        let p = pod("metadata: {name: web-node1, namespace: default}\nspec:\n  containers: [{name: web, image: busybox}]\n");
        assert_eq!(validate_pod(&p), Ok(()));
    }

    #[test]
    fn each_problem_is_named() {
        let p = pod(concat!(
            "metadata: {name: Web_1, namespace: default}\n",
            "spec:\n  restartPolicy: Sometimes\n",
            "  initContainers: [{name: init, image: busybox, readinessProbe: {exec: {command: [x]}}}]\n",
            "  containers:\n",
            "  - {name: a, image: ''}\n",
            "  - name: a\n    image: busybox\n    ports: [{containerPort: 70000}]\n    volumeMounts: [{name: nope, mountPath: data}]\n",
        ));
        let errors = validate_pod(&p).unwrap_err().join("\n");
        for expected in [
            "metadata.name",
            "spec.restartPolicy",
            "readinessProbe: may not be set",
            "spec.containers[a].image: required",
            "duplicate container name",
            "containerPort 70000",
            "volumeMounts[nope]: no volume",
            "mountPath: must be absolute",
        ] {
            assert!(
                errors.contains(expected),
                "missing {expected:?} in\n{errors}"
            );
        }
    }

    #[test]
    fn sidecars_may_have_probes() {
        let p = pod(concat!(
            "metadata: {name: p, namespace: default}\n",
            "spec:\n  initContainers: [{name: side, image: busybox, restartPolicy: Always, startupProbe: {exec: {command: [x]}}}]\n",
            "  containers: [{name: app, image: busybox}]\n",
        ));
        assert_eq!(validate_pod(&p), Ok(()));
    }

    #[test]
    fn labels_follow_rfc_1123() {
        assert!(is_label("a-1"));
        assert!(!is_label("-a"));
        assert!(!is_label("a-"));
        assert!(!is_label("A"));
        assert!(!is_label(&"a".repeat(64)));
        assert!(!is_label(""));
    }
}
