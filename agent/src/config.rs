//! The agent's config file (`/etc/capstan/config.yaml`).

use std::path::Path;

use agent::kubelet::config::KubeletConfig;
use agent::node_services::NodeServicesConfig;
use anyhow::Context;
use cri_shim::config::RuntimeConfig;
use dns::DnsConfig;
use netproxy::ProxyConfig;
use serde::Deserialize;

/// Top-level config file.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigFile {
    /// The kubelet (KubeletConfiguration fields).
    pub kubelet: KubeletConfig,
    /// The built-in CRI runtime.
    pub runtime: RuntimeConfig,
    /// The service proxy (KubeProxyConfiguration fields), cluster mode only.
    pub proxy: ProxyConfig,
    /// The node-local cluster DNS server, cluster mode only.
    pub dns: DnsConfig,
}

impl ConfigFile {
    /// Load `path`; a missing file means all defaults.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("reading config {}", path.display())),
        };
        let file: Self = serde_yaml::from_str(&text)
            .with_context(|| format!("invalid config {}", path.display()))?;
        file.proxy
            .validate()
            .with_context(|| format!("invalid config {}: proxy", path.display()))?;
        Ok(file)
    }

    /// The node services' settings for a cluster member: the DNS zone is the kubelet's
    /// `clusterDomain`, so pods' search paths and the served zone always agree.
    pub fn node_services(&self, node_name: String) -> NodeServicesConfig {
        let mut dns = self.dns.clone();
        dns.cluster_domain = self.kubelet.cluster_domain.clone();
        NodeServicesConfig {
            node_name,
            proxy: self.proxy.clone(),
            dns,
        }
    }

    /// With the DNS server enabled and no `clusterDNS` given, pods resolve through the
    /// node-local address.
    pub fn default_cluster_dns(&mut self) {
        if self.dns.enabled && self.kubelet.cluster_dns.is_empty() {
            self.kubelet.cluster_dns = vec![self.dns.local_address.to_string()];
        }
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
    fn proxy_and_dns_sections_parse_and_feed_the_kubelet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(
            &path,
            "kubelet:\n  clusterDomain: corp.local\nproxy:\n  clusterCIDR: 10.244.0.0/16\n  nftables:\n    minSyncPeriod: 250ms\ndns:\n  localAddress: 169.254.20.11\n",
        )
        .unwrap();
        let mut config = ConfigFile::load(&path).unwrap();
        assert_eq!(config.proxy.cluster_cidr, "10.244.0.0/16");
        assert_eq!(
            config.proxy.nftables.min_sync_period.0,
            std::time::Duration::from_millis(250)
        );
        config.default_cluster_dns();
        assert_eq!(config.kubelet.cluster_dns, vec!["169.254.20.11"]);
        let services = config.node_services("n1".into());
        assert_eq!(services.dns.cluster_domain, "corp.local");

        std::fs::write(&path, "proxy:\n  clusterCIDR: not-a-cidr\n").unwrap();
        let err = format!("{:#}", ConfigFile::load(&path).unwrap_err());
        assert!(err.contains("not-a-cidr"), "{err}");
        std::fs::write(&path, "dns:\n  upstream: [1.1.1.1]\n").unwrap();
        let err = format!("{:#}", ConfigFile::load(&path).unwrap_err());
        assert!(err.contains("upstream"), "{err}");
        std::fs::write(&path, "kubelet:\n  clusterDNS: [10.96.0.10]\n").unwrap();
        let mut config = ConfigFile::load(&path).unwrap();
        config.default_cluster_dns();
        assert_eq!(config.kubelet.cluster_dns, vec!["10.96.0.10"]);
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
        assert_eq!(file.proxy, ProxyConfig::default());
        assert_eq!(file.dns, DnsConfig::default());
    }
}
