//! The `kubelet:` section of the config file: KubeletConfiguration fields Capstan honours.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Taint;
use serde::Deserialize;

/// Kubelet settings (field names as in KubeletConfiguration, camelCase).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeletConfig {
    /// Directory of static pod manifests (`--pod-manifest-path`); none: no static pods.
    pub static_pod_path: Option<PathBuf>,
    /// The kubelet's state root: `pods/<uid>/volumes`, `pods/<uid>/containers`, ...
    pub root_dir: PathBuf,
    /// Container logs: `<podLogsDir>/<ns>_<name>_<uid>/<container>/<restart>.log`.
    pub pod_logs_dir: PathBuf,
    /// The node's name; defaults to the host name.
    pub node_name: Option<String>,
    /// Cgroup parent of all pods (cgroupfs layout, relative to each hierarchy).
    pub cgroup_root: String,
    /// The agent's local API socket (`capstan pods`, `logs`, `exec`).
    pub local_api_socket: PathBuf,
    /// `unix:///...` of a CRI runtime; none: serve the built-in runtime in-process.
    pub container_runtime_endpoint: Option<String>,
    /// Cluster DNS servers written into pods' resolv.conf (ClusterFirst).
    #[serde(rename = "clusterDNS")]
    pub cluster_dns: Vec<String>,
    /// The cluster's DNS domain.
    pub cluster_domain: String,
    /// Resolver config pods with dnsPolicy Default (and standalone ClusterFirst) inherit.
    pub resolv_conf: PathBuf,
    /// Crash-loop back-off (KubeletConfiguration `crashLoopBackOff`).
    pub crash_loop_back_off: CrashLoopBackOff,
    /// Create (or adopt) this node's Node object at start; false: wait for an admin to.
    pub register_node: bool,
    /// Taints a newly created Node gets; an existing Node keeps the taints it has.
    pub register_with_taints: Vec<Taint>,
    /// Capstan extension (the kubelet's `--node-labels` flag as a field): labels set on the
    /// Node at registration and kept there. Keys in the kubernetes.io/k8s.io namespaces are
    /// limited to the ones the kubelet may set (`node.kubernetes.io/*`,
    /// `kubelet.kubernetes.io/*`, topology and instance-type labels).
    pub node_labels: BTreeMap<String, String>,
    /// Pods this node runs at most (capacity and allocatable `pods`).
    pub max_pods: i64,
    /// Resources reserved for Kubernetes daemons (`cpu`, `memory`, `ephemeral-storage`).
    pub kube_reserved: BTreeMap<String, String>,
    /// Resources reserved for the OS (`cpu`, `memory`, `ephemeral-storage`).
    pub system_reserved: BTreeMap<String, String>,
    /// Hard eviction thresholds by signal (`memory.available: 100Mi`, `nodefs.available: 10%`);
    /// unset: the kubelet's defaults. They lower allocatable and drive the pressure conditions.
    pub eviction_hard: Option<BTreeMap<String, String>>,
    /// How often node status is computed (and patched when it changed), as a Go duration.
    pub node_status_update_frequency: String,
    /// Longest time between status patches even when nothing changed, as a Go duration.
    pub node_status_report_frequency: String,
    /// The node Lease's duration; it is renewed every quarter of it.
    pub node_lease_duration_seconds: i32,
}

/// KubeletConfiguration `crashLoopBackOff`: the cap of the restart back-off.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct CrashLoopBackOff {
    /// Largest delay between restarts, as a Go duration (`300s`, `5m`, `1s`); default 5m.
    pub max_container_restart_period: Option<String>,
}

impl CrashLoopBackOff {
    /// The cap (5 minutes unless configured; an unparsable value is refused at load).
    pub fn max(&self) -> Duration {
        self.max_container_restart_period
            .as_deref()
            .and_then(|text| parse_go_duration(text).ok())
            .unwrap_or(Duration::from_secs(300))
    }
}

/// A Go duration string of whole units: `1h`, `5m`, `30s`, `500ms`, or combinations.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err("empty duration".to_owned());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration {text:?}"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "h" => Duration::from_secs(3600),
            "m" => Duration::from_secs(60),
            "s" => Duration::from_secs(1),
            "ms" => Duration::from_millis(1),
            other => return Err(format!("invalid duration {text:?}: unknown unit {other:?}")),
        };
        total =
            total.saturating_add(unit.saturating_mul(u32::try_from(number).unwrap_or(u32::MAX)));
        rest = &rest[unit_len..];
    }
    Ok(total)
}

impl Default for KubeletConfig {
    fn default() -> Self {
        Self {
            static_pod_path: None,
            root_dir: PathBuf::from("/var/lib/capstan/kubelet"),
            pod_logs_dir: PathBuf::from("/var/log/pods"),
            node_name: None,
            cgroup_root: "/kubepods".to_owned(),
            local_api_socket: PathBuf::from("/run/capstan/agent.sock"),
            container_runtime_endpoint: None,
            cluster_dns: Vec::new(),
            cluster_domain: "cluster.local".to_owned(),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            crash_loop_back_off: CrashLoopBackOff::default(),
            register_node: true,
            register_with_taints: Vec::new(),
            node_labels: BTreeMap::new(),
            max_pods: 110,
            kube_reserved: BTreeMap::new(),
            system_reserved: BTreeMap::new(),
            eviction_hard: None,
            node_status_update_frequency: "10s".to_owned(),
            node_status_report_frequency: "5m".to_owned(),
            node_lease_duration_seconds: 40,
        }
    }
}

impl KubeletConfig {
    /// Refuse settings that parse but cannot be used.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(text) = &self.crash_loop_back_off.max_container_restart_period {
            let max = parse_go_duration(text)
                .map_err(|e| format!("kubelet.crashLoopBackOff.maxContainerRestartPeriod: {e}"))?;
            if max < Duration::from_secs(1) {
                return Err(
                    "kubelet.crashLoopBackOff.maxContainerRestartPeriod: must be at least 1s"
                        .to_owned(),
                );
            }
        }
        crate::kubelet::node_status::validate_config(self).map_err(|e| format!("kubelet.{e}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_and_garbage_is_refused() {
        assert_eq!(parse_go_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_go_duration("5 minutes").is_err());
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("s").is_err());
    }

    #[test]
    fn a_too_short_back_off_cap_is_refused() {
        let mut config = KubeletConfig::default();
        assert!(config.validate().is_ok());
        config.crash_loop_back_off.max_container_restart_period = Some("10ms".to_owned());
        assert!(config.validate().unwrap_err().contains("at least 1s"));
        config.crash_loop_back_off.max_container_restart_period = Some("1s".to_owned());
        assert_eq!(config.crash_loop_back_off.max(), Duration::from_secs(1));
    }
}
