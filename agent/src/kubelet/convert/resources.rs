//! Requests and limits: QoS class, the pod's cgroup, and CRI Linux resources for containers
//! and the sandbox (kubelet's `calculateLinuxResources`, `GetContainerOOMScoreAdjust`,
//! `GetHugepageLimitsFromResources`, `PodRequests`/`PodLimits`).

use std::collections::BTreeMap;

use k8s_cri::v1::{HugepageLimit, LinuxContainerResources};
use k8s_openapi::api::core::v1::{Container, Pod};

use super::error::ConvertError;
use super::quantity::{parse_field, Amount};
use super::{container_path, is_sidecar, NodeInfo};

/// CFS period the kubelet uses (`quotaPeriod`, 100 ms).
pub const CPU_PERIOD_US: i64 = 100_000;
const MIN_SHARES: i64 = 2;
const MAX_SHARES: i64 = 262_144;
const MIN_QUOTA_US: i64 = 1_000;
const GUARANTEED_OOM_SCORE_ADJ: i64 = -997;
const BEST_EFFORT_OOM_SCORE_ADJ: i64 = 1000;
/// Priority from which a pod counts as critical (`scheduling.SystemCriticalPriority`).
const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// A pod's quality-of-service class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosClass {
    /// Every container has equal, non-zero cpu and memory requests and limits.
    Guaranteed,
    /// Some requests or limits, but not Guaranteed.
    Burstable,
    /// No cpu or memory requests or limits at all.
    BestEffort,
}

impl QosClass {
    /// The name used in `status.qosClass`.
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

/// A container's requests and limits, parsed, with requests defaulted from limits as the
/// API server's defaulting does (so pods from manifests behave like pods from the API).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// `resources.requests`.
    pub requests: BTreeMap<String, Amount>,
    /// `resources.limits`.
    pub limits: BTreeMap<String, Amount>,
}

impl Resources {
    /// A request, zero when unset.
    pub fn request(&self, name: &str) -> Amount {
        self.requests.get(name).copied().unwrap_or_default()
    }

    /// A limit, zero when unset.
    pub fn limit(&self, name: &str) -> Amount {
        self.limits.get(name).copied().unwrap_or_default()
    }
}

/// Parses a container's resources; negative or malformed quantities are errors.
pub fn container_resources(pod: &Pod, container: &Container) -> Result<Resources, ConvertError> {
    let base = format!("{}.resources", container_path(pod, container));
    let spec = container.resources.as_ref();
    let limits = parse_list(
        &format!("{base}.limits"),
        spec.and_then(|r| r.limits.as_ref()),
    )?;
    let mut requests = parse_list(
        &format!("{base}.requests"),
        spec.and_then(|r| r.requests.as_ref()),
    )?;
    for (name, amount) in &limits {
        requests.entry(name.clone()).or_insert(*amount);
    }
    Ok(Resources { requests, limits })
}

fn parse_list(
    base: &str,
    list: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
) -> Result<BTreeMap<String, Amount>, ConvertError> {
    let mut out = BTreeMap::new();
    for (name, quantity) in list.into_iter().flatten() {
        let field = format!("{base}.{name}");
        let amount = parse_field(&field, quantity)?;
        if amount.is_negative() {
            return Err(ConvertError::invalid(
                field,
                "must be greater than or equal to 0",
            ));
        }
        out.insert(name.clone(), amount);
    }
    Ok(out)
}

/// All containers the QoS and pod-level sums look at: app containers, then init containers.
fn app_and_init(pod: &Pod) -> (&[Container], &[Container]) {
    let spec = pod.spec.as_ref();
    (
        spec.map(|s| s.containers.as_slice()).unwrap_or_default(),
        spec.and_then(|s| s.init_containers.as_deref())
            .unwrap_or_default(),
    )
}

/// The pod's QoS class (`status.qosClass` if set, else computed as `ComputePodQOS`).
pub fn qos_class(pod: &Pod) -> Result<QosClass, ConvertError> {
    match pod.status.as_ref().and_then(|s| s.qos_class.as_deref()) {
        Some("Guaranteed") => return Ok(QosClass::Guaranteed),
        Some("Burstable") => return Ok(QosClass::Burstable),
        Some("BestEffort") => return Ok(QosClass::BestEffort),
        _ => {}
    }
    let (apps, inits) = app_and_init(pod);
    let mut requests: BTreeMap<&str, Amount> = BTreeMap::new();
    let mut limits: BTreeMap<&str, Amount> = BTreeMap::new();
    let mut guaranteed = true;
    for container in apps.iter().chain(inits) {
        let resources = container_resources(pod, container)?;
        for (name, amount) in qos_resources(&resources.requests) {
            let sum = requests.entry(name).or_default();
            *sum = sum.saturating_add(amount);
        }
        let mut found = 0;
        for (name, amount) in qos_resources(&resources.limits) {
            found += 1;
            let sum = limits.entry(name).or_default();
            *sum = sum.saturating_add(amount);
        }
        if found < 2 {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return Ok(QosClass::BestEffort);
    }
    if guaranteed
        && requests.len() == limits.len()
        && requests
            .iter()
            .all(|(name, req)| limits.get(name) == Some(req))
    {
        return Ok(QosClass::Guaranteed);
    }
    Ok(QosClass::Burstable)
}

/// The positive cpu and memory entries of a list (the only resources QoS considers).
fn qos_resources(
    list: &BTreeMap<String, Amount>,
) -> impl Iterator<Item = (&'static str, Amount)> + '_ {
    ["cpu", "memory"].into_iter().filter_map(|name| {
        list.get(name)
            .copied()
            .filter(|a| *a > Amount::ZERO)
            .map(|a| (name, a))
    })
}

/// The pod's cgroup under `cgroup_root` for the cgroupfs driver, e.g.
/// `/kubepods/burstable/pod<uid>`; Guaranteed pods sit directly under the root.
pub fn pod_cgroup_parent(cgroup_root: &str, pod: &Pod) -> Result<String, ConvertError> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let uid_ok = !uid.is_empty()
        && uid.len() <= 128
        && uid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !uid_ok {
        return Err(ConvertError::invalid(
            "metadata.uid",
            format!("{uid:?} cannot name a cgroup (letters, digits, '-' and '_' only)"),
        ));
    }
    let qos_dir = match qos_class(pod)? {
        QosClass::Guaranteed => "",
        QosClass::Burstable => "burstable/",
        QosClass::BestEffort => "besteffort/",
    };
    let root = cgroup_root.trim_end_matches('/');
    Ok(format!("{root}/{qos_dir}pod{uid}"))
}

/// `MilliCPUToShares`.
pub fn milli_cpu_to_shares(milli: i64) -> i64 {
    if milli == 0 {
        return MIN_SHARES;
    }
    (i128::from(milli) * 1024 / 1000).clamp(i128::from(MIN_SHARES), i128::from(MAX_SHARES)) as i64
}

/// `milliCPUToQuota`: 0 (no quota) without a limit, at least 1 ms per period.
pub fn milli_cpu_to_quota(milli: i64, period: i64) -> i64 {
    if milli == 0 {
        return 0;
    }
    let quota = (i128::from(milli) * i128::from(period) / 1000).max(i128::from(MIN_QUOTA_US));
    i64::try_from(quota).unwrap_or(i64::MAX)
}

/// `calculateLinuxResources`: shares from the cpu request (the limit if there is no
/// request), CFS quota from the cpu limit, memory limit.
fn linux_resources(
    cpu_request: Option<Amount>,
    cpu_limit: Amount,
    memory_limit: Amount,
    node: &NodeInfo,
) -> LinuxContainerResources {
    let shares_from = cpu_request.unwrap_or(cpu_limit);
    let mut resources = LinuxContainerResources {
        cpu_shares: milli_cpu_to_shares(shares_from.milli_value()),
        cpu_period: CPU_PERIOD_US,
        cpu_quota: milli_cpu_to_quota(cpu_limit.milli_value(), CPU_PERIOD_US),
        memory_limit_in_bytes: memory_limit.value(),
        ..Default::default()
    };
    if node.memory_oom_group {
        resources
            .unified
            .insert("memory.oom.group".to_owned(), "1".to_owned());
    }
    resources
}

/// CRI resources of one container: shares, quota, memory, OOM score and hugepages.
pub fn container_linux_resources(
    pod: &Pod,
    container: &Container,
    node: &NodeInfo,
) -> Result<LinuxContainerResources, ConvertError> {
    let res = container_resources(pod, container)?;
    let mut out = linux_resources(
        res.requests.get("cpu").copied(),
        res.limit("cpu"),
        res.limit("memory"),
        node,
    );
    out.oom_score_adj = oom_score_adj(pod, container, node.memory_capacity_bytes)?;
    out.hugepage_limits = hugepage_limits(&res, &node.hugepage_sizes);
    Ok(out)
}

/// `GetContainerOOMScoreAdjust`.
pub fn oom_score_adj(
    pod: &Pod,
    container: &Container,
    memory_capacity: i64,
) -> Result<i64, ConvertError> {
    if is_node_critical(pod) {
        return Ok(GUARANTEED_OOM_SCORE_ADJ);
    }
    match qos_class(pod)? {
        QosClass::Guaranteed => return Ok(GUARANTEED_OOM_SCORE_ADJ),
        QosClass::BestEffort => return Ok(BEST_EFFORT_OOM_SCORE_ADJ),
        QosClass::Burstable => {}
    }
    let score = |request: i64| -> i64 {
        if memory_capacity <= 0 {
            return 1000;
        }
        let ratio = i128::from(request) * 1000 / i128::from(memory_capacity);
        i64::try_from(1000 - ratio).unwrap_or(i64::MIN)
    };
    let mut adj = score(
        container_resources(pod, container)?
            .request("memory")
            .value(),
    );
    if is_sidecar(pod, container) {
        // A sidecar is killed no later than the regular container with the smallest request.
        let (apps, _) = app_and_init(pod);
        let mut min_request: Option<i64> = None;
        for app in apps {
            let request = container_resources(pod, app)?.request("memory").value();
            min_request = Some(min_request.map_or(request, |m| m.min(request)));
        }
        if let Some(min) = min_request.filter(|m| *m != 0) {
            adj = adj.min(score(min));
        }
    }
    if adj < 1000 + GUARANTEED_OOM_SCORE_ADJ {
        return Ok(1000 + GUARANTEED_OOM_SCORE_ADJ);
    }
    if adj == BEST_EFFORT_OOM_SCORE_ADJ {
        return Ok(adj - 1);
    }
    Ok(adj)
}

/// `IsNodeCriticalPod`: critical (static, mirror or system priority) and
/// `system-node-critical`.
fn is_node_critical(pod: &Pod) -> bool {
    let annotations = pod.metadata.annotations.as_ref();
    let annotation = |k: &str| annotations.and_then(|a| a.get(k)).map(String::as_str);
    let is_static = annotation("kubernetes.io/config.source").is_some_and(|s| s != "api");
    let is_mirror = annotation("kubernetes.io/config.mirror").is_some();
    let spec = pod.spec.as_ref();
    let high_priority = spec
        .and_then(|s| s.priority)
        .is_some_and(|p| p >= SYSTEM_CRITICAL_PRIORITY);
    let node_critical_class =
        spec.and_then(|s| s.priority_class_name.as_deref()) == Some("system-node-critical");
    (is_static || is_mirror || high_priority) && node_critical_class
}

/// `GetHugepageLimitsFromResources`: every page size of the node, 0 unless the container
/// asks (limits first, then requests).
fn hugepage_limits(res: &Resources, node_sizes: &[String]) -> Vec<HugepageLimit> {
    let mut wanted: BTreeMap<String, u64> = BTreeMap::new();
    for list in [&res.limits, &res.requests] {
        for (name, amount) in list {
            let Some(size) = name
                .strip_prefix("hugepages-")
                .and_then(|s| Amount::parse(s).ok())
                .and_then(|a| hugepage_unit(a.value()))
            else {
                continue;
            };
            wanted
                .entry(size)
                .or_insert(u64::try_from(amount.value()).unwrap_or(0));
        }
    }
    node_sizes
        .iter()
        .map(|size| HugepageLimit {
            page_size: size.clone(),
            limit: wanted.get(size).copied().unwrap_or(0),
        })
        .collect()
}

/// `HugePageUnitSizeFromByteSize`: 2097152 → "2MB".
fn hugepage_unit(bytes: i64) -> Option<String> {
    const UNITS: [&str; 6] = ["B", "KB", "MB", "GB", "TB", "PB"];
    if bytes <= 0 {
        return None;
    }
    let mut size = bytes;
    let mut idx = 0;
    while size % 1024 == 0 && idx < UNITS.len() - 1 {
        size /= 1024;
        idx += 1;
    }
    if size > 1024 && idx < UNITS.len() - 1 {
        return None;
    }
    Some(format!("{size}{}", UNITS[idx]))
}

/// Pod-level sum of one side (requests or limits), excluding overhead, with init and
/// sidecar containers counted as the scheduler does (`AggregateContainerRequests`).
fn pod_total(
    pod: &Pod,
    side: fn(&Resources) -> &BTreeMap<String, Amount>,
) -> Result<BTreeMap<String, Amount>, ConvertError> {
    let (apps, inits) = app_and_init(pod);
    let mut total: BTreeMap<String, Amount> = BTreeMap::new();
    for app in apps {
        add_into(&mut total, side(&container_resources(pod, app)?));
    }
    let mut sidecars: BTreeMap<String, Amount> = BTreeMap::new();
    let mut init_peak: BTreeMap<String, Amount> = BTreeMap::new();
    for init in inits {
        let res = container_resources(pod, init)?;
        let own = side(&res);
        let in_use = if is_sidecar(pod, init) {
            add_into(&mut total, own);
            add_into(&mut sidecars, own);
            sidecars.clone()
        } else {
            let mut sum = own.clone();
            add_into(&mut sum, &sidecars);
            sum
        };
        max_into(&mut init_peak, &in_use);
    }
    max_into(&mut total, &init_peak);
    Ok(total)
}

fn add_into(sum: &mut BTreeMap<String, Amount>, more: &BTreeMap<String, Amount>) {
    for (name, amount) in more {
        let entry = sum.entry(name.clone()).or_default();
        *entry = entry.saturating_add(*amount);
    }
}

fn max_into(peak: &mut BTreeMap<String, Amount>, other: &BTreeMap<String, Amount>) {
    for (name, amount) in other {
        let entry = peak.entry(name.clone()).or_default();
        *entry = (*entry).max(*amount);
    }
}

/// Sandbox `resources` (the pod's aggregate, without overhead) and `overhead`, as the
/// kubelet's `applySandboxResources` fills them.
pub fn sandbox_resources(
    pod: &Pod,
    node: &NodeInfo,
) -> Result<(LinuxContainerResources, LinuxContainerResources), ConvertError> {
    let requests = pod_total(pod, |r| &r.requests)?;
    let limits = pod_total(pod, |r| &r.limits)?;
    let get = |m: &BTreeMap<String, Amount>, k: &str| m.get(k).copied().unwrap_or_default();
    let resources = linux_resources(
        requests.get("cpu").copied(),
        get(&limits, "cpu"),
        get(&limits, "memory"),
        node,
    );
    let overhead = match pod.spec.as_ref().and_then(|s| s.overhead.as_ref()) {
        Some(list) => {
            let parsed = parse_list("spec.overhead", Some(list))?;
            let cpu = get(&parsed, "cpu");
            linux_resources(Some(cpu), cpu, get(&parsed, "memory"), node)
        }
        None => LinuxContainerResources::default(),
    };
    Ok((resources, overhead))
}

#[cfg(test)]
mod tests;
