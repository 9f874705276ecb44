//! Runtime configuration: where state lives, how registries are reached, unpack limits.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::image::unpack::UnpackLimits;

/// Settings of the built-in CRI runtime (the `runtime:` section of the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Root of the runtime's persistent state (image store lives under `<root>/images`).
    pub root: PathBuf,
    /// Unix socket the CRI server listens on.
    pub socket: PathBuf,
    /// A docker `config.json` with registry credentials, used when a pull brings none.
    pub auth_file: Option<PathBuf>,
    /// Per-registry settings keyed by host[:port] as written in image references.
    pub registries: BTreeMap<String, RegistrySettings>,
    /// Layers fetched at once per pull.
    pub max_concurrent_downloads: usize,
    /// Bounds applied while unpacking each layer.
    pub unpack_limits: UnpackLimitsConfig,
    /// Create device nodes found in image layers instead of skipping them.
    pub create_device_nodes: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/var/lib/capstan"),
            socket: PathBuf::from("/run/capstan/cri.sock"),
            auth_file: None,
            registries: BTreeMap::new(),
            max_concurrent_downloads: 4,
            unpack_limits: UnpackLimitsConfig::default(),
            create_device_nodes: false,
        }
    }
}

impl RuntimeConfig {
    /// Directory of the image store.
    pub fn image_root(&self) -> PathBuf {
        self.root.join("images")
    }

    /// Settings for a registry host, or the defaults when it has none.
    pub fn registry(&self, host: &str) -> RegistrySettings {
        self.registries.get(host).cloned().unwrap_or_default()
    }
}

/// How one registry is reached.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistrySettings {
    /// Speak plain HTTP (for loopback or lab registries).
    pub insecure: bool,
    /// Accept any TLS certificate (still encrypted, never verified).
    pub skip_verify: bool,
    /// Extra CA certificate (PEM) trusted for this registry.
    pub ca_file: Option<PathBuf>,
    /// Mirrors tried in order before the registry itself, as host[:port].
    pub mirrors: Vec<String>,
}

/// Unpack limits as written in config; zero keeps the default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct UnpackLimitsConfig {
    /// Most uncompressed bytes one layer may expand to.
    pub max_layer_bytes: u64,
    /// Most tar entries one layer may hold.
    pub max_layer_entries: u64,
}

impl UnpackLimitsConfig {
    /// The limits to enforce.
    pub fn limits(&self) -> UnpackLimits {
        let defaults = UnpackLimits::default();
        UnpackLimits {
            max_bytes: nonzero_or(self.max_layer_bytes, defaults.max_bytes),
            max_entries: nonzero_or(self.max_layer_entries, defaults.max_entries),
        }
    }
}

fn nonzero_or(value: u64, default: u64) -> u64 {
    if value == 0 {
        default
    } else {
        value
    }
}
