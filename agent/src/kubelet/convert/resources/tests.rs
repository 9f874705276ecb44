use serde_json::json;

use super::super::test_support::{first, node, pod_with_spec};
use super::*;

fn qos(spec: serde_json::Value) -> Result<QosClass, ConvertError> {
    qos_class(&pod_with_spec(spec))
}

fn res(requests: serde_json::Value, limits: serde_json::Value) -> serde_json::Value {
    json!({"requests": requests, "limits": limits})
}

#[test]
fn qos_classes_as_the_kubelet_computes_them() {
    let c = |r| json!({"containers": [{"name": "a", "resources": r}]});
    assert_eq!(
        qos(json!({"containers": [{"name": "a"}]})),
        Ok(QosClass::BestEffort)
    );
    let cases = [
        (
            res(json!({}), json!({"cpu": "1", "memory": "1Gi"})),
            QosClass::Guaranteed,
        ),
        (
            res(
                json!({"cpu": "1", "memory": "1Gi"}),
                json!({"cpu": "1000m", "memory": "1024Mi"}),
            ),
            QosClass::Guaranteed,
        ),
        (
            res(
                json!({"cpu": "500m", "memory": "1Gi"}),
                json!({"cpu": "1", "memory": "1Gi"}),
            ),
            QosClass::Burstable,
        ),
        (res(json!({"cpu": "1"}), json!({})), QosClass::Burstable),
        (res(json!({}), json!({"cpu": "1"})), QosClass::Burstable),
        (
            res(json!({"cpu": "0", "memory": "0"}), json!({})),
            QosClass::BestEffort,
        ),
        (
            res(
                json!({"hugepages-2Mi": "2Mi"}),
                json!({"hugepages-2Mi": "2Mi"}),
            ),
            QosClass::BestEffort,
        ),
    ];
    for (resources, want) in cases {
        assert_eq!(qos(c(resources.clone())), Ok(want), "{resources}");
    }
    // One BestEffort container makes a Guaranteed-looking pod Burstable; init containers count.
    let g = res(json!({}), json!({"cpu": "1", "memory": "1Gi"}));
    assert_eq!(
        qos(json!({"containers": [{"name": "a", "resources": g}, {"name": "b"}]})),
        Ok(QosClass::Burstable)
    );
    assert_eq!(
        qos(
            json!({"containers": [{"name": "a", "resources": g}], "initContainers": [{"name": "i"}]})
        ),
        Ok(QosClass::Burstable)
    );
}

#[test]
fn status_qos_class_wins_and_bad_quantities_are_errors() {
    let mut pod = pod_with_spec(json!({"containers": [{"name": "a"}]}));
    pod.status = Some(k8s_openapi::api::core::v1::PodStatus {
        qos_class: Some("Guaranteed".into()),
        ..Default::default()
    });
    assert_eq!(qos_class(&pod), Ok(QosClass::Guaranteed));
    let err =
        qos(json!({"containers": [{"name": "web", "resources": {"limits": {"memory": "12X"}}}]}));
    assert_eq!(
        err.map_err(|e| e.field),
        Err("spec.containers[web].resources.limits.memory".to_owned())
    );
    let err = qos(
        json!({"initContainers": [{"name": "i", "resources": {"requests": {"cpu": "-1"}}}], "containers": []}),
    );
    assert_eq!(
        err.map_err(|e| e.field),
        Err("spec.initContainers[i].resources.requests.cpu".to_owned())
    );
}

#[test]
fn cgroup_parent_by_qos_and_hostile_uids() {
    let pod = |spec| pod_with_spec(spec);
    let best = pod(json!({"containers": [{"name": "a"}]}));
    assert_eq!(
        pod_cgroup_parent("/kubepods", &best),
        Ok("/kubepods/besteffort/podu1".to_owned())
    );
    let burst =
        pod(json!({"containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}]}));
    assert_eq!(
        pod_cgroup_parent("/kubepods/", &burst),
        Ok("/kubepods/burstable/podu1".to_owned())
    );
    let guar = pod(
        json!({"containers": [{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}),
    );
    assert_eq!(
        pod_cgroup_parent("/kubepods", &guar),
        Ok("/kubepods/podu1".to_owned())
    );
    for uid in ["", "../../etc", "a/b", "a.b", "\u{0}"] {
        let mut p = best.clone();
        p.metadata.uid = Some(uid.into());
        assert!(pod_cgroup_parent("/kubepods", &p).is_err(), "{uid:?}");
    }
}

#[test]
fn shares_and_quota_match_the_kubelet() {
    assert_eq!(milli_cpu_to_shares(0), 2);
    assert_eq!(milli_cpu_to_shares(1), 2);
    assert_eq!(milli_cpu_to_shares(100), 102);
    assert_eq!(milli_cpu_to_shares(1000), 1024);
    assert_eq!(milli_cpu_to_shares(i64::MAX), 262_144);
    assert_eq!(milli_cpu_to_quota(0, CPU_PERIOD_US), 0);
    assert_eq!(milli_cpu_to_quota(5, CPU_PERIOD_US), 1000);
    assert_eq!(milli_cpu_to_quota(250, CPU_PERIOD_US), 25_000);
    assert_eq!(milli_cpu_to_quota(2000, CPU_PERIOD_US), 200_000);
    assert_eq!(milli_cpu_to_quota(i64::MAX, CPU_PERIOD_US), i64::MAX);
}

#[test]
fn container_resources_to_cri() {
    let pod = pod_with_spec(json!({"containers": [{"name": "a", "resources": {
        "requests": {"cpu": "250m", "memory": "1Gi", "hugepages-2Mi": "4Mi"},
        "limits": {"cpu": "500m", "memory": "2Gi", "hugepages-2Mi": "4Mi"}}}]}));
    let r = container_linux_resources(&pod, first(&pod), &node());
    let r = r.unwrap_or_default();
    assert_eq!(r.cpu_shares, 256);
    assert_eq!(r.cpu_quota, 50_000);
    assert_eq!(r.cpu_period, 100_000);
    assert_eq!(r.memory_limit_in_bytes, 2 << 30);
    // Burstable with 1 GiB of 8 GiB: 1000 - 125.
    assert_eq!(r.oom_score_adj, 875);
    let pages: Vec<_> = r
        .hugepage_limits
        .iter()
        .map(|h| (h.page_size.as_str(), h.limit))
        .collect();
    assert_eq!(pages, [("2MB", 4 << 20), ("1GB", 0)]);
    assert!(r.unified.is_empty());
}

#[test]
fn unset_limits_mean_no_quota_and_minimum_shares() {
    let pod = pod_with_spec(json!({"containers": [{"name": "a"}]}));
    let mut n = node();
    n.memory_oom_group = true;
    let r = container_linux_resources(&pod, first(&pod), &n).unwrap_or_default();
    assert_eq!(
        (r.cpu_shares, r.cpu_quota, r.memory_limit_in_bytes),
        (2, 0, 0)
    );
    assert_eq!(r.oom_score_adj, 1000);
    assert_eq!(
        r.unified.get("memory.oom.group").map(String::as_str),
        Some("1")
    );
    // Only a cpu limit: shares follow the (defaulted) request = limit.
    let pod = pod_with_spec(
        json!({"containers": [{"name": "a", "resources": {"limits": {"cpu": "2"}}}]}),
    );
    let r = container_linux_resources(&pod, first(&pod), &node()).unwrap_or_default();
    assert_eq!((r.cpu_shares, r.cpu_quota), (2048, 200_000));
}

#[test]
fn oom_score_adj_rules() {
    let cap = 8 << 30;
    let burst = |mem: &str| {
        pod_with_spec(
            json!({"containers": [{"name": "a", "resources": {"requests": {"memory": mem}}}]}),
        )
    };
    let score = |p: &Pod| oom_score_adj(p, first(p), cap);
    assert_eq!(score(&burst("1")), Ok(999));
    assert_eq!(score(&burst("4Gi")), Ok(500));
    assert_eq!(score(&burst("8Gi")), Ok(3));
    assert_eq!(score(&burst("100Ei")), Ok(3));
    let guaranteed = pod_with_spec(
        json!({"containers": [{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}),
    );
    assert_eq!(score(&guaranteed), Ok(-997));
    // A static system-node-critical pod is protected like Guaranteed.
    let mut critical = burst("1Gi");
    critical.metadata.annotations =
        Some([("kubernetes.io/config.source".to_owned(), "file".to_owned())].into());
    if let Some(spec) = critical.spec.as_mut() {
        spec.priority_class_name = Some("system-node-critical".into());
    }
    assert_eq!(score(&critical), Ok(-997));
    assert_eq!(
        oom_score_adj(&burst("1Gi"), first(&burst("1Gi")), 0),
        Ok(999)
    );
}

#[test]
fn sidecar_oom_score_follows_smallest_regular_container() {
    let pod = pod_with_spec(json!({
    "initContainers": [{"name": "side", "restartPolicy": "Always", "resources": {"requests": {"memory": "1Gi"}}}],
    "containers": [
        {"name": "a", "resources": {"requests": {"memory": "4Gi"}}},
        {"name": "b", "resources": {"requests": {"memory": "2Gi"}}},
    ]}));
    let side = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .and_then(|i| i.first());
    let side = side.cloned().unwrap_or_default();
    // Own request gives 875; the smallest regular container (2 GiB) gives 750.
    assert_eq!(oom_score_adj(&pod, &side, 8 << 30), Ok(750));
}

#[test]
fn sandbox_resources_aggregate_init_and_sidecars() {
    let pod = pod_with_spec(json!({
        "overhead": {"cpu": "100m", "memory": "64Mi"},
        "initContainers": [
            {"name": "side", "restartPolicy": "Always", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}},
            {"name": "big", "resources": {"limits": {"cpu": "3", "memory": "1Gi"}}},
        ],
        "containers": [{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "2Gi"}}}],
    }));
    let (resources, overhead) = sandbox_resources(&pod, &node()).unwrap_or_default();
    // Regular + sidecar = 2 cpu, 3 GiB; while "big" runs: sidecar + big = 4 cpu, 2 GiB.
    assert_eq!(resources.cpu_quota, 400_000);
    assert_eq!(resources.cpu_shares, 4096);
    assert_eq!(resources.memory_limit_in_bytes, 3 << 30);
    assert_eq!((overhead.cpu_shares, overhead.cpu_quota), (102, 10_000));
    assert_eq!(overhead.memory_limit_in_bytes, 64 << 20);
    let plain = pod_with_spec(json!({"containers": [{"name": "a"}]}));
    let (_, overhead) = sandbox_resources(&plain, &node()).unwrap_or_default();
    assert_eq!(overhead, LinuxContainerResources::default());
}
