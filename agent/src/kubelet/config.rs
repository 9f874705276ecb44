//! The `kubelet:` section of the config file: KubeletConfiguration fields Capstan honours.

use std::path::PathBuf;

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
    pub cluster_dns: Vec<String>,
    /// The cluster's DNS domain.
    pub cluster_domain: String,
    /// Resolver config pods with dnsPolicy Default (and standalone ClusterFirst) inherit.
    pub resolv_conf: PathBuf,
    /// Image pulled for the sandbox by runtimes that need one (containerd).
    pub pod_infra_container_image: Option<String>,
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
            pod_infra_container_image: None,
        }
    }
}
