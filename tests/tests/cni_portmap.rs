//! `capstan-portmap` with real traffic: pods on a reference bridge + host-local network get
//! host ports, reached from the node, from other pods, from the pod itself (hairpin) and from
//! an outside host; DEL, CHECK, GC and STATUS are checked against the live nftables table, and
//! bad input against the spec's error codes. The traffic checks also run against the
//! reference `portmap`, which shows they test what a host port is expected to do.

use std::fs::File;
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use rand::Rng;
use serde_json::{json, Value};
use tests::cleanup::TempRoot;
use tests::cni::{self, Attachment, REFERENCE_DIR};
use tests::names::{unique_name, unique_short};
use tests::netns::{self, NetNs};

/// Which portmap plugin a network chains after the bridge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Portmap {
    /// `capstan-portmap`.
    Capstan,
    /// The reference `portmap` (iptables).
    Reference,
}

/// A fresh host port per mapping: tests run in parallel and wildcard mappings of one port
/// in two tables would capture each other's traffic. Below the ephemeral range.
fn host_port() -> u16 {
    static NEXT: OnceLock<AtomicU16> = OnceLock::new();
    NEXT.get_or_init(|| AtomicU16::new(rand::rng().random_range(20_000..30_000)))
        .fetch_add(1, Ordering::Relaxed)
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

fn capstan_bin() -> Result<PathBuf> {
    tests::binaries::workspace_bin("capstan-portmap")
}

/// `nft list table inet <table>`, or `None` when the table does not exist.
fn list_table(table: &str) -> Result<Option<String>> {
    let out = Command::new("nft")
        .args(["list", "table", "inet", table])
        .output()?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// Attachment chains (`hp-...`) in a listing.
fn attachment_chains(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| l.trim().strip_prefix("chain hp-"))
        .map(|rest| format!("hp-{}", rest.trim_end_matches(" {")))
        .collect()
}

/// A bridge network with its own subnets and nftables table, torn down on drop.
struct Network {
    bridge: String,
    v4: String,
    v6: String,
    table: String,
    data_dir: TempRoot,
    portmap: Portmap,
    snat: bool,
}

impl Network {
    fn new(portmap: Portmap) -> Result<Self> {
        enable_forwarding()?;
        let mut rng = rand::rng();
        let (a, b): (u8, u8) = (rng.random_range(128..191), rng.random());
        Ok(Self {
            bridge: unique_short("pmbr"),
            v4: format!("10.{a}.{b}.0/24"),
            v6: format!("fd01:{:x}::/64", rng.random::<u16>()),
            table: unique_short("pmt"),
            data_dir: TempRoot::new("pm-ipam")?,
            portmap,
            snat: true,
        })
    }

    fn name(&self) -> String {
        format!("net-{}", self.bridge)
    }

    fn cni_path(&self) -> Result<Vec<PathBuf>> {
        Ok(vec![
            PathBuf::from(REFERENCE_DIR),
            tests::binaries::target_profile_dir()?,
        ])
    }

    /// The portmap's configuration (without name, version and prevResult).
    fn portmap_conf(&self, mappings: &Value) -> Result<(PathBuf, Value)> {
        let mut conf = json!({
            "capabilities": {"portMappings": true},
            "snat": self.snat,
            "runtimeConfig": {"portMappings": mappings},
        });
        let path = match self.portmap {
            Portmap::Capstan => {
                conf["type"] = "capstan-portmap".into();
                conf["table"] = self.table.clone().into();
                capstan_bin()?
            }
            Portmap::Reference => {
                conf["type"] = "portmap".into();
                PathBuf::from(REFERENCE_DIR).join("portmap")
            }
        };
        Ok((path, conf))
    }

    /// Reference bridge + host-local, then the portmap with `mappings` as runtimeConfig.
    fn chain(&self, mappings: &Value) -> Result<Vec<(PathBuf, Value)>> {
        let bridge = json!({
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            "ipMasq": true,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": self.v4}], [{"subnet": self.v6}]],
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
                "dataDir": self.data_dir.path(),
            },
        });
        Ok(vec![
            (PathBuf::from(REFERENCE_DIR).join("bridge"), bridge),
            self.portmap_conf(mappings)?,
        ])
    }

    /// The portmap's full configuration as a runtime passes it, for direct invocations.
    fn portmap_invocation(&self, mappings: &Value, prev: Option<&Value>) -> Result<Value> {
        let (_, mut conf) = self.portmap_conf(mappings)?;
        conf["name"] = self.name().into();
        conf["cniVersion"] = "1.0.0".into();
        if let Some(prev) = prev {
            conf["prevResult"] = prev.clone();
        }
        Ok(conf)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        netns::delete_link(&self.bridge);
        if self.portmap == Portmap::Capstan {
            let _ = Command::new("nft")
                .args(["delete", "table", "inet", &self.table])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A pod attached through the chain, detached (bridge and portmap DEL) on drop.
struct Pod<'n> {
    net: &'n Network,
    ns: NetNs,
    attachment: Attachment,
    plugins: Vec<(PathBuf, Value)>,
    result: Value,
}

impl<'n> Pod<'n> {
    fn attach(net: &'n Network, mappings: Value) -> Result<Self> {
        let ns = NetNs::new("pmpod")?;
        ns.exec_ok(&["ip", "link", "set", "lo", "up"])?;
        let attachment = Attachment {
            container_id: unique_name("pmctr"),
            netns: ns.path(),
            ifname: "eth0".to_owned(),
        };
        let plugins = net.chain(&mappings)?;
        let result = cni::add_chain(
            &plugins,
            &net.name(),
            "1.0.0",
            &attachment,
            &net.cni_path()?,
        )?;
        Ok(Self {
            net,
            ns,
            attachment,
            plugins,
            result,
        })
    }

    /// The pod's address of one family, without prefix.
    fn ip(&self, v6: bool) -> Result<String> {
        self.result_addrs("address", v6)
    }

    /// The node's address on the bridge (the pod's gateway) of one family.
    fn gateway(&self, v6: bool) -> Result<String> {
        self.result_addrs("gateway", v6)
    }

    fn result_addrs(&self, field: &str, v6: bool) -> Result<String> {
        self.result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|ip| ip[field].as_str())
            .map(|a| a.split('/').next().unwrap_or_default().to_owned())
            .find(|a| a.contains(':') == v6)
            .with_context(|| {
                format!(
                    "no IPv{} {field} in {}",
                    if v6 { 6 } else { 4 },
                    self.result
                )
            })
    }

    /// Run the portmap alone for `command` (no prevResult when `prev` is `None`).
    fn portmap(&self, command: &str, mappings: &Value, prev: bool) -> Result<cni::Invocation> {
        let conf = self
            .net
            .portmap_invocation(mappings, prev.then_some(&self.result))?;
        cni::invoke(
            &self.plugins[1].0,
            command,
            &self.attachment,
            &conf,
            &self.net.cni_path()?,
        )
    }
}

impl Drop for Pod<'_> {
    fn drop(&mut self) {
        if let Ok(path) = self.net.cni_path() {
            let _ = cni::del_chain(
                &self.plugins,
                &self.net.name(),
                "1.0.0",
                &self.attachment,
                Some(&self.result),
                &path,
            );
        }
    }
}

/// `busybox httpd` serving a marker file on port 80 inside a pod, stopped on drop.
struct Httpd {
    child: Child,
    marker: String,
    _dir: TempRoot,
}

impl Httpd {
    fn start(ns: &NetNs) -> Result<Self> {
        let dir = TempRoot::new("pm-www")?;
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
}

impl Drop for Httpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `http://addr:port/marker`, with IPv6 brackets.
fn url(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("http://[{addr}]:{port}/marker")
    } else {
        format!("http://{addr}:{port}/marker")
    }
}

/// One GET, from the host or inside `ns`; the body on success. curl, as this busybox's
/// wget crashes.
fn fetch_once(ns: Option<&NetNs>, url: &str) -> Result<Option<String>> {
    let curl = ["curl", "-sS", "-g", "-m", "2", "--noproxy", "*", url];
    let out = match ns {
        Some(ns) => ns.exec(&curl)?,
        None => Command::new(curl[0]).args(&curl[1..]).output()?,
    };
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// Whether `url` serves `marker`, retrying while servers start and IPv6 addresses settle.
fn serves(ns: Option<&NetNs>, url: &str, marker: &str) -> Result<bool> {
    for _ in 0..15 {
        if fetch_once(ns, url)?.is_some_and(|body| body.contains(marker)) {
            return Ok(true);
        }
        thread::sleep(Duration::from_millis(300));
    }
    Ok(false)
}

/// A UDP echo server inside a pod (a thread that entered its namespace), answering
/// `reply` + the datagram; stopped on drop. busybox's nc here has no UDP mode.
struct UdpEcho {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEcho {
    fn start(ns: &NetNs, port: u16, reply: &str) -> Result<Self> {
        let (path, reply) = (ns.path(), reply.to_owned());
        let stop = Arc::new(AtomicBool::new(false));
        let (ready, bound) = mpsc::channel();
        let stopping = stop.clone();
        let thread = thread::spawn(move || {
            let socket = match bind_in_netns(&path, port) {
                Ok(socket) => {
                    let _ = ready.send(Ok(()));
                    socket
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            let mut buf = [0u8; 1500];
            while !stopping.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    let answer = [reply.as_bytes(), &buf[..n]].concat();
                    let _ = socket.send_to(&answer, from);
                }
            }
        });
        bound.recv_timeout(Duration::from_secs(5))??;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

/// Enter the namespace at `path` (this thread only) and bind a dual-stack UDP socket.
fn bind_in_netns(path: &Path, port: u16) -> Result<UdpSocket> {
    let ns = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: setns(2) on an open namespace fd; it changes only the calling thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns: {}", std::io::Error::last_os_error());
    }
    let socket = UdpSocket::bind(("::", port))?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok(socket)
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Send a datagram from the host to `addr:port` and return the answer. Each try uses a new
/// socket: a datagram sent before the address was ready leaves a conntrack entry without
/// DNAT that the same source port would keep hitting. Connected, so only an answer from
/// `addr:port` itself (un-DNATed) is accepted.
fn udp_ask(addr: &str, port: u16, message: &str) -> Result<Option<String>> {
    let target: SocketAddr = if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
    .parse()?;
    let mut buf = [0u8; 1500];
    for _ in 0..10 {
        let socket = UdpSocket::bind(if target.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        })?;
        socket.connect(target)?;
        socket.set_read_timeout(Some(Duration::from_millis(500)))?;
        socket.send(message.as_bytes())?;
        if let Ok(n) = socket.recv(&mut buf) {
            return Ok(Some(String::from_utf8_lossy(&buf[..n]).into_owned()));
        }
    }
    Ok(None)
}

/// An "outside" host: a namespace on a veth from the node, knowing only the link's /30.
struct Outside {
    ns: NetNs,
    host_if: String,
    /// The node's address on the link (another local address of the node).
    node_addr: String,
}

impl Outside {
    fn new() -> Result<Self> {
        let ns = NetNs::new("pmout")?;
        let (host_if, peer) = (unique_short("pmvo"), unique_short("pmvp"));
        let mut rng = rand::rng();
        let (b, c) = (rng.random_range(1..=254u8), rng.random_range(0..64u8) * 4);
        let (node_addr, addr) = (
            format!("172.30.{b}.{}", c + 1),
            format!("172.30.{b}.{}", c + 2),
        );
        let ip = |args: &[&str]| -> Result<()> {
            let out = Command::new("ip").args(args).output()?;
            ensure!(
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
            host_if,
            node_addr,
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
        outside
            .ns
            .exec_ok(&["ip", "addr", "add", &format!("{addr}/30"), "dev", &peer])?;
        outside.ns.exec_ok(&["ip", "link", "set", &peer, "up"])?;
        Ok(outside)
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        netns::delete_link(&self.host_if);
    }
}

fn tcp_mapping(port: u16) -> Value {
    json!([{"hostPort": port, "containerPort": 80, "protocol": "tcp", "hostIP": ""}])
}

// ---- traffic scenarios, run for both plugins ----

fn node_reaches_host_port(portmap: Portmap) -> Result<()> {
    let net = Network::new(portmap)?;
    let port = host_port();
    let pod = Pod::attach(&net, tcp_mapping(port))?;
    let server = Httpd::start(&pod.ns)?;
    for (what, addr) in [
        ("bridge IPv4 address", pod.gateway(false)?),
        ("bridge IPv6 address", pod.gateway(true)?),
        ("127.0.0.1", "127.0.0.1".to_owned()),
    ] {
        ensure!(
            serves(None, &url(&addr, port), &server.marker)?,
            "{portmap:?}: the node cannot reach the pod through its {what} port {port}"
        );
    }
    Ok(())
}

fn outside_reaches_host_port(portmap: Portmap) -> Result<()> {
    let net = Network::new(portmap)?;
    let port = host_port();
    let pod = Pod::attach(&net, tcp_mapping(port))?;
    let server = Httpd::start(&pod.ns)?;
    let outside = Outside::new()?;
    let target = url(&outside.node_addr, port);
    ensure!(
        serves(Some(&outside.ns), &target, &server.marker)?,
        "{portmap:?}: an outside host cannot reach {target}"
    );
    ensure!(
        serves(None, &target, &server.marker)?,
        "{portmap:?}: the node cannot reach its other local address {target}"
    );
    Ok(())
}

fn other_pod_reaches_host_port(portmap: Portmap) -> Result<()> {
    let net = Network::new(portmap)?;
    let port = host_port();
    let pod = Pod::attach(&net, tcp_mapping(port))?;
    let other = Pod::attach(&net, json!([]))?;
    let server = Httpd::start(&pod.ns)?;
    for v6 in [false, true] {
        let target = url(&pod.gateway(v6)?, port);
        ensure!(
            serves(Some(&other.ns), &target, &server.marker)?,
            "{portmap:?}: another pod cannot reach {target}"
        );
    }
    Ok(())
}

fn pod_reaches_itself(portmap: Portmap) -> Result<()> {
    let net = Network::new(portmap)?;
    let port = host_port();
    let pod = Pod::attach(&net, tcp_mapping(port))?;
    let server = Httpd::start(&pod.ns)?;
    let target = url(&pod.gateway(false)?, port);
    ensure!(
        serves(Some(&pod.ns), &target, &server.marker)?,
        "{portmap:?}: hairpin: the pod cannot reach itself through {target}"
    );
    Ok(())
}

fn udp_reaches_host_port(portmap: Portmap) -> Result<()> {
    let net = Network::new(portmap)?;
    let port = host_port();
    let mapping = json!([{"hostPort": port, "containerPort": 5353, "protocol": "udp"}]);
    let pod = Pod::attach(&net, mapping)?;
    let _echo = UdpEcho::start(&pod.ns, 5353, "pod says: ")?;
    for v6 in [false, true] {
        let gateway = pod.gateway(v6)?;
        let answer = udp_ask(&gateway, port, "hello")?;
        ensure!(
            answer.as_deref() == Some("pod says: hello"),
            "{portmap:?}: UDP to {gateway}:{port} got {answer:?}"
        );
    }
    Ok(())
}

#[test]
fn host_port_from_the_node() -> Result<()> {
    node_reaches_host_port(Portmap::Capstan)
}

#[test]
fn host_port_from_an_outside_host_and_another_node_address() -> Result<()> {
    outside_reaches_host_port(Portmap::Capstan)
}

#[test]
fn host_port_from_another_pod() -> Result<()> {
    other_pod_reaches_host_port(Portmap::Capstan)
}

#[test]
fn hairpin_pod_reaches_itself_through_its_host_port() -> Result<()> {
    pod_reaches_itself(Portmap::Capstan)
}

#[test]
fn udp_mapping_forwards_datagrams() -> Result<()> {
    udp_reaches_host_port(Portmap::Capstan)
}

#[test]
fn reference_portmap_passes_the_same_traffic_checks() -> Result<()> {
    node_reaches_host_port(Portmap::Reference)?;
    outside_reaches_host_port(Portmap::Reference)?;
    other_pod_reaches_host_port(Portmap::Reference)?;
    pod_reaches_itself(Portmap::Reference)?;
    udp_reaches_host_port(Portmap::Reference)
}

// ---- capstan-only behaviour ----

#[test]
fn host_ip_limits_the_mapping_to_that_address() -> Result<()> {
    let net = Network::new(Portmap::Capstan)?;
    let outside = Outside::new()?;
    let port = host_port();
    let mapping = json!([{"hostPort": port, "containerPort": 80, "hostIP": outside.node_addr}]);
    let pod = Pod::attach(&net, mapping)?;
    let server = Httpd::start(&pod.ns)?;
    ensure!(serves(
        None,
        &url(&outside.node_addr, port),
        &server.marker
    )?);
    let other = url(&pod.gateway(false)?, port);
    ensure!(
        fetch_once(None, &other)?.is_none(),
        "{other} answered though the mapping is for {} only",
        outside.node_addr
    );
    Ok(())
}

#[test]
fn without_snat_hairpin_and_localhost_are_not_forwarded() -> Result<()> {
    // The control for the hairpin and 127.0.0.1 checks: they need the masquerade rules.
    let mut net = Network::new(Portmap::Capstan)?;
    net.snat = false;
    let port = host_port();
    let pod = Pod::attach(&net, tcp_mapping(port))?;
    let server = Httpd::start(&pod.ns)?;
    let gateway = url(&pod.gateway(false)?, port);
    ensure!(
        serves(None, &gateway, &server.marker)?,
        "{gateway} from the node"
    );
    ensure!(
        fetch_once(Some(&pod.ns), &gateway)?.is_none(),
        "hairpin worked without masquerade"
    );
    let localhost = url("127.0.0.1", port);
    ensure!(
        fetch_once(None, &localhost)?.is_none(),
        "{localhost} answered without snat"
    );
    Ok(())
}

#[test]
fn del_removes_the_attachments_rules_and_is_idempotent() -> Result<()> {
    let net = Network::new(Portmap::Capstan)?;
    let (port_a, port_b) = (host_port(), host_port());
    let a = Pod::attach(&net, tcp_mapping(port_a))?;
    let b = Pod::attach(&net, tcp_mapping(port_b))?;
    let server = Httpd::start(&a.ns)?;
    let target = url(&a.gateway(false)?, port_a);
    ensure!(
        serves(None, &target, &server.marker)?,
        "{target} before DEL"
    );
    let listing = list_table(&net.table)?.context("no table after ADD")?;
    ensure!(attachment_chains(&listing).len() == 2, "{listing}");

    // DEL finds the attachment without prevResult or mappings, and may repeat.
    for _ in 0..2 {
        a.portmap("DEL", &json!([]), false)?.ok()?;
    }
    ensure!(
        fetch_once(None, &target)?.is_none(),
        "{target} still answers after DEL"
    );
    let listing = list_table(&net.table)?.context("DEL of one pod removed the table")?;
    ensure!(attachment_chains(&listing).len() == 1, "{listing}");
    ensure!(
        !listing.contains(&a.ip(false)?),
        "rules for {} left:\n{listing}",
        a.ip(false)?
    );
    ensure!(
        listing.contains(&b.ip(false)?),
        "rules for the other pod went:\n{listing}"
    );

    // The last attachment takes the table with it; DEL without a table still succeeds.
    b.portmap("DEL", &tcp_mapping(port_b), true)?.ok()?;
    ensure!(
        list_table(&net.table)?.is_none(),
        "table left after the last DEL"
    );
    b.portmap("DEL", &tcp_mapping(port_b), true)?.ok()?;
    Ok(())
}

#[test]
fn add_twice_check_gc_and_status() -> Result<()> {
    let net = Network::new(Portmap::Capstan)?;
    let port = host_port();
    let mappings = json!([
        {"hostPort": port, "containerPort": 80},
        {"hostPort": port, "containerPort": 53, "protocol": "udp"},
    ]);
    let pod = Pod::attach(&net, mappings.clone())?;
    let before = list_table(&net.table)?.context("no table after ADD")?;
    println!("nft list table inet {} after ADD:\n{before}", net.table);

    // ADD again: same rules, not twice as many; the result is prevResult unchanged.
    let again = pod.portmap("ADD", &mappings, true)?.ok()?;
    ensure!(
        again == pod.result,
        "ADD changed the result: {again} vs {}",
        pod.result
    );
    let after = list_table(&net.table)?.context("table gone")?;
    ensure!(
        after == before,
        "second ADD changed the rules:\n{before}\nvs\n{after}"
    );

    pod.portmap("CHECK", &mappings, true)?.ok()?;
    let other = json!([{"hostPort": port, "containerPort": 81}]);
    let mismatch = pod.portmap("CHECK", &other, true)?;
    ensure!(
        mismatch.code() == Some(102),
        "CHECK of other mappings: {:?}",
        mismatch.json
    );

    // GC (CNI 1.1.0) keeps valid attachments and removes the rest.
    let gc = |valid: Value| -> Result<cni::Invocation> {
        let mut conf = net.portmap_invocation(&mappings, None)?;
        conf["cniVersion"] = "1.1.0".into();
        conf["cni.dev/valid-attachments"] = valid;
        cni::invoke(&pod.plugins[1].0, "GC", &pod.attachment, &conf, &[])
    };
    let this = json!([{"containerID": pod.attachment.container_id, "ifname": "eth0"}]);
    gc(this)?.ok()?;
    ensure!(
        list_table(&net.table)? == Some(before.clone()),
        "GC removed a valid attachment"
    );
    gc(json!([{"containerID": "someone-else", "ifname": "eth0"}]))?.ok()?;
    ensure!(
        list_table(&net.table)?.is_none(),
        "GC left a stale attachment"
    );
    let gone = pod.portmap("CHECK", &mappings, true)?;
    ensure!(gone.code() == Some(102), "CHECK after GC: {:?}", gone.json);

    let mut status = net.portmap_invocation(&mappings, None)?;
    status["cniVersion"] = "1.1.0".into();
    ensure!(raw_invoke("STATUS", status.to_string().as_bytes(), None)?.0);
    Ok(())
}

/// Invoke `capstan-portmap` with raw stdin, optionally with an extra `PATH` directory
/// searched first; (success, stdout JSON).
fn raw_invoke(command: &str, stdin: &[u8], path_first: Option<&Path>) -> Result<(bool, Value)> {
    let mut path = String::from("/usr/sbin:/usr/bin:/sbin:/bin");
    if let Some(dir) = path_first {
        path = format!("{}:{path}", dir.display());
    }
    let mut child = Command::new(capstan_bin()?)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", "bad-input")
        .env("CNI_NETNS", "/proc/self/ns/net")
        .env("CNI_IFNAME", "eth0")
        .env("PATH", path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child.stdin.take().context("stdin")?.write_all(stdin)?;
    let out = child.wait_with_output()?;
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    Ok((out.status.success(), json))
}

#[test]
fn bad_input_gets_the_spec_error_codes() -> Result<()> {
    let table = unique_short("pmt");
    let prev = json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": "/proc/self/ns/net"}],
        "ips": [{"address": "10.250.0.5/24", "interface": 0}]});
    let conf = |mapping: Value, prev: Option<&Value>| {
        let mut conf = json!({"cniVersion": "1.0.0", "name": "pm-bad", "type": "capstan-portmap",
            "capabilities": {"portMappings": true}, "table": table,
            "runtimeConfig": {"portMappings": [mapping]}});
        if let Some(prev) = prev {
            conf["prevResult"] = prev.clone();
        }
        conf.to_string().into_bytes()
    };
    let good = json!({"hostPort": 8080, "containerPort": 80});
    let cases: Vec<(&str, Vec<u8>, u64, &str)> = vec![
        (
            "missing prevResult",
            conf(good.clone(), None),
            7,
            "prevResult",
        ),
        (
            "hostPort 0",
            conf(json!({"hostPort": 0, "containerPort": 80}), Some(&prev)),
            7,
            "hostPort",
        ),
        (
            "hostPort 70000",
            conf(json!({"hostPort": 70000, "containerPort": 80}), Some(&prev)),
            7,
            "hostPort",
        ),
        (
            "containerPort 0",
            conf(json!({"hostPort": 1, "containerPort": 0}), Some(&prev)),
            7,
            "containerPort",
        ),
        (
            "protocol icmp",
            conf(
                json!({"hostPort": 1, "containerPort": 80, "protocol": "icmp"}),
                Some(&prev),
            ),
            7,
            "protocol",
        ),
        (
            "bad hostIP",
            conf(
                json!({"hostPort": 1, "containerPort": 80, "hostIP": "1.2.3"}),
                Some(&prev),
            ),
            7,
            "hostIP",
        ),
        (
            "IPv6 hostIP, IPv4 pod",
            conf(
                json!({"hostPort": 1, "containerPort": 80, "hostIP": "::1"}),
                Some(&prev),
            ),
            7,
            "hostIP",
        ),
        (
            "malformed JSON",
            b"{\"cniVersion\": \"1.0.0\", \"name\": ".to_vec(),
            6,
            "",
        ),
    ];
    for (what, stdin, code, field) in cases {
        let (ok, json) = raw_invoke("ADD", &stdin, None)?;
        ensure!(
            !ok && json["code"] == code,
            "{what}: expected code {code}, got {json}"
        );
        let msg = json["msg"].as_str().unwrap_or_default();
        ensure!(
            msg.contains(field),
            "{what}: message does not name {field}: {msg}"
        );
    }
    ensure!(
        list_table(&table)?.is_none(),
        "a rejected ADD installed rules"
    );

    // No mappings: success, prevResult passed through, nothing installed.
    let mut none: Value = serde_json::from_slice(&conf(good, Some(&prev)))?;
    none["runtimeConfig"] = json!({});
    let (ok, json) = raw_invoke("ADD", none.to_string().as_bytes(), None)?;
    ensure!(
        ok && json["ips"] == prev["ips"],
        "ADD without mappings: {json}"
    );
    ensure!(
        list_table(&table)?.is_none(),
        "ADD without mappings installed rules"
    );

    // STATUS reports 50 when nft does not work (an `nft` that always fails comes first).
    let fake = TempRoot::new("pm-fake-nft")?;
    let nft = fake.join("nft");
    std::fs::write(&nft, "#!/bin/sh\necho 'nft: broken' >&2\nexit 1\n")?;
    std::fs::set_permissions(&nft, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    none["cniVersion"] = "1.1.0".into();
    let (ok, json) = raw_invoke("STATUS", none.to_string().as_bytes(), Some(fake.path()))?;
    ensure!(
        !ok && json["code"] == 50,
        "STATUS with a broken nft: {json}"
    );
    ensure!(
        json["details"]
            .as_str()
            .unwrap_or_default()
            .contains("nft: broken"),
        "{json}"
    );
    Ok(())
}
