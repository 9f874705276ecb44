//! The CNI traffic suite: pods (network namespaces) attached to a bridge by a CNI plugin
//! chain, checked with real traffic. Each plugin combination must pass the same suite.

use std::path::PathBuf;

use anyhow::{Context, Result};
use rand::Rng;
use serde_json::{json, Value};
use tests::cni::{self, Attachment, REFERENCE_DIR};
use tests::names::unique_short;
use tests::netns::{self, NetNs};

/// Which IPAM plugin the bridge delegates to.
#[derive(Clone, Copy, Debug)]
enum Ipam {
    /// Debian's `host-local`.
    Reference,
}

/// A bridge network with its own subnets, torn down on drop.
struct Network {
    bridge: String,
    v4: String,
    v6: String,
    data_dir: tests::cleanup::TempRoot,
    ipam: Ipam,
    masquerade: bool,
}

impl Network {
    fn new(ipam: Ipam) -> Result<Self> {
        let mut rng = rand::rng();
        let (a, b): (u8, u8) = (rng.random_range(64..127), rng.random());
        let v6_group: u16 = rng.random();
        Ok(Self {
            bridge: unique_short("cbr"),
            v4: format!("10.{a}.{b}.0/24"),
            v6: format!("fd00:{v6_group:x}::/64"),
            data_dir: tests::cleanup::TempRoot::new("ipam")?,
            ipam,
            masquerade: true,
        })
    }

    fn ipam_conf(&self) -> Value {
        let plugin = match self.ipam {
            Ipam::Reference => "host-local",
        };
        json!({
            "type": plugin,
            "ranges": [[{"subnet": self.v4}], [{"subnet": self.v6}]],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
            "dataDir": self.data_dir.path(),
        })
    }

    fn chain(&self) -> Vec<(PathBuf, Value)> {
        vec![(
            PathBuf::from(REFERENCE_DIR).join("bridge"),
            json!({
                "type": "bridge",
                "bridge": self.bridge,
                "isGateway": true,
                "ipMasq": self.masquerade,
                "hairpinMode": true,
                "ipam": self.ipam_conf(),
            }),
        )]
    }

    fn cni_path(&self) -> Result<Vec<PathBuf>> {
        let capstan = tests::binaries::target_profile_dir()?;
        Ok(vec![PathBuf::from(REFERENCE_DIR), capstan])
    }

    fn name(&self) -> String {
        format!("net-{}", self.bridge)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        netns::delete_link(&self.bridge);
    }
}

/// A pod: a namespace attached to the network, detached on drop.
struct Pod<'n> {
    net: &'n Network,
    ns: NetNs,
    attachment: Attachment,
    result: Value,
}

impl<'n> Pod<'n> {
    fn attach(net: &'n Network) -> Result<Self> {
        let ns = NetNs::new("pod")?;
        ns.exec_ok(&["ip", "link", "set", "lo", "up"])?;
        let attachment = Attachment {
            container_id: tests::names::unique_name("ctr"),
            netns: ns.path(),
            ifname: "eth0".to_owned(),
        };
        let result = cni::add_chain(
            &net.chain(),
            &net.name(),
            "1.0.0",
            &attachment,
            &net.cni_path()?,
        )?;
        Ok(Self {
            net,
            ns,
            attachment,
            result,
        })
    }

    /// The pod's address of one family, without prefix.
    fn ip(&self, v6: bool) -> Result<String> {
        self.result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|ip| ip["address"].as_str())
            .map(|a| a.split('/').next().unwrap_or_default().to_owned())
            .find(|a| a.contains(':') == v6)
            .with_context(|| {
                format!(
                    "no IPv{} address in {}",
                    if v6 { 6 } else { 4 },
                    self.result
                )
            })
    }

    fn gateway(&self, v6: bool) -> Result<String> {
        self.result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|ip| ip["gateway"].as_str())
            .find(|g| g.contains(':') == v6)
            .map(str::to_owned)
            .context("no gateway")
    }
}

impl Drop for Pod<'_> {
    fn drop(&mut self) {
        if let Ok(path) = self.net.cni_path() {
            let _ = cni::del_chain(
                &self.net.chain(),
                &self.net.name(),
                "1.0.0",
                &self.attachment,
                Some(&self.result),
                &path,
            );
        }
    }
}

/// Ping with retries: fresh IPv6 addresses and neighbours take a moment.
fn reaches(ns: &NetNs, addr: &str) -> Result<bool> {
    for _ in 0..5 {
        if ns.can_ping(addr)? {
            return Ok(true);
        }
    }
    Ok(false)
}

fn host_ping(addr: &str) -> bool {
    let flag = if addr.contains(':') { "-6" } else { "-4" };
    std::process::Command::new("busybox")
        .args(["ping", flag, "-c", "1", "-W", "2", addr])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// An "outside" host reachable only through the node: a namespace on a veth from the host,
/// with no route back to the pod network (so replies only come back if pods are masqueraded).
struct Outside {
    ns: NetNs,
    host_if: String,
    addr: String,
    host_addr: String,
}

impl Outside {
    /// The node's address on the outside link (reachable from pods by plain routing).
    fn ns_gateway(&self) -> String {
        self.host_addr.clone()
    }
}

impl Outside {
    fn new() -> Result<Self> {
        let ns = NetNs::new("out")?;
        let host_if = unique_short("vo");
        let peer = unique_short("vp");
        let b: u8 = rand::rng().random_range(1..250);
        let host_addr = format!("172.31.{b}.1/30");
        let addr = format!("172.31.{b}.2");
        let sh = |args: &[&str]| -> Result<()> {
            let out = std::process::Command::new("ip").args(args).output()?;
            anyhow::ensure!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(())
        };
        sh(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &peer,
        ])?;
        sh(&["link", "set", &peer, "netns", ns.name()])?;
        sh(&["addr", "add", &host_addr, "dev", &host_if])?;
        sh(&["link", "set", &host_if, "up"])?;
        ns.exec_ok(&["ip", "addr", "add", &format!("{addr}/30"), "dev", &peer])?;
        ns.exec_ok(&["ip", "link", "set", &peer, "up"])?;
        Ok(Self {
            ns,
            host_if,
            addr,
            host_addr: format!("172.31.{b}.1"),
        })
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        netns::delete_link(&self.host_if);
    }
}

fn enable_forwarding() -> Result<()> {
    for key in [
        "/proc/sys/net/ipv4/ip_forward",
        "/proc/sys/net/ipv6/conf/all/forwarding",
    ] {
        std::fs::write(key, "1").with_context(|| format!("enabling {key}"))?;
    }
    Ok(())
}

fn traffic_suite(ipam: Ipam) -> Result<()> {
    enable_forwarding()?;
    let net = Network::new(ipam)?;
    let a = Pod::attach(&net)?;
    let b = Pod::attach(&net)?;
    assert_ne!(a.ip(false)?, b.ip(false)?, "two pods got one address");

    for v6 in [false, true] {
        assert!(
            reaches(&a.ns, &b.ip(v6)?)?,
            "pod a cannot reach pod b over IPv{}",
            if v6 { 6 } else { 4 }
        );
        assert!(reaches(&b.ns, &a.ip(v6)?)?, "pod b cannot reach pod a");
        assert!(
            reaches(&a.ns, &a.gateway(v6)?)?,
            "pod cannot reach the host (gateway)"
        );
    }
    assert!(host_ping(&a.ip(false)?), "host cannot reach the pod");

    let outside = Outside::new()?;
    assert!(
        reaches(&a.ns, &outside.addr)?,
        "pod cannot reach outside the bridge (masquerade)"
    );
    // Without masquerade the outside host could not answer: it has no route to the pods.
    let routes = outside.ns.exec_ok(&["ip", "route"])?;
    assert!(!routes.contains(&net.v4), "{routes}");

    let (a_ip, data) = (a.ip(false)?, net.data_dir.path().to_owned());
    drop(a);
    drop(b);
    // DEL released the addresses.
    let left: Vec<_> = std::fs::read_dir(data.join(net.name()))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains('.') && !n.starts_with("last_reserved") || n.contains(':'))
        .collect();
    assert!(
        left.is_empty(),
        "allocations left after DEL: {left:?} (pod had {a_ip})"
    );
    Ok(())
}

#[test]
fn reference_bridge_with_reference_host_local() -> Result<()> {
    traffic_suite(Ipam::Reference)
}

#[test]
fn without_masquerade_the_outside_host_cannot_answer() -> Result<()> {
    // The control for the suite's masquerade check: the same setup without ipMasq fails it.
    enable_forwarding()?;
    let mut net = Network::new(Ipam::Reference)?;
    net.masquerade = false;
    let pod = Pod::attach(&net)?;
    let outside = Outside::new()?;
    assert!(
        reaches(&pod.ns, &outside.ns_gateway())?,
        "the host side of the outside link"
    );
    assert!(
        !pod.ns.can_ping(&outside.addr)?,
        "outside answered an unmasqueraded pod"
    );
    Ok(())
}
