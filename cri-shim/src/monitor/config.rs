//! What a sandbox monitor is asked to set up: its namespaces, hostname, sysctls and cgroup.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Name of the config file the launcher writes into the run directory.
pub const CONFIG_FILE: &str = "monitor.json";
/// Name of the monitor's socket in the run directory.
pub const SOCKET_FILE: &str = "monitor.sock";
/// Name of the file holding the monitor's PID (in the host PID namespace).
pub const PID_FILE: &str = "monitor.pid";
/// Name of the monitor's own log (its stderr) in the run directory.
pub const LOG_FILE: &str = "monitor.log";
/// Directory of the namespace pins in the run directory.
pub const NS_DIR: &str = "ns";

/// Whether the pod gets its own namespace of a kind or shares the host's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NamespaceChoice {
    /// A fresh namespace, pinned under `<runDir>/ns/`.
    New,
    /// The host's namespace.
    Host,
}

/// The pod's PID namespace arrangement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PidChoice {
    /// One namespace for the pod: the monitor is its PID 1 and reaps orphans.
    Pod,
    /// Each container gets its own namespace (the monitor stays in the host's).
    Container,
    /// Everything runs in the host's PID namespace.
    Node,
}

/// Everything `capstan shim start` needs, written as JSON into the run directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxMonitorConfig {
    /// The sandbox this monitor serves (for messages).
    pub sandbox_id: String,
    /// The sandbox's run directory (socket, pid file, namespace pins).
    pub run_dir: PathBuf,
    /// The `capstan` executable to run as `shim start`.
    pub shim_binary: PathBuf,
    /// Hostname set in a new UTS namespace (ignored with the host's).
    #[serde(default)]
    pub hostname: String,
    /// Network namespace.
    pub network: NamespaceChoice,
    /// IPC namespace.
    pub ipc: NamespaceChoice,
    /// UTS namespace.
    pub uts: NamespaceChoice,
    /// PID namespace arrangement.
    pub pid: PidChoice,
    /// Namespaced sysctls to set, by name (`.` or `/` separated).
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    /// Cgroup (relative to each hierarchy's root) the monitor moves itself into.
    #[serde(default)]
    pub cgroup_path: Option<String>,
}

impl SandboxMonitorConfig {
    /// Refuse what the monitor cannot do safely: node-wide sysctls, sysctls of a shared
    /// namespace, a hostname without a UTS namespace of its own.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in &self.sysctls {
            sysctl_path(name)?;
            if value.contains('\n') {
                return Err(format!("sysctl {name:?}: value must be one line"));
            }
            match sysctl_namespace(name) {
                None => {
                    return Err(format!(
                        "sysctl {name:?} is not namespaced: a pod cannot set it"
                    ))
                }
                Some(Namespace::Net) if self.network == NamespaceChoice::Host => {
                    return Err(format!(
                        "sysctl {name:?} needs the pod's own network namespace"
                    ))
                }
                Some(Namespace::Ipc) if self.ipc == NamespaceChoice::Host => {
                    return Err(format!("sysctl {name:?} needs the pod's own IPC namespace"))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// `<runDir>/ns/<kind>`: where a namespace of the pod is pinned.
    pub fn ns_pin(run_dir: &Path, kind: &str) -> PathBuf {
        run_dir.join(NS_DIR).join(kind)
    }
}

/// Namespaces a sysctl may belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Namespace {
    Net,
    Ipc,
}

/// The namespace isolating a sysctl, or `None` for node-wide ones.
fn sysctl_namespace(name: &str) -> Option<Namespace> {
    let name = name.replace('/', ".");
    if name.starts_with("kernel.shm")
        || name.starts_with("kernel.msg")
        || name == "kernel.sem"
        || name.starts_with("fs.mqueue.")
    {
        Some(Namespace::Ipc)
    } else if name.starts_with("net.") {
        Some(Namespace::Net)
    } else {
        None
    }
}

/// The sysctl's file under /proc/sys. A name using `/` keeps its dots (interface names
/// such as `eth0.100`); otherwise dots separate components.
pub fn sysctl_path(name: &str) -> Result<PathBuf, String> {
    let relative = if name.contains('/') {
        name.to_owned()
    } else {
        name.replace('.', "/")
    };
    let valid = !relative.is_empty()
        && relative
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if !valid {
        return Err(format!("sysctl {name:?} is not a valid name"));
    }
    Ok(Path::new("/proc/sys").join(relative))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(sysctls: &[(&str, &str)]) -> SandboxMonitorConfig {
        SandboxMonitorConfig {
            sandbox_id: "s".into(),
            run_dir: "/run/x".into(),
            shim_binary: "/bin/capstan".into(),
            hostname: "h".into(),
            network: NamespaceChoice::New,
            ipc: NamespaceChoice::Host,
            uts: NamespaceChoice::New,
            pid: PidChoice::Pod,
            sysctls: sysctls
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cgroup_path: None,
        }
    }

    #[test]
    fn only_namespaced_sysctls_of_own_namespaces_pass() {
        assert!(config(&[("net.ipv4.ip_unprivileged_port_start", "0")])
            .validate()
            .is_ok());
        assert!(config(&[("net/ipv4/conf/eth0.100/forwarding", "1")])
            .validate()
            .is_ok());
        let err = config(&[("kernel.panic", "1")]).validate().unwrap_err();
        assert!(err.contains("kernel.panic"), "{err}");
        // The IPC namespace is the host's here.
        assert!(config(&[("kernel.shmmax", "1")]).validate().is_err());
        assert!(config(&[("net.ipv4.ping_group_range", "0 1\n")])
            .validate()
            .is_err());
        assert!(config(&[("net/../kernel/panic", "1")]).validate().is_err());
    }

    #[test]
    fn sysctl_paths_follow_the_separator() {
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward").unwrap(),
            Path::new("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0.100/rp_filter").unwrap(),
            Path::new("/proc/sys/net/ipv4/conf/eth0.100/rp_filter")
        );
        assert!(sysctl_path("net..x").is_err());
        assert!(sysctl_path("/abs").is_err());
    }

    #[test]
    fn config_round_trips_as_camel_case_json() {
        let c = config(&[("kernel.sem", "1 2 3 4")]);
        let json = serde_json::to_string(&c).unwrap();
        assert!(
            json.contains("\"sandboxId\"") && json.contains("\"pid\":\"pod\""),
            "{json}"
        );
        assert_eq!(
            serde_json::from_str::<SandboxMonitorConfig>(&json).unwrap(),
            c
        );
    }
}
