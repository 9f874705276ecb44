//! `linux.sysctl`: kernel parameters of the container's namespaces, written under
//! `/proc/sys` after pivot_root (so namespaced keys reach the container's namespaces).

use std::collections::HashMap;
use std::path::PathBuf;

use super::error::{ExecutorError, Result, SysContext};

/// Writes every parameter; keys are dotted (`net.ipv4.ip_forward`) or slashed.
pub fn apply(sysctl: &HashMap<String, String>) -> Result<()> {
    let mut keys: Vec<&String> = sysctl.keys().collect();
    keys.sort();
    for key in keys {
        let path = path_of(key)?;
        std::fs::write(&path, sysctl[key].as_bytes())
            .sys(|| format!("setting sysctl {key} ({})", path.display()))?;
    }
    Ok(())
}

/// `/proc/sys/...` for a key; keys that would leave `/proc/sys` are refused.
pub fn path_of(key: &str) -> Result<PathBuf> {
    let relative = if key.contains('/') {
        key.to_owned()
    } else {
        key.replace('.', "/")
    };
    let relative = relative.trim_start_matches('/');
    if relative.is_empty()
        || relative
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(ExecutorError::Invalid(format!("bad sysctl name {key:?}")));
    }
    Ok(PathBuf::from("/proc/sys").join(relative))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_and_slashed_keys() {
        assert_eq!(
            path_of("net.ipv4.ip_forward").expect("path"),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            path_of("kernel/shm_rmid_forced").expect("path"),
            PathBuf::from("/proc/sys/kernel/shm_rmid_forced")
        );
    }

    #[test]
    fn escaping_keys_are_refused() {
        for key in ["", "..", "net/../../etc/passwd", "net..x", "/"] {
            assert!(path_of(key).is_err(), "{key}");
        }
    }
}
