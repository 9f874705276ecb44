//! Which sysctls a pod may set: only those its own namespaces isolate.

use crate::runtime::error::RuntimeError;

/// The namespace a sysctl belongs to, or `None` when it is node-wide.
fn namespace_of(name: &str) -> Option<&'static str> {
    let name = name.replace('/', ".");
    if name.starts_with("kernel.shm")
        || name.starts_with("kernel.msg")
        || name == "kernel.sem"
        || name.starts_with("fs.mqueue.")
    {
        Some("ipc")
    } else if name.starts_with("net.") {
        Some("net")
    } else {
        None
    }
}

/// Refuse sysctls that are not namespaced, or whose namespace the pod shares with the host.
pub fn validate<'a>(
    names: impl IntoIterator<Item = &'a String>,
    host_network: bool,
    host_ipc: bool,
) -> Result<(), RuntimeError> {
    for name in names {
        match namespace_of(name) {
            None => {
                return Err(RuntimeError::InvalidArgument(format!(
                    "sysctl {name:?} is not namespaced: a pod cannot set it"
                )))
            }
            Some("net") if host_network => {
                return Err(RuntimeError::InvalidArgument(format!(
                    "sysctl {name:?} cannot be set on a pod using the host network"
                )))
            }
            Some("ipc") if host_ipc => {
                return Err(RuntimeError::InvalidArgument(format!(
                    "sysctl {name:?} cannot be set on a pod using the host IPC namespace"
                )))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, host_network: bool, host_ipc: bool) -> bool {
        validate([&name.to_owned()], host_network, host_ipc).is_ok()
    }

    #[test]
    fn namespaced_sysctls_pass_node_wide_ones_fail() {
        assert!(check("net.ipv4.ip_unprivileged_port_start", false, false));
        assert!(check("net/ipv4/ping_group_range", false, false));
        assert!(check("kernel.shmmax", false, false));
        assert!(check("kernel.sem", false, false));
        assert!(check("fs.mqueue.msg_max", false, false));
        assert!(!check("kernel.panic", false, false));
        assert!(!check("vm.swappiness", false, false));
        assert!(!check("net.ipv4.ip_forward", true, false));
        assert!(!check("kernel.msgmax", false, true));
    }
}
