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
    /// Volatile per-sandbox state: monitor sockets, pinned namespaces (lost on reboot, as
    /// are the processes it describes).
    pub run_root: PathBuf,
    /// How pods are networked.
    pub cni: CniSettings,
    /// CRI `runtime_handler` names mapped to external OCI runtimes (`runc`, `crun`). The
    /// empty handler always runs the built-in executor.
    pub runtime_handlers: BTreeMap<String, RuntimeHandler>,
    /// Cgroup parent for sandboxes whose config names none, relative to each hierarchy.
    pub default_cgroup_parent: String,
    /// Most bytes of stdout plus stderr ExecSync captures before truncating.
    pub max_exec_output_bytes: usize,
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
            run_root: PathBuf::from("/run/capstan/runtime"),
            cni: CniSettings::default(),
            runtime_handlers: BTreeMap::new(),
            default_cgroup_parent: "/capstan".to_owned(),
            max_exec_output_bytes: 16 << 20,
        }
    }
}

impl RuntimeConfig {
    /// Directory of the image store.
    pub fn image_root(&self) -> PathBuf {
        self.root.join("images")
    }

    /// Persistent state of sandboxes (one directory per sandbox ID).
    pub fn sandbox_root(&self) -> PathBuf {
        self.root.join("sandboxes")
    }

    /// Persistent state of containers (one directory per container ID, holding the bundle).
    pub fn container_root(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// Volatile state of one sandbox: its monitor's socket and pinned namespaces. Named by
    /// an ID prefix (80 bits) so the socket path fits a unix socket address.
    pub fn sandbox_run_dir(&self, sandbox_id: &str) -> PathBuf {
        let short = sandbox_id.get(..20).unwrap_or(sandbox_id);
        self.run_root.join(short)
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

/// Where CNI configuration, plugins and the result cache live.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct CniSettings {
    /// Directory of network configurations; the first file (by name) wins.
    pub conf_dir: PathBuf,
    /// Directories searched for plugin executables, in order.
    pub bin_dirs: Vec<PathBuf>,
    /// Where results are cached so DEL and CHECK get the ADD result.
    pub cache_dir: PathBuf,
}

impl Default for CniSettings {
    fn default() -> Self {
        Self {
            conf_dir: PathBuf::from("/etc/cni/net.d"),
            bin_dirs: vec![PathBuf::from("/opt/cni/bin")],
            cache_dir: PathBuf::from("/var/lib/cni"),
        }
    }
}

/// An external OCI runtime serving one CRI runtime handler.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuntimeHandler {
    /// The runtime executable (runc-compatible command line).
    pub path: PathBuf,
    /// The runtime's state directory (`--root`); defaults to `<run_root>/oci/<handler>`.
    #[serde(default)]
    pub root: Option<PathBuf>,
}
