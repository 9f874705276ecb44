//! A pod network for runtimes to use: a CNI conf dir holding one conflist (bridge + IPAM +
//! portmap), a result cache dir and an IPAM data dir, all unique to the test; the bridge and
//! any NAT rules left behind are removed on drop.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use rand::Rng;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::binaries::workspace_bin;
use crate::cleanup::TempRoot;
use crate::cni::REFERENCE_DIR;
use crate::names::unique_short;
use crate::netns;
use crate::podnet::Impl;

/// The CNI spec version the conflist declares (the reference plugins and containerd 1.6 speak it).
pub const CNI_VERSION: &str = "1.0.0";

/// The nftables table capstan-bridge keeps its masquerade chains in.
const CAPSTAN_MASQ_TABLE: &str = "capstan-bridge";

/// Where capstan-bridge keeps one marker per installed masquerade chain.
const CAPSTAN_MASQ_STATE: &str = "/run/capstan-cni/bridge";

/// A bridge network written as a conflist that runtimes load from [`PodNetwork::conf_dir`].
pub struct PodNetwork {
    flavour: Impl,
    dir: TempRoot,
    name: String,
    bridge: String,
    subnet: String,
    subnet_v6: Option<String>,
    table: Option<String>,
    bin_dirs: Vec<PathBuf>,
}

impl PodNetwork {
    /// IPv4 network of Debian's reference plugins: bridge, host-local, portmap.
    pub fn reference() -> Result<Self> {
        Self::new(Impl::Reference, false)
    }

    /// IPv4 network of Capstan's plugins (capstan-bridge, capstan-ipam, capstan-portmap),
    /// taken from the target directory of the running test.
    pub fn capstan() -> Result<Self> {
        Self::new(Impl::Capstan, false)
    }

    /// A network of `flavour`'s plugins; with `ipv6`, pods also get an address from a unique
    /// ULA /64.
    pub fn new(flavour: Impl, ipv6: bool) -> Result<Self> {
        let bin_dirs = match flavour {
            Impl::Reference => vec![PathBuf::from(REFERENCE_DIR)],
            Impl::Capstan => {
                let bridge = workspace_bin("capstan-bridge")?;
                let dir = bridge
                    .parent()
                    .context("capstan-bridge has no parent directory")?
                    .to_path_buf();
                vec![dir, PathBuf::from(REFERENCE_DIR)]
            }
        };
        let bridge = unique_short("cpb");
        let table = (flavour == Impl::Capstan).then(|| bridge.clone());
        let dir = TempRoot::new("podnet")?;
        for sub in ["conf", "cache", "ipam"] {
            fs::create_dir(dir.join(sub))?;
        }
        let net = Self {
            flavour,
            dir,
            name: format!("capstan-test-{bridge}"),
            subnet: free_subnet()?,
            subnet_v6: ipv6.then(|| {
                let group: u16 = rand::rng().random();
                format!("fd00:c0de:{group:x}::/64")
            }),
            bridge,
            table,
            bin_dirs,
        };
        let conflist = serde_json::to_vec_pretty(&net.conflist())?;
        fs::write(net.conf_dir().join("10-capstan-test.conflist"), conflist)?;
        Ok(net)
    }

    /// The conflist runtimes read.
    pub fn conflist(&self) -> Value {
        let (bridge_type, ipam_type, portmap_type) = match self.flavour {
            Impl::Reference => ("bridge", "host-local", "portmap"),
            Impl::Capstan => ("capstan-bridge", "capstan-ipam", "capstan-portmap"),
        };
        let mut ranges = vec![json!([{ "subnet": self.subnet }])];
        let mut routes = vec![json!({ "dst": "0.0.0.0/0" })];
        if let Some(v6) = &self.subnet_v6 {
            ranges.push(json!([{ "subnet": v6 }]));
            routes.push(json!({ "dst": "::/0" }));
        }
        let mut portmap = json!({
            "type": portmap_type,
            "capabilities": { "portMappings": true },
            "snat": true,
        });
        if let Some(table) = &self.table {
            portmap["table"] = json!(table);
        }
        json!({
            "cniVersion": CNI_VERSION,
            "name": self.name,
            "plugins": [
                {
                    "type": bridge_type,
                    "bridge": self.bridge,
                    "isGateway": true,
                    "ipMasq": true,
                    "hairpinMode": true,
                    "ipam": {
                        "type": ipam_type,
                        "ranges": ranges,
                        "routes": routes,
                        "dataDir": self.dir.join("ipam"),
                    },
                },
                portmap,
            ],
        })
    }

    /// Which plugins serve the network.
    pub fn flavour(&self) -> Impl {
        self.flavour
    }

    /// The network's name (in the conflist, IPAM data and rule comments).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bridge device pods attach to.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// Directory holding the one conflist.
    pub fn conf_dir(&self) -> PathBuf {
        self.dir.join("conf")
    }

    /// Directories holding the plugins, searched in order.
    pub fn bin_dirs(&self) -> &[PathBuf] {
        &self.bin_dirs
    }

    /// Where a runtime caches ADD results.
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.join("cache")
    }

    /// The pods' IPv4 subnet (`10.x.y.0/24`).
    pub fn subnet(&self) -> &str {
        &self.subnet
    }

    /// The pods' IPv6 subnet, when the network is dual-stack.
    pub fn subnet_v6(&self) -> Option<&str> {
        self.subnet_v6.as_deref()
    }

    /// Whether `ip` (an IPv4 address) lies in [`Self::subnet`].
    pub fn contains(&self, ip: &str) -> bool {
        let prefix = self.subnet.trim_end_matches("0/24");
        ip.strip_prefix(prefix)
            .and_then(|host| host.parse::<u8>().ok())
            .is_some_and(|host| host != 0 && host != 255)
    }

    /// The `cni:` block of Capstan's runtime config (YAML, one key per line).
    pub fn capstan_yaml(&self) -> String {
        let dirs: Vec<String> = self.bin_dirs.iter().map(|d| yaml_path(d)).collect();
        let mut yaml = String::from("cni:\n");
        let _ = writeln!(yaml, "  confDir: {}", yaml_path(&self.conf_dir()));
        let _ = writeln!(yaml, "  binDirs: [{}]", dirs.join(", "));
        let _ = write!(yaml, "  cacheDir: {}", yaml_path(&self.cache_dir()));
        yaml
    }

    /// Remove NAT rules a runtime or plugin left behind for this network.
    fn remove_rules(&self) {
        if let Some(table) = &self.table {
            quiet(Command::new("nft").args(["delete", "table", "inet", table]));
        }
        if self.flavour == Impl::Capstan {
            let chain = capstan_masq_chain(&self.name);
            quiet(Command::new("nft").args([
                "delete",
                "chain",
                "inet",
                CAPSTAN_MASQ_TABLE,
                &chain,
            ]));
            let _ = fs::remove_file(Path::new(CAPSTAN_MASQ_STATE).join(chain));
        }
        for tool in ["iptables", "ip6tables"] {
            remove_iptables_leftovers(tool, &self.name);
        }
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        netns::delete_link(&self.bridge);
        self.remove_rules();
    }
}

/// capstan-bridge's masquerade chain for `network` (named after a hash of the network name).
fn capstan_masq_chain(network: &str) -> String {
    let digest = Sha256::digest(network.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("masq-{hex}")
}

/// A JSON-quoted path, which YAML reads as a plain string whatever it contains.
fn yaml_path(path: &Path) -> String {
    serde_json::to_string(&path.to_string_lossy()).unwrap_or_default()
}

/// A random `10.x.y.0/24` in a range the other network tests do not use, not routed yet.
fn free_subnet() -> Result<String> {
    let routes = Command::new("ip")
        .args(["-4", "route", "show", "table", "all"])
        .output()
        .context("ip route")?;
    let routes = String::from_utf8_lossy(&routes.stdout);
    let mut rng = rand::rng();
    for _ in 0..64 {
        let (a, b): (u8, u8) = (rng.random_range(128..192), rng.random());
        let prefix = format!("10.{a}.{b}.");
        if !routes.contains(&prefix) {
            return Ok(format!("{prefix}0/24"));
        }
    }
    anyhow::bail!("no free 10.128-191.x.0/24 subnet found")
}

/// Delete the reference plugins' per-pod NAT rules of `network` (their comment names it)
/// and the chains they jump to; the shared `CNI-HOSTPORT-*` chains stay, as the plugins
/// leave them.
fn remove_iptables_leftovers(tool: &str, network: &str) {
    let Ok(out) = Command::new(format!("{tool}-save"))
        .args(["-t", "nat"])
        .stderr(Stdio::null())
        .output()
    else {
        return;
    };
    let marker = format!("name: \\\"{network}\\\"");
    let mut script = String::from("*nat\n");
    let mut chains = Vec::new();
    for rule in String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("-A ") && l.contains(&marker))
    {
        let _ = writeln!(script, "-D {}", &rule[3..]);
        if let Some(target) = rule.split_whitespace().skip_while(|w| *w != "-j").nth(1) {
            if target.starts_with("CNI-") && !target.starts_with("CNI-HOSTPORT-") {
                chains.push(target.to_owned());
            }
        }
    }
    if script.len() == "*nat\n".len() {
        return;
    }
    chains.sort();
    chains.dedup();
    for chain in &chains {
        let _ = writeln!(script, "-F {chain}\n-X {chain}");
    }
    script.push_str("COMMIT\n");
    let child = Command::new(format!("{tool}-restore"))
        .arg("--noflush")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if let Ok(mut child) = child {
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(script.as_bytes());
        }
        let _ = child.wait();
    }
}

/// Run a best-effort cleanup command, discarding its output.
fn quiet(command: &mut Command) {
    let _ = command.stdout(Stdio::null()).stderr(Stdio::null()).status();
}
