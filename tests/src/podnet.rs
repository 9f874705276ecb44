//! Pod networks for CNI tests: a bridge network built by a chosen plugin chain, pods
//! (network namespaces) attached to it, an HTTP server in a pod, and an "outside" host
//! reachable only through the node. Everything is removed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};

use anyhow::{Context, Result};
use rand::Rng;
use serde_json::{json, Value};

use crate::cleanup::TempRoot;
use crate::cni::{self, Attachment, REFERENCE_DIR};
use crate::names::{unique_name, unique_short};
use crate::netns::{self, NetNs};

/// Which implementation provides a plugin role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    /// Debian's reference plugin (bridge, host-local, portmap).
    Reference,
    /// Capstan's (capstan-bridge, capstan-ipam, capstan-portmap).
    Capstan,
}

/// The plugins of a network's chain.
#[derive(Debug, Clone, Copy)]
pub struct Plugins {
    /// Main plugin.
    pub bridge: Impl,
    /// IPAM the bridge delegates to.
    pub ipam: Impl,
    /// Host-port plugin chained after the bridge, if any.
    pub portmap: Option<Impl>,
}

/// Turn on IPv4 and IPv6 forwarding on the node (needed for pods to leave the bridge).
pub fn enable_forwarding() -> Result<()> {
    for key in [
        "/proc/sys/net/ipv4/ip_forward",
        "/proc/sys/net/ipv6/conf/all/forwarding",
    ] {
        std::fs::write(key, "1").with_context(|| format!("enabling {key}"))?;
    }
    Ok(())
}

/// A host port no other test in this process uses.
pub fn unique_host_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20000 + (std::process::id() % 200) as u16 * 100;
    base + NEXT.fetch_add(1, Ordering::SeqCst) % 100
}

/// A dual-stack bridge network with its own subnets, bridge and nftables table.
pub struct PodNetwork {
    /// The plugins in its chain.
    pub plugins: Plugins,
    /// Bridge name.
    pub bridge: String,
    /// IPv4 subnet.
    pub v4: String,
    /// IPv6 subnet.
    pub v6: String,
    /// Masquerade traffic leaving the pod network.
    pub masquerade: bool,
    table: String,
    data_dir: TempRoot,
}

impl PodNetwork {
    /// A new network served by `plugins`.
    pub fn new(plugins: Plugins) -> Result<Self> {
        let mut rng = rand::rng();
        let (a, b): (u8, u8) = (rng.random_range(64..127), rng.random());
        let group: u16 = rng.random();
        Ok(Self {
            plugins,
            bridge: unique_short("cbr"),
            v4: format!("10.{a}.{b}.0/24"),
            v6: format!("fd00:{group:x}::/64"),
            masquerade: true,
            table: unique_short("pm"),
            data_dir: TempRoot::new("ipam")?,
        })
    }

    /// The network's name (the IPAM store directory is named after it).
    pub fn name(&self) -> String {
        format!("net-{}", self.bridge)
    }

    /// Where IPAM keeps its allocations for this network.
    pub fn allocations_dir(&self) -> PathBuf {
        self.data_dir.join(self.name())
    }

    /// Plugin directories, Capstan's build first.
    pub fn cni_path(&self) -> Result<Vec<PathBuf>> {
        Ok(vec![
            crate::binaries::target_profile_dir()?,
            PathBuf::from(REFERENCE_DIR),
        ])
    }

    fn plugin(&self, role: &str, which: Impl) -> Result<(PathBuf, &'static str)> {
        let name = match (role, which) {
            ("bridge", Impl::Reference) => "bridge",
            ("bridge", Impl::Capstan) => "capstan-bridge",
            ("ipam", Impl::Reference) => "host-local",
            ("ipam", Impl::Capstan) => "capstan-ipam",
            ("portmap", Impl::Reference) => "portmap",
            _ => "capstan-portmap",
        };
        let dir = match which {
            Impl::Reference => PathBuf::from(REFERENCE_DIR),
            Impl::Capstan => crate::binaries::target_profile_dir()?,
        };
        Ok((dir.join(name), name))
    }

    /// The plugin chain with its configs; `host_port` maps to the pod's port 80.
    pub fn chain(&self, host_port: Option<u16>) -> Result<Vec<(PathBuf, Value)>> {
        let (bridge, bridge_type) = self.plugin("bridge", self.plugins.bridge)?;
        let (_, ipam_type) = self.plugin("ipam", self.plugins.ipam)?;
        let mut chain = vec![(
            bridge,
            json!({
                "type": bridge_type,
                "bridge": self.bridge,
                "isGateway": true,
                "ipMasq": self.masquerade,
                "hairpinMode": true,
                "ipam": {
                    "type": ipam_type,
                    "ranges": [[{"subnet": self.v4}], [{"subnet": self.v6}]],
                    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
                    "dataDir": self.data_dir.path(),
                },
            }),
        )];
        if let Some(which) = self.plugins.portmap {
            let (portmap, portmap_type) = self.plugin("portmap", which)?;
            let mappings: Vec<Value> = host_port
                .map(|port| json!({"hostPort": port, "containerPort": 80, "protocol": "tcp"}))
                .into_iter()
                .collect();
            chain.push((
                portmap,
                json!({
                    "type": portmap_type,
                    "table": self.table,
                    "snat": true,
                    "capabilities": {"portMappings": true},
                    "runtimeConfig": {"portMappings": mappings},
                }),
            ));
        }
        Ok(chain)
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        netns::delete_link(&self.bridge);
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.table])
            .stderr(Stdio::null())
            .status();
    }
}

/// A pod: a namespace attached to a network; detached (CNI DEL) on drop.
pub struct Pod<'n> {
    net: &'n PodNetwork,
    /// The pod's network namespace.
    pub ns: NetNs,
    attachment: Attachment,
    host_port: Option<u16>,
    /// The chain's ADD result.
    pub result: Value,
}

impl<'n> Pod<'n> {
    /// Create a namespace and run the network's chain ADD for it.
    pub fn attach(net: &'n PodNetwork, host_port: Option<u16>) -> Result<Self> {
        let ns = NetNs::new("pod")?;
        ns.exec_ok(&["ip", "link", "set", "lo", "up"])?;
        let attachment = Attachment {
            container_id: unique_name("ctr"),
            netns: ns.path(),
            ifname: "eth0".to_owned(),
        };
        let result = cni::add_chain(
            &net.chain(host_port)?,
            &net.name(),
            "1.0.0",
            &attachment,
            &net.cni_path()?,
        )?;
        Ok(Self {
            net,
            ns,
            attachment,
            host_port,
            result,
        })
    }

    /// The pod's address of one family, without prefix.
    pub fn ip(&self, v6: bool) -> Result<String> {
        self.ips()
            .map(|(address, _)| address)
            .find(|a| a.contains(':') == v6)
            .with_context(|| {
                format!(
                    "no IPv{} address in {}",
                    if v6 { 6 } else { 4 },
                    self.result
                )
            })
    }

    /// The gateway (the node's address on the bridge) of one family.
    pub fn gateway(&self, v6: bool) -> Result<String> {
        self.ips()
            .filter_map(|(_, gateway)| gateway)
            .find(|g| g.contains(':') == v6)
            .context("no gateway in the result")
    }

    fn ips(&self) -> impl Iterator<Item = (String, Option<String>)> + '_ {
        self.result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|ip| {
                let address = ip["address"].as_str().unwrap_or_default();
                (
                    address.split('/').next().unwrap_or_default().to_owned(),
                    ip["gateway"].as_str().map(str::to_owned),
                )
            })
    }
}

impl Drop for Pod<'_> {
    fn drop(&mut self) {
        if let (Ok(chain), Ok(path)) = (self.net.chain(self.host_port), self.net.cni_path()) {
            let _ = cni::del_chain(
                &chain,
                &self.net.name(),
                "1.0.0",
                &self.attachment,
                Some(&self.result),
                &path,
            );
        }
    }
}

/// Whether `ns` (or the node, for `None`) reaches `addr` by ping, with retries while fresh
/// addresses and neighbours settle.
pub fn reaches(ns: Option<&NetNs>, addr: &str) -> Result<bool> {
    let flag = if addr.contains(':') { "-6" } else { "-4" };
    for _ in 0..5 {
        let ping = ["busybox", "ping", flag, "-c", "1", "-W", "2", addr];
        let ok = match ns {
            Some(ns) => ns.exec(&ping)?.status.success(),
            None => Command::new(ping[0])
                .args(&ping[1..])
                .output()?
                .status
                .success(),
        };
        if ok {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `busybox httpd` serving a marker file on port 80 inside a pod; stopped on drop.
pub struct Httpd {
    child: Child,
    /// The marker file's content.
    pub marker: String,
    _dir: TempRoot,
}

impl Httpd {
    /// Start serving in `ns`.
    pub fn start(ns: &NetNs) -> Result<Self> {
        let dir = TempRoot::new("www")?;
        let marker = unique_name("marker");
        std::fs::write(dir.join("marker"), &marker)?;
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns.name(),
                "busybox",
                "httpd",
                "-f",
                "-p",
                "80",
                "-h",
            ])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting busybox httpd")?;
        Ok(Self {
            child,
            marker,
            _dir: dir,
        })
    }

    /// Whether `http://addr:port/marker`, fetched from `ns` (or the node), serves the marker.
    /// curl, because this busybox's wget crashes.
    pub fn served_at(&self, from: Option<&NetNs>, addr: &str, port: u16) -> Result<bool> {
        let url = if addr.contains(':') {
            format!("http://[{addr}]:{port}/marker")
        } else {
            format!("http://{addr}:{port}/marker")
        };
        let curl = [
            "curl",
            "-sS",
            "-g",
            "-m",
            "2",
            "--noproxy",
            "*",
            url.as_str(),
        ];
        for _ in 0..10 {
            let out = match from {
                Some(ns) => ns.exec(&curl)?,
                None => Command::new(curl[0]).args(&curl[1..]).output()?,
            };
            if out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&self.marker) {
                return Ok(true);
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        Ok(false)
    }
}

impl Drop for Httpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A host outside the pod network, reachable only through the node: a namespace on a veth
/// from the node with no route back to the pods, so it can only answer masqueraded traffic.
pub struct Outside {
    /// Its namespace.
    pub ns: NetNs,
    /// Its address.
    pub addr: String,
    /// The node's address on the link to it.
    pub node_addr: String,
    host_if: String,
}

impl Outside {
    /// Create the namespace and link.
    pub fn new() -> Result<Self> {
        let ns = NetNs::new("out")?;
        let host_if = unique_short("vo");
        let peer = unique_short("vp");
        let b: u8 = rand::rng().random_range(1..250);
        let (node_addr, addr) = (format!("172.31.{b}.1"), format!("172.31.{b}.2"));
        let ip = |args: &[&str]| -> Result<()> {
            let out = Command::new("ip").args(args).output()?;
            anyhow::ensure!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(())
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &peer,
        ])?;
        let outside = Self {
            ns,
            addr,
            node_addr,
            host_if,
        };
        ip(&["link", "set", &peer, "netns", outside.ns.name()])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/30", outside.node_addr),
            "dev",
            &outside.host_if,
        ])?;
        ip(&["link", "set", &outside.host_if, "up"])?;
        outside.ns.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{}/30", outside.addr),
            "dev",
            &peer,
        ])?;
        outside.ns.exec_ok(&["ip", "link", "set", &peer, "up"])?;
        Ok(outside)
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        netns::delete_link(&self.host_if);
    }
}
