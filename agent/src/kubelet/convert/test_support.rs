//! Test fixtures: pods written as JSON, and a node/pod context.

use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::quantity::Amount;
use super::{Allocatable, DnsSettings, NodeInfo, PodContext, ResolvConf};

/// A pod from JSON; panics on fixtures that do not deserialise (a bug in the test).
pub fn pod(value: serde_json::Value) -> Pod {
    match serde_json::from_value(value) {
        Ok(pod) => pod,
        Err(e) => panic!("bad fixture: {e}"),
    }
}

/// A pod `web` in `default` with uid `u1` and the given spec.
pub fn pod_with_spec(spec: serde_json::Value) -> Pod {
    pod(serde_json::json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
        "spec": spec,
    }))
}

/// The pod's first container.
pub fn first(pod: &Pod) -> &Container {
    match pod.spec.as_ref().and_then(|s| s.containers.first()) {
        Some(c) => c,
        None => panic!("fixture has no containers"),
    }
}

/// A node with 4 CPUs, 8 GiB, cluster DNS 10.96.0.10 and a host resolv.conf.
pub fn node() -> NodeInfo {
    let gib = |n: i64| Amount::from_units(n << 30);
    NodeInfo {
        name: "node-1".into(),
        host_ips: vec!["192.168.1.10".into(), "fd00::10".into()],
        allocatable: Allocatable {
            cpu: Some(Amount::from_units(4)),
            memory: Some(gib(8)),
            ephemeral_storage: Some(gib(100)),
        },
        memory_capacity_bytes: 8 << 30,
        hugepage_sizes: vec!["2MB".into(), "1GB".into()],
        seccomp_profile_root: PathBuf::from("/var/lib/capstan/kubelet/seccomp"),
        seccomp_default: false,
        memory_oom_group: false,
        dns: DnsSettings {
            cluster_dns: vec!["10.96.0.10".into()],
            cluster_domain: "cluster.local".into(),
            host: Some(ResolvConf {
                nameservers: vec!["192.168.1.1".into()],
                searches: vec!["corp.example".into()],
                options: vec!["edns0".into()],
            }),
        },
    }
}

/// A context on [`node`] for a pod with IPs 10.0.0.5 and fd10::5.
pub fn ctx(node: NodeInfo) -> PodContext {
    PodContext {
        node: Arc::new(node),
        pod_ips: vec!["10.0.0.5".into(), "fd10::5".into()],
        cgroup_parent: "/kubepods/burstable/podu1".into(),
        pod_log_dir: PathBuf::from("/var/log/pods/default_web_u1"),
        objects: Default::default(),
    }
}
