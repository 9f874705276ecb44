//! Pod → CRI conversion, as the kubelet's kuberuntime does it: pure functions from a
//! `k8s_openapi` Pod plus node facts to `k8s_cri::v1` configs.
//!
//! Entry points:
//! - [`sandbox_config`]`(pod, ctx, attempt)` → `PodSandboxConfig` (metadata, hostname,
//!   log directory, DNS, port mappings, labels, Linux: cgroup parent, namespaces, sysctls,
//!   users/groups, seccomp, resources and overhead).
//! - [`container_config`]`(pod, container, inputs, ctx)` → `ContainerConfig` (command/args
//!   with `$(VAR)` expansion, env incl. downward API, mounts, log path, resources, security).
//! - [`qos_class`], [`pod_cgroup_parent`], [`pod_log_directory`], [`pod_hostname_and_domain`],
//!   [`verify_run_as_non_root`], and the label constants with [`SandboxIdentity`],
//!   [`ContainerIdentity`] and [`ContainerRecord`] to read CRI objects back when adopting.
//!
//! Pods are taken as written: requests default from limits and an empty `dnsPolicy` means
//! ClusterFirst, as API defaulting would have made them.

use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::kubelet::api_objects::PodObjects;

mod container;
mod dns;
mod downward;
mod env;
mod error;
pub mod expansion;
mod labels;
mod quantity;
mod resources;
mod sandbox;
mod security;
mod service_env;
#[cfg(test)]
mod test_support;

pub use container::{container_config, container_log_path, ContainerInputs};
pub use dns::{pod_dns_config, DnsSettings, ResolvConf, ResolvConfError};
pub use downward::{format_map, pod_field_value, resource_field_value};
pub use env::{container_env, invalid_env_from_keys};
pub use error::{ConvertError, Problem};
pub use labels::*;
pub use quantity::{parse_field as parse_quantity_field, Amount, QuantityError};
pub use resources::{
    container_linux_resources, container_resources, milli_cpu_to_quota, milli_cpu_to_shares,
    oom_score_adj, pod_cgroup_parent, qos_class, sandbox_resources, QosClass, Resources,
    CPU_PERIOD_US,
};
pub use sandbox::{pod_hostname_and_domain, pod_log_directory, port_mappings, sandbox_config};
pub use security::{
    container_security_context, namespace_options, sandbox_security_context, verify_run_as_non_root,
};
pub use service_env::service_env;

/// Facts about the node that shape every pod's CRI config.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    /// The node's name (`spec.nodeName` of its pods).
    pub name: String,
    /// The node's IPs, preferred family first (`status.hostIP` is the first).
    pub host_ips: Vec<String>,
    /// Allocatable resources: what `resourceFieldRef` reports for unset limits.
    pub allocatable: Allocatable,
    /// Total memory, for Burstable containers' OOM score.
    pub memory_capacity_bytes: i64,
    /// Huge page sizes the node has (`2MB`, `1GB`), each given a limit (0 unless asked).
    pub hugepage_sizes: Vec<String>,
    /// Directory `Localhost` seccomp profiles are relative to (`<root-dir>/seccomp`).
    pub seccomp_profile_root: PathBuf,
    /// KubeletConfiguration `seccompDefault`: RuntimeDefault instead of Unconfined.
    pub seccomp_default: bool,
    /// Put `memory.oom.group=1` in containers' unified resources (cgroup v2 without
    /// `singleProcessOOMKill`).
    pub memory_oom_group: bool,
    /// DNS settings pods get.
    pub dns: DnsSettings,
}

/// Node allocatable resources; `None` where the node does not report one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allocatable {
    /// CPU.
    pub cpu: Option<Amount>,
    /// Memory in bytes.
    pub memory: Option<Amount>,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage: Option<Amount>,
}

/// Facts about one pod that are not in its spec.
#[derive(Debug, Clone)]
pub struct PodContext {
    /// The node it runs on.
    pub node: Arc<NodeInfo>,
    /// The pod's IPs from the sandbox status, preferred family first.
    pub pod_ips: Vec<String>,
    /// The pod's cgroup (see [`pod_cgroup_parent`]).
    pub cgroup_parent: String,
    /// `<podLogsDir>/<ns>_<name>_<uid>` (see [`pod_log_directory`]).
    pub pod_log_dir: PathBuf,
    /// The API objects the pod refers to (ConfigMaps and Secrets for env and envFrom,
    /// Services for service variables); empty for static pods without an API server.
    pub objects: Arc<PodObjects>,
}

/// JSON path of a container, e.g. `spec.containers[web]` or `spec.initContainers[setup]`.
fn container_path(pod: &Pod, container: &Container) -> String {
    let spec = pod.spec.as_ref();
    let is_init = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default()
        .iter()
        .any(|c| std::ptr::eq(c, container) || c.name == container.name)
        && !spec
            .map(|s| s.containers.as_slice())
            .unwrap_or_default()
            .iter()
            .any(|c| std::ptr::eq(c, container));
    let list = if is_init {
        "initContainers"
    } else {
        "containers"
    };
    format!("spec.{list}[{}]", container.name)
}

/// An init container with `restartPolicy: Always`.
fn is_sidecar(pod: &Pod, container: &Container) -> bool {
    container.restart_policy.as_deref() == Some("Always")
        && pod
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.as_deref())
            .unwrap_or_default()
            .iter()
            .any(|c| c.name == container.name)
}
