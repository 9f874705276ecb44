//! The agent's config file (`/etc/capstan/config.yaml`).

use std::path::Path;

use agent::kubelet::config::KubeletConfig;
use anyhow::Context;
use cri_shim::config::RuntimeConfig;
use serde::Deserialize;

/// Top-level config file. Sections for the proxy and DNS join as they are built.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigFile {
    /// The kubelet (KubeletConfiguration fields).
    pub kubelet: KubeletConfig,
    /// The built-in CRI runtime.
    pub runtime: RuntimeConfig,
}

impl ConfigFile {
    /// Load `path`; a missing file means all defaults.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("reading config {}", path.display())),
        };
        serde_yaml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_section_parses_and_typos_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(
            &path,
            "runtime:\n  root: /tmp/x\n  registries:\n    127.0.0.1:5000:\n      insecure: true\n      mirrors: [\"127.0.0.1:6000\"]\n  unpackLimits:\n    maxLayerEntries: 10\n",
        )
        .unwrap();
        let config = ConfigFile::load(&path).unwrap();
        assert_eq!(config.runtime.root, Path::new("/tmp/x"));
        assert!(config.runtime.registry("127.0.0.1:5000").insecure);
        assert_eq!(config.runtime.unpack_limits.limits().max_entries, 10);

        std::fs::write(&path, "runtime:\n  rot: /tmp/x\n").unwrap();
        let err = format!("{:#}", ConfigFile::load(&path).unwrap_err());
        assert!(err.contains("rot"), "{err}");
        assert!(ConfigFile::load(&dir.path().join("absent.yaml")).is_ok());
    }

    #[test]
    fn the_shipped_default_config_is_valid_and_matches_the_built_in_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/config.yaml");
        let file = ConfigFile::load(&path).unwrap();
        let (kubelet, defaults) = (file.kubelet, KubeletConfig::default());
        assert_eq!(kubelet.root_dir, defaults.root_dir);
        assert_eq!(kubelet.pod_logs_dir, defaults.pod_logs_dir);
        assert_eq!(kubelet.cgroup_root, defaults.cgroup_root);
        assert_eq!(kubelet.local_api_socket, defaults.local_api_socket);
        assert_eq!(kubelet.cluster_domain, defaults.cluster_domain);
        assert_eq!(
            kubelet.crash_loop_back_off.max(),
            defaults.crash_loop_back_off.max()
        );
        assert!(kubelet.validate().is_ok());
        let shipped = file.runtime;
        let built_in = RuntimeConfig::default();
        assert_eq!(shipped.root, built_in.root);
        assert_eq!(shipped.socket, built_in.socket);
        assert_eq!(
            shipped.max_concurrent_downloads,
            built_in.max_concurrent_downloads
        );
        assert_eq!(
            shipped.unpack_limits.limits().max_entries,
            built_in.unpack_limits.limits().max_entries
        );
        assert_eq!(
            shipped.unpack_limits.limits().max_bytes,
            built_in.unpack_limits.limits().max_bytes
        );
    }
}
