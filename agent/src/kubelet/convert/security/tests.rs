use serde_json::json;

use super::super::test_support::{first, node, pod_with_spec};
use super::*;

fn sc_of(spec: serde_json::Value) -> Result<LinuxContainerSecurityContext, ConvertError> {
    let p = pod_with_spec(spec);
    container_security_context(&p, first(&p), None, "", &node())
}

#[test]
fn container_overrides_pod_settings() {
    let sc = sc_of(json!({
        "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 7, "supplementalGroups": [8],
                            "supplementalGroupsPolicy": "Strict"},
        "containers": [{"name": "c", "securityContext": {
            "runAsUser": 2000, "privileged": true, "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}}}]}));
    let Ok(sc) = sc else { panic!("{sc:?}") };
    assert_eq!(sc.run_as_user.map(|v| v.value), Some(2000));
    assert_eq!(sc.run_as_group.map(|v| v.value), Some(1000));
    assert!(sc.privileged && sc.readonly_rootfs && sc.no_new_privs);
    let caps = sc.capabilities.unwrap_or_default();
    assert_eq!(
        (caps.add_capabilities, caps.drop_capabilities),
        (vec!["NET_ADMIN".to_owned()], vec!["ALL".to_owned()])
    );
    assert_eq!(sc.supplemental_groups, [7, 8]);
    assert_eq!(
        sc.supplemental_groups_policy,
        SupplementalGroupsPolicy::Strict as i32
    );
    assert!(sc.masked_paths.is_empty() && sc.readonly_paths.is_empty());
}

#[test]
fn no_new_privs_only_when_escalation_is_forbidden() {
    let with = |v: serde_json::Value| {
        sc_of(json!({"containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": v}}]}))
            .map(|s| s.no_new_privs)
    };
    assert_eq!(with(json!(false)), Ok(true));
    assert_eq!(with(json!(true)), Ok(false));
    assert_eq!(with(json!(null)), Ok(false));
}

#[test]
fn image_user_fills_in_without_run_as_user() {
    let p = pod_with_spec(json!({"containers": [{"name": "c"}]}));
    let sc = container_security_context(&p, first(&p), Some(33), "", &node()).unwrap_or_default();
    assert_eq!(sc.run_as_user.map(|v| v.value), Some(33));
    let sc = container_security_context(&p, first(&p), None, "nginx", &node()).unwrap_or_default();
    assert_eq!(
        (sc.run_as_user, sc.run_as_username.as_str()),
        (None, "nginx")
    );
}

#[test]
fn seccomp_profiles() {
    let kind = |spec| sc_of(spec).map(|s| s.seccomp.unwrap_or_default());
    let unconfined = kind(json!({"containers": [{"name": "c"}]})).unwrap_or_default();
    assert_eq!(unconfined.profile_type, ProfileType::Unconfined as i32);
    let p = pod_with_spec(json!({"containers": [{"name": "c"}]}));
    let mut n = node();
    n.seccomp_default = true;
    let sc = container_security_context(&p, first(&p), None, "", &n).unwrap_or_default();
    assert_eq!(
        sc.seccomp.map(|s| s.profile_type),
        Some(ProfileType::RuntimeDefault as i32)
    );
    let local = kind(json!({"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "c", "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/audit.json"}}}]}))
        .unwrap_or_default();
    assert_eq!(local.profile_type, ProfileType::Localhost as i32);
    assert_eq!(
        local.localhost_ref,
        "/var/lib/capstan/kubelet/seccomp/profiles/audit.json"
    );
    let pod_level = kind(
        json!({"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}, "containers": [{"name": "c"}]}),
    );
    assert_eq!(
        pod_level.map(|p| p.profile_type),
        Ok(ProfileType::RuntimeDefault as i32)
    );
    for bad in [
        json!({"type": "Localhost"}),
        json!({"type": "Localhost", "localhostProfile": "../../etc/x"}),
        json!({"type": "Localhost", "localhostProfile": "/etc/x"}),
    ] {
        let r = kind(
            json!({"containers": [{"name": "c", "securityContext": {"seccompProfile": bad}}]}),
        );
        assert_eq!(
            r.map_err(|e| e.field),
            Err("spec.containers[c].securityContext.seccompProfile.localhostProfile".to_owned())
        );
    }
}

#[test]
fn apparmor_profiles() {
    let aa = |spec| sc_of(spec).map(|s| s.apparmor.map(|p| (p.profile_type, p.localhost_ref)));
    assert_eq!(aa(json!({"containers": [{"name": "c"}]})), Ok(None));
    assert_eq!(
        aa(
            json!({"securityContext": {"appArmorProfile": {"type": "Localhost", "localhostProfile": "k8s-x"}}, "containers": [{"name": "c"}]})
        ),
        Ok(Some((ProfileType::Localhost as i32, "k8s-x".to_owned())))
    );
    assert_eq!(
        aa(
            json!({"containers": [{"name": "c", "securityContext": {"appArmorProfile": {"type": "Unconfined"}}}]})
        ),
        Ok(Some((ProfileType::Unconfined as i32, String::new())))
    );
    assert!(aa(json!({"containers": [{"name": "c", "securityContext": {"appArmorProfile": {"type": "Bogus"}}}]})).is_err());
}

#[test]
fn run_as_non_root_checks() {
    let p = |sc: serde_json::Value| {
        pod_with_spec(json!({"containers": [{"name": "c", "securityContext": sc}]}))
    };
    let check = |pod: &Pod, uid, user| verify_run_as_non_root(pod, first(pod), uid, user);
    assert!(check(&p(json!({"runAsNonRoot": true, "runAsUser": 0})), None, "").is_err());
    assert!(check(
        &p(json!({"runAsNonRoot": true, "runAsUser": 5})),
        Some(0),
        ""
    )
    .is_ok());
    assert!(check(&p(json!({"runAsNonRoot": true})), Some(0), "").is_err());
    assert!(check(&p(json!({"runAsNonRoot": true})), None, "nginx").is_err());
    assert!(check(&p(json!({"runAsNonRoot": true})), Some(1000), "").is_ok());
    assert!(check(&p(json!({})), Some(0), "").is_ok());
    let pod_level = pod_with_spec(
        json!({"securityContext": {"runAsNonRoot": true}, "containers": [{"name": "c"}]}),
    );
    assert!(check(&pod_level, Some(0), "").is_err());
}
