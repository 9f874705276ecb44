use serde_json::json;

use super::super::test_support::{ctx, node, pod, pod_with_spec};
use super::*;
use k8s_cri::v1::NamespaceMode;

fn full_pod() -> Pod {
    pod(json!({
        "metadata": {"name": "web", "namespace": "shop", "uid": "u1", "labels": {"app": "web"}},
        "spec": {
            "hostname": "box", "subdomain": "sub",
            "shareProcessNamespace": true,
            "securityContext": {"runAsUser": 1000, "runAsGroup": 2000, "fsGroup": 3000,
                                "supplementalGroups": [4000, 5000],
                                "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]},
            "containers": [{"name": "c", "ports": [
                {"containerPort": 80, "hostPort": 8080},
                {"containerPort": 53, "protocol": "UDP", "hostPort": 5353, "hostIP": "127.0.0.1"},
                {"containerPort": 9090, "name": "metrics"},
                {"containerPort": 9091, "name": "metrics"},
                {"containerPort": 80, "hostPort": 8080},
                {"containerPort": 132, "protocol": "SCTP", "hostIP": "::1", "hostPort": 1320}]}],
        },
    }))
}

#[test]
fn sandbox_config_identity_and_linux() {
    let p = full_pod();
    let c = sandbox_config(&p, &ctx(node()), 2);
    let Ok(c) = c else { panic!("{c:?}") };
    let meta = c.metadata.unwrap_or_default();
    assert_eq!(
        (
            meta.name.as_str(),
            meta.namespace.as_str(),
            meta.uid.as_str(),
            meta.attempt
        ),
        ("web", "shop", "u1", 2)
    );
    assert_eq!(c.hostname, "box");
    assert_eq!(c.log_directory, "/var/log/pods/default_web_u1");
    assert_eq!(c.labels.get("app").map(String::as_str), Some("web"));
    assert_eq!(
        c.dns_config.map(|d| d.servers),
        Some(vec!["10.96.0.10".to_owned()])
    );
    let linux = c.linux.unwrap_or_default();
    assert_eq!(linux.cgroup_parent, "/kubepods/burstable/podu1");
    assert_eq!(
        linux
            .sysctls
            .get("net.ipv4.ip_unprivileged_port_start")
            .map(String::as_str),
        Some("0")
    );
    let sc = linux.security_context.unwrap_or_default();
    assert_eq!(sc.run_as_user.map(|v| v.value), Some(1000));
    assert_eq!(sc.run_as_group.map(|v| v.value), Some(2000));
    assert_eq!(sc.supplemental_groups, [3000, 4000, 5000]);
    assert!(!sc.privileged);
    assert_eq!(
        sc.seccomp.map(|s| s.profile_type),
        Some(ProfileType::RuntimeDefault as i32)
    );
    let ns = sc.namespace_options.unwrap_or_default();
    assert_eq!(ns.pid, NamespaceMode::Pod as i32);
    assert_eq!(ns.network, NamespaceMode::Pod as i32);
    assert_eq!(ns.ipc, NamespaceMode::Pod as i32);
}

use k8s_cri::v1::security_profile::ProfileType;

#[test]
fn port_mappings_like_make_port_mappings() {
    let ports: Vec<_> = port_mappings(&full_pod())
        .into_iter()
        .map(|p| (p.protocol, p.container_port, p.host_port, p.host_ip))
        .collect();
    assert_eq!(
        ports,
        [
            (Protocol::Tcp as i32, 80, 8080, String::new()),
            (Protocol::Udp as i32, 53, 5353, "127.0.0.1".to_owned()),
            (Protocol::Tcp as i32, 9090, 0, String::new()),
            (Protocol::Sctp as i32, 132, 1320, "::1".to_owned()),
        ]
    );
}

#[test]
fn host_namespaces_and_privileged_containers() {
    let p = pod_with_spec(
        json!({"hostNetwork": true, "hostPID": true, "hostIPC": true,
        "initContainers": [{"name": "i", "securityContext": {"privileged": true}}],
        "containers": [{"name": "c"}]}),
    );
    let c = sandbox_config(&p, &ctx(node()), 0).unwrap_or_default();
    assert_eq!(c.hostname, "");
    let sc = c.linux.and_then(|l| l.security_context).unwrap_or_default();
    assert!(sc.privileged);
    let ns = sc.namespace_options.unwrap_or_default();
    assert_eq!(
        (ns.network, ns.pid, ns.ipc),
        (
            NamespaceMode::Node as i32,
            NamespaceMode::Node as i32,
            NamespaceMode::Node as i32
        )
    );
    let plain = pod_with_spec(json!({"containers": [{"name": "c"}]}));
    let ns = super::super::security::namespace_options(&plain).unwrap_or_default();
    assert_eq!(ns.pid, NamespaceMode::Container as i32);
    let no_userns = pod_with_spec(json!({"hostUsers": false, "containers": [{"name": "c"}]}));
    assert_eq!(
        sandbox_config(&no_userns, &ctx(node()), 0).map_err(|e| e.field),
        Err("spec.hostUsers".to_owned())
    );
}

#[test]
fn hostnames() {
    let host = |spec: serde_json::Value, name: &str| {
        let mut p = pod_with_spec(spec);
        p.metadata.name = Some(name.into());
        pod_hostname_and_domain(&p, "cluster.local")
    };
    assert_eq!(host(json!({}), "web"), Ok(("web".into(), String::new())));
    assert_eq!(
        host(json!({"subdomain": "db"}), "web"),
        Ok(("web".into(), "db.default.svc.cluster.local".into()))
    );
    let long = format!("{}-{}", "a".repeat(62), "b".repeat(10));
    assert_eq!(host(json!({}), &long).map(|h| h.0), Ok("a".repeat(62)));
    assert!(host(json!({"hostname": "Not_Valid"}), "web").is_err());
    assert!(host(json!({"subdomain": "-x"}), "web").is_err());
    assert!(host(json!({}), &"-".repeat(70)).is_err());
    assert_eq!(host(json!({}), &"é".repeat(40)).map(|h| h.0.len()), Ok(62));
}

#[test]
fn fqdn_hostname() {
    let p = pod_with_spec(
        json!({"hostname": "h", "subdomain": "s", "setHostnameAsFQDN": true, "containers": []}),
    );
    let c = sandbox_config(&p, &ctx(node()), 0).unwrap_or_default();
    assert_eq!(c.hostname, "h.s.default.svc.cluster.local");
    let long = pod_with_spec(
        json!({"hostname": "h".repeat(40), "subdomain": "s", "setHostnameAsFQDN": true, "containers": []}),
    );
    assert_eq!(
        sandbox_config(&long, &ctx(node()), 0).map_err(|e| e.field),
        Err("spec.setHostnameAsFQDN".to_owned())
    );
}

#[test]
fn log_directory_names() {
    let root = Path::new("/var/log/pods");
    let p = pod_with_spec(json!({"containers": []}));
    assert_eq!(
        pod_log_directory(root, &p),
        Ok(PathBuf::from("/var/log/pods/default_web_u1"))
    );
    let mut evil = p.clone();
    evil.metadata.name = Some("../../etc".into());
    assert_eq!(
        pod_log_directory(root, &evil).map_err(|e| e.field),
        Err("metadata.name".to_owned())
    );
    let mut empty = p;
    empty.metadata.uid = None;
    assert!(pod_log_directory(root, &empty).is_err());
}
