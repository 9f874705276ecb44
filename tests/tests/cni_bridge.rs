//! `capstan-bridge` against real network namespaces (as root), with Debian's reference
//! `host-local` for addresses: attachment, traffic, CHECK, DEL in every state, refusals,
//! a crash in the middle of ADD, and the masquerade rule's bookkeeping.
//!
//! Build the plugin first: `cargo build -p cni-plugins --bins && cargo test -p tests --test cni_bridge`.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use rand::Rng;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tests::cleanup::TempRoot;
use tests::cni::{self, Attachment, Invocation, REFERENCE_DIR};
use tests::names::{unique_name, unique_short};
use tests::netns::{self, NetNs};

const VERSION: &str = "1.0.0";

/// Subnets handed out in this process, so parallel tests never share one.
static SUBNETS: Mutex<Vec<(u8, u8)>> = Mutex::new(Vec::new());

fn plugin() -> Result<PathBuf> {
    tests::binaries::require_root()?;
    tests::binaries::workspace_bin("capstan-bridge")
}

/// The host end's name: the plugin's contract is "veth" + 8 hex digits of
/// sha256(container ID, NUL, interface name).
fn host_veth(container_id: &str, ifname: &str) -> String {
    let digest = Sha256::digest(format!("{container_id}\0{ifname}").as_bytes());
    format!("veth{}", hex::encode(&digest[..4]))
}

/// A bridge network with its own bridge, subnets and IPAM state, torn down on drop.
struct Network {
    name: String,
    bridge: String,
    v4: String,
    v6: String,
    data: TempRoot,
    /// Extra directory searched first for plugins (fake IPAM plugins).
    plugins: TempRoot,
    ipam_type: String,
    extra: Value,
}

impl Network {
    fn new() -> Result<Self> {
        let mut rng = rand::rng();
        let (a, b) = loop {
            let pick: (u8, u8) = (rng.random_range(128..192), rng.random());
            let mut used = SUBNETS.lock().unwrap_or_else(|e| e.into_inner());
            if !used.contains(&pick) {
                used.push(pick);
                break pick;
            }
        };
        let bridge = unique_short("cbb");
        Ok(Self {
            name: format!("net-{bridge}"),
            v4: format!("10.{a}.{b}.0/24"),
            v6: format!("fd00:{a:x}:{b:x}::/64"),
            bridge,
            data: TempRoot::new("bridge-ipam")?,
            plugins: TempRoot::new("bridge-plugins")?,
            ipam_type: "host-local".to_owned(),
            extra: json!({"isGateway": true, "hairpinMode": true}),
        })
    }

    /// The network config for plugin `kind` (`capstan-bridge` or the reference `bridge`).
    fn conf(&self, kind: &str) -> Value {
        let mut conf = json!({
            "cniVersion": VERSION,
            "name": self.name,
            "type": kind,
            "bridge": self.bridge,
            "dns": {"nameservers": ["10.0.0.10"], "search": ["svc.local"]},
            "ipam": {
                "type": self.ipam_type,
                "ranges": [[{"subnet": self.v4}], [{"subnet": self.v6}]],
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
                "dataDir": self.data.path(),
            },
        });
        for (k, v) in self.extra.as_object().into_iter().flatten() {
            conf[k] = v.clone();
        }
        conf
    }

    fn cni_path(&self) -> Vec<PathBuf> {
        vec![self.plugins.path().to_owned(), PathBuf::from(REFERENCE_DIR)]
    }

    /// Addresses host-local still holds for this network.
    fn allocations(&self) -> Vec<String> {
        std::fs::read_dir(self.data.join(&self.name))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip"))
            .collect()
    }

    fn invoke(&self, command: &str, attachment: &Attachment, conf: &Value) -> Result<Invocation> {
        cni::invoke(&plugin()?, command, attachment, conf, &self.cni_path())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        netns::delete_link(&self.bridge);
        // Normally the last DEL removed it; a failed test may leave it.
        if let Ok(rules) = masquerade_rules(&self.name) {
            if let Some(chain) = rules.first().and_then(|r| r["chain"].as_str()) {
                let _ = Command::new("nft")
                    .args(["delete", "chain", "inet", "capstan-bridge", chain])
                    .status();
                let _ = std::fs::remove_file(Path::new("/run/capstan-cni/bridge").join(chain));
            }
        }
    }
}

/// A pod: a namespace attached to a network, detached on drop.
struct Pod<'n> {
    net: &'n Network,
    /// The plugin that attached it (`capstan-bridge` or `bridge`).
    kind: String,
    ns: Option<NetNs>,
    attachment: Attachment,
    result: Value,
}

impl<'n> Pod<'n> {
    fn attach(net: &'n Network) -> Result<Self> {
        Self::attach_with(net, "capstan-bridge")
    }

    fn attach_with(net: &'n Network, kind: &str) -> Result<Self> {
        let ns = NetNs::new("pod")?;
        ns.exec_ok(&["ip", "link", "set", "lo", "up"])?;
        let attachment = Attachment {
            container_id: unique_name("ctr"),
            netns: ns.path(),
            ifname: "eth0".to_owned(),
        };
        let plugin = if kind == "bridge" {
            PathBuf::from(REFERENCE_DIR).join("bridge")
        } else {
            plugin()?
        };
        let result = cni::invoke(
            &plugin,
            "ADD",
            &attachment,
            &net.conf(kind),
            &net.cni_path(),
        )?
        .ok()
        .context("ADD")?;
        Ok(Self {
            net,
            kind: kind.to_owned(),
            ns: Some(ns),
            attachment,
            result,
        })
    }

    fn ns(&self) -> &NetNs {
        self.ns.as_ref().expect("namespace still present")
    }

    fn ip(&self, v6: bool) -> Result<String> {
        self.result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|ip| ip["address"].as_str())
            .find(|a| a.contains(':') == v6)
            .and_then(|a| a.split('/').next())
            .map(str::to_owned)
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

    fn host_veth(&self) -> String {
        host_veth(&self.attachment.container_id, &self.attachment.ifname)
    }

    fn del(&self) -> Result<Invocation> {
        self.net
            .invoke("DEL", &self.attachment, &self.net.conf("capstan-bridge"))
    }
}

impl Drop for Pod<'_> {
    fn drop(&mut self) {
        let plugin = if self.kind == "bridge" {
            Ok(PathBuf::from(REFERENCE_DIR).join("bridge"))
        } else {
            plugin()
        };
        if let Ok(plugin) = plugin {
            let conf = self.net.conf(&self.kind);
            let _ = cni::invoke(
                &plugin,
                "DEL",
                &self.attachment,
                &conf,
                &self.net.cni_path(),
            );
        }
        if self.kind != "bridge" {
            netns::delete_link(&self.host_veth());
        }
    }
}

/// Ping with retries: fresh neighbours take a moment.
fn reaches(ns: &NetNs, addr: &str) -> Result<bool> {
    for _ in 0..5 {
        if ns.can_ping(addr)? {
            return Ok(true);
        }
    }
    Ok(false)
}

fn ip_json(ns: Option<&NetNs>, args: &[&str]) -> Result<Value> {
    let mut full = vec!["ip", "-j"];
    full.extend_from_slice(args);
    let text = match ns {
        Some(ns) => ns.exec_ok(&full)?,
        None => {
            let out = Command::new(full[0]).args(&full[1..]).output()?;
            ensure!(
                out.status.success(),
                "{full:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout)?
        }
    };
    serde_json::from_str(&text).with_context(|| format!("{full:?} printed {text}"))
}

/// The masquerade rules carrying `network`'s comment, each with its chain.
fn masquerade_rules(network: &str) -> Result<Vec<Value>> {
    let out = Command::new("nft")
        .args(["-j", "list", "table", "inet", "capstan-bridge"])
        .stderr(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Ok(Vec::new()); // no table yet
    }
    let listing: Value = serde_json::from_slice(&out.stdout)?;
    let comment = format!("capstan-bridge {network}");
    Ok(listing["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item.get("rule"))
        .filter(|rule| rule["comment"].as_str() == Some(comment.as_str()))
        .cloned()
        .collect())
}

#[test]
fn pods_get_configured_talk_over_both_families_and_pass_check() -> Result<()> {
    let mut net = Network::new()?;
    net.extra = json!({
        "isGateway": true, "isDefaultGateway": true, "hairpinMode": true, "promiscMode": true, "mtu": 1400,
    });
    let a = Pod::attach(&net)?;
    let b = Pod::attach(&net)?;

    // Result: bridge, host veth, container veth; both addresses on interface 2.
    let names: Vec<&str> = a.result["interfaces"]
        .as_array()
        .context("interfaces")?
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [net.bridge.as_str(), a.host_veth().as_str(), "eth0"],
        "{}",
        a.result
    );
    assert_eq!(
        a.result["interfaces"][2]["sandbox"],
        a.ns().path().display().to_string()
    );
    for ip in a.result["ips"].as_array().context("ips")? {
        assert_eq!(ip["interface"], 2, "{ip}");
    }
    assert_eq!(a.result["dns"]["nameservers"][0], "10.0.0.10");

    // Container side: addresses, MTU, up, default routes via the gateways.
    let link = &ip_json(Some(a.ns()), &["addr", "show", "eth0"])?[0];
    assert_eq!(link["mtu"], 1400, "{link}");
    assert_eq!(link["address"], a.result["interfaces"][2]["mac"]);
    assert!(
        link["flags"]
            .as_array()
            .is_some_and(|f| f.contains(&json!("UP"))),
        "{link}"
    );
    let addrs: HashSet<String> = link["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["scope"] == "global")
        .map(|i| {
            format!(
                "{}/{}",
                i["local"].as_str().unwrap_or_default(),
                i["prefixlen"]
            )
        })
        .collect();
    for v6 in [false, true] {
        let ip = a.ip(v6)?;
        assert!(
            addrs.iter().any(|x| x.starts_with(&format!("{ip}/"))),
            "{addrs:?}"
        );
        let family = if v6 { "-6" } else { "-4" };
        let routes = ip_json(Some(a.ns()), &[family, "route", "show", "default"])?;
        assert_eq!(routes[0]["gateway"], a.gateway(v6)?, "{routes}");
    }

    // Host side: port of the bridge, same MTU, hairpin on; gateways on the bridge.
    let port = &ip_json(None, &["-d", "link", "show", "dev", &a.host_veth()])?[0];
    assert_eq!(port["master"], net.bridge.as_str(), "{port}");
    assert_eq!(port["mtu"], 1400, "{port}");
    assert_eq!(
        port["linkinfo"]["info_slave_data"]["hairpin"], true,
        "{port}"
    );
    let bridge = &ip_json(None, &["addr", "show", "dev", &net.bridge])?[0];
    assert!(
        bridge["flags"]
            .as_array()
            .is_some_and(|f| f.contains(&json!("PROMISC"))),
        "{bridge}"
    );
    let bridge_addrs = bridge["addr_info"].to_string();
    assert!(bridge_addrs.contains(&a.gateway(false)?), "{bridge_addrs}");
    assert!(bridge_addrs.contains(&a.gateway(true)?), "{bridge_addrs}");

    for v6 in [false, true] {
        let family = if v6 { "IPv6" } else { "IPv4" };
        assert!(
            reaches(a.ns(), &b.ip(v6)?)?,
            "a cannot reach b over {family}"
        );
        assert!(
            reaches(b.ns(), &a.ip(v6)?)?,
            "b cannot reach a over {family}"
        );
        assert!(
            reaches(a.ns(), &a.gateway(v6)?)?,
            "a cannot reach its gateway over {family}"
        );
    }

    // A repeated ADD is refused and leaves the first attachment (and its address) intact.
    let again = net.invoke("ADD", &a.attachment, &net.conf("capstan-bridge"))?;
    assert_eq!(again.code(), Some(103), "{:?}", again.json);
    assert_eq!(net.allocations().len(), 4, "{:?}", net.allocations());

    // CHECK with the ADD result as prevResult.
    let mut conf = net.conf("capstan-bridge");
    conf["prevResult"] = a.result.clone();
    net.invoke("CHECK", &a.attachment, &conf)?
        .ok()
        .context("CHECK")?;
    // ... and CHECK notices a missing address.
    a.ns().exec_ok(&[
        "ip",
        "addr",
        "del",
        &format!("{}/24", a.ip(false)?),
        "dev",
        "eth0",
    ])?;
    let failed = net.invoke("CHECK", &a.attachment, &conf)?;
    assert!(
        !failed.success && failed.code() >= Some(100),
        "{:?}",
        failed.json
    );
    Ok(())
}

/// Replace values by their JSON types, keeping keys, array lengths and the interface index.
fn shape(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let kept = matches!(k.as_str(), "interface" | "dst" | "cniVersion" | "dns");
                    (k.clone(), if kept { v.clone() } else { shape(v) })
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(shape).collect()),
        Value::String(_) => json!("string"),
        Value::Number(_) => json!("number"),
        other => other.clone(),
    }
}

#[test]
fn result_has_the_reference_bridge_shape() -> Result<()> {
    let ours = Network::new()?;
    let reference = Network::new()?;
    let pod = Pod::attach(&ours)?;
    let reference_pod = Pod::attach_with(&reference, "bridge")?;
    assert_eq!(shape(&pod.result), shape(&reference_pod.result));
    Ok(())
}

#[test]
fn del_releases_everything_and_tolerates_missing_parts() -> Result<()> {
    let net = Network::new()?;
    let pod = Pod::attach(&net)?;
    let veth = pod.host_veth();
    assert!(netns::link_exists(&veth));
    assert_eq!(net.allocations().len(), 2, "{:?}", net.allocations());
    pod.del()?.ok().context("DEL")?;
    assert!(!netns::link_exists(&veth), "host veth left");
    assert!(
        pod.ns().exec_ok(&["ip", "link", "show", "eth0"]).is_err(),
        "eth0 left in the pod"
    );
    assert!(net.allocations().is_empty(), "{:?}", net.allocations());
    pod.del()?.ok().context("second DEL")?;

    // The namespace is deleted (but kept alive by an open descriptor, so the veth survives).
    let mut other = Pod::attach(&net)?;
    let veth = other.host_veth();
    let keep_alive = std::fs::File::open(other.ns().path())?;
    drop(other.ns.take());
    assert!(!other.attachment.netns.exists());
    assert!(
        netns::link_exists(&veth),
        "the veth died with the namespace mount"
    );
    other.del()?.ok().context("DEL without the namespace")?;
    assert!(!netns::link_exists(&veth), "host veth left");
    assert!(net.allocations().is_empty(), "{:?}", net.allocations());
    drop(keep_alive);
    Ok(())
}

#[test]
fn a_non_bridge_link_with_the_bridge_name_is_refused_without_leftovers() -> Result<()> {
    let net = Network::new()?;
    let peer = unique_short("cbp");
    let out = Command::new("ip")
        .args([
            "link",
            "add",
            &net.bridge,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ])
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ns = NetNs::new("pod")?;
    let attachment = Attachment {
        container_id: unique_name("ctr"),
        netns: ns.path(),
        ifname: "eth0".to_owned(),
    };
    let failed = net.invoke("ADD", &attachment, &net.conf("capstan-bridge"))?;
    assert!(!failed.success);
    assert!(failed.code() >= Some(100), "{:?}", failed.json);
    let msg = failed.json["msg"].as_str().unwrap_or_default();
    assert!(msg.contains(&net.bridge) && msg.contains("veth"), "{msg}");
    assert!(!netns::link_exists(&host_veth(
        &attachment.container_id,
        "eth0"
    )));
    assert!(ns.exec_ok(&["ip", "link", "show", "eth0"]).is_err());
    assert!(net.allocations().is_empty(), "{:?}", net.allocations());
    Ok(())
}

#[test]
fn a_failure_after_ipam_rolls_back() -> Result<()> {
    let net = Network::new()?;
    let ns = NetNs::new("pod")?;
    let attachment = Attachment {
        container_id: unique_name("ctr"),
        netns: ns.path(),
        ifname: "eth0".to_owned(),
    };
    // A route through a gateway no address reaches fails inside the namespace.
    let mut conf = net.conf("capstan-bridge");
    conf["ipam"]["routes"] = json!([{"dst": "192.0.2.0/24", "gw": "198.51.100.1"}]);
    let failed = net.invoke("ADD", &attachment, &conf)?;
    assert!(
        !failed.success && failed.code() >= Some(100),
        "{:?}",
        failed.json
    );
    assert!(
        failed.json["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("192.0.2.0/24"),
        "{:?}",
        failed.json
    );
    assert!(
        !netns::link_exists(&host_veth(&attachment.container_id, "eth0")),
        "veth left"
    );
    assert!(
        ns.exec_ok(&["ip", "link", "show", "eth0"]).is_err(),
        "eth0 left"
    );
    assert!(net.allocations().is_empty(), "{:?}", net.allocations());
    Ok(())
}

#[test]
fn invalid_input_gets_the_spec_codes() -> Result<()> {
    let net = Network::new()?;
    let ns = NetNs::new("pod")?;
    let attachment = Attachment {
        container_id: unique_name("ctr"),
        netns: ns.path(),
        ifname: "eth0".to_owned(),
    };
    // Malformed JSON can only be sent raw.
    let mut child = Command::new(plugin()?)
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", &attachment.container_id)
        .env("CNI_NETNS", &attachment.netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", REFERENCE_DIR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(
        &mut child.stdin.take().context("stdin")?,
        b"{\"cniVersion\":",
    )?;
    let out = child.wait_with_output()?;
    let error: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(error["code"], 6, "{error}");

    let mut conf = net.conf("capstan-bridge");
    conf["cniVersion"] = json!("9.9.9");
    assert_eq!(net.invoke("ADD", &attachment, &conf)?.code(), Some(1));

    let mut conf = net.conf("capstan-bridge");
    conf.as_object_mut().context("object")?.remove("ipam");
    let failed = net.invoke("ADD", &attachment, &conf)?;
    assert_eq!(failed.code(), Some(7), "{:?}", failed.json);
    assert!(failed.json["msg"]
        .as_str()
        .unwrap_or_default()
        .contains("ipam"));

    let mut conf = net.conf("capstan-bridge");
    conf["mtu"] = json!("big");
    let failed = net.invoke("ADD", &attachment, &conf)?;
    assert_eq!(failed.code(), Some(7));
    assert!(failed.json["msg"]
        .as_str()
        .unwrap_or_default()
        .contains("mtu"));
    assert!(
        !netns::link_exists(&net.bridge),
        "a refused ADD created the bridge"
    );
    Ok(())
}

#[test]
fn kill_during_add_then_del_leaves_nothing_behind() -> Result<()> {
    let mut net = Network::new()?;
    // A slow IPAM plugin: allocates through host-local, then hangs until killed.
    net.ipam_type = "slow-ipam".to_owned();
    let marks = net.plugins.path().to_owned();
    let script = format!(
        "#!/bin/sh\nconf=$(cat)\n\
         if [ \"$CNI_COMMAND\" = ADD ]; then\n\
           printf '%s' \"$conf\" | {REFERENCE_DIR}/host-local > {dir}/result\n\
           echo $$ > {dir}/pid.tmp && mv {dir}/pid.tmp {dir}/pid\n\
           exec sleep 60\n\
         fi\n\
         printf '%s' \"$conf\" | exec {REFERENCE_DIR}/host-local\n",
        dir = marks.display()
    );
    let path = marks.join("slow-ipam");
    std::fs::write(&path, script)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;

    let ns = NetNs::new("pod")?;
    let attachment = Attachment {
        container_id: unique_name("ctr"),
        netns: ns.path(),
        ifname: "eth0".to_owned(),
    };
    let mut child = Command::new(plugin()?)
        .env_clear()
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", &attachment.container_id)
        .env("CNI_NETNS", &attachment.netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", std::env::join_paths(net.cni_path())?)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    std::io::Write::write_all(
        &mut child.stdin.take().context("stdin")?,
        net.conf("capstan-bridge").to_string().as_bytes(),
    )?;
    // Kill once the address is allocated and the veth exists (made while IPAM runs).
    let veth = host_veth(&attachment.container_id, "eth0");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(marks.join("pid").exists() && netns::link_exists(&veth)) {
        ensure!(
            Instant::now() < deadline,
            "the plugin never got to allocate and create the veth"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let ipam_pid = std::fs::read_to_string(marks.join("pid"))?
        .trim()
        .to_owned();
    child.kill()?; // SIGKILL, mid-ADD
    child.wait()?;
    let _ = Command::new("kill").args(["-9", &ipam_pid]).status();
    assert!(
        netns::link_exists(&veth),
        "the veth is left for DEL to find"
    );
    assert_eq!(net.allocations().len(), 2, "{:?}", net.allocations());

    net.invoke("DEL", &attachment, &net.conf("capstan-bridge"))?
        .ok()
        .context("DEL")?;
    assert!(!netns::link_exists(&veth), "host veth left");
    assert!(
        ns.exec_ok(&["ip", "link", "show", "eth0"]).is_err(),
        "eth0 left"
    );
    assert!(net.allocations().is_empty(), "{:?}", net.allocations());
    Ok(())
}

#[test]
fn masquerade_is_one_rule_per_family_per_network() -> Result<()> {
    let mut net = Network::new()?;
    net.extra = json!({"isGateway": true, "ipMasq": true});
    let mut other = Network::new()?;
    other.extra = net.extra.clone();

    // Pods attached concurrently must not duplicate the rules either.
    let pods: Vec<Pod> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4).map(|_| s.spawn(|| Pod::attach(&net))).collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("attach panicked")))
            })
            .collect::<Result<_>>()
    })?;
    let other_pod = Pod::attach(&other)?;
    let more = Pod::attach(&net)?;

    let rules = masquerade_rules(&net.name)?;
    assert_eq!(rules.len(), 2, "one IPv4 and one IPv6 rule: {rules:#?}");
    let text = serde_json::to_string(&rules)?;
    assert!(
        text.contains(net.v4.split('/').next().unwrap_or_default()),
        "{text}"
    );
    assert!(text.contains("masquerade"), "{text}");
    assert_eq!(masquerade_rules(&other.name)?.len(), 2);

    // The rules stay until the network's last pod is gone.
    drop(pods);
    assert_eq!(masquerade_rules(&net.name)?.len(), 2);
    drop(more);
    assert!(
        masquerade_rules(&net.name)?.is_empty(),
        "rules outlived the last pod"
    );
    assert_eq!(
        masquerade_rules(&other.name)?.len(),
        2,
        "another network's rules went too"
    );

    // A new first pod installs them again.
    let again = Pod::attach(&net)?;
    assert_eq!(masquerade_rules(&net.name)?.len(), 2);
    drop(again);
    drop(other_pod);
    assert!(masquerade_rules(&other.name)?.is_empty());
    Ok(())
}

#[test]
fn status_and_gc_delegate_and_an_empty_gc_drops_the_masquerade_rules() -> Result<()> {
    let mut net = Network::new()?;
    net.extra = json!({"isGateway": true, "ipMasq": true});
    // host-local speaks CNI 1.0.0: a shim answers STATUS and GC (1.1.0) and forwards the rest.
    net.ipam_type = "shim-ipam".to_owned();
    let log = net.plugins.join("calls");
    let script = format!(
        "#!/bin/sh\nconf=$(cat)\necho \"$CNI_COMMAND\" >> {log}\n\
         case \"$CNI_COMMAND\" in STATUS|GC) exit 0;; esac\n\
         printf '%s' \"$conf\" | sed 's/\"cniVersion\":\"1.1.0\"/\"cniVersion\":\"1.0.0\"/' \
         | exec {REFERENCE_DIR}/host-local\n",
        log = log.display()
    );
    let path = net.plugins.join("shim-ipam");
    std::fs::write(&path, script)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    let conf = |attachments: Value| {
        let mut conf = net.conf("capstan-bridge");
        conf["cniVersion"] = json!("1.1.0");
        conf["cni.dev/valid-attachments"] = attachments;
        conf
    };

    let ns = NetNs::new("pod")?;
    let attachment = Attachment {
        container_id: unique_name("ctr"),
        netns: ns.path(),
        ifname: "eth0".to_owned(),
    };
    let result = net.invoke("ADD", &attachment, &conf(json!([])))?.ok()?;
    assert_eq!(result["cniVersion"], "1.1.0");
    assert_eq!(masquerade_rules(&net.name)?.len(), 2);

    let none = Attachment {
        container_id: String::new(),
        netns: PathBuf::new(),
        ifname: String::new(),
    };
    net.invoke("STATUS", &none, &conf(json!([])))?
        .ok()
        .context("STATUS")?;
    let valid = json!([{"containerID": attachment.container_id, "ifname": "eth0"}]);
    net.invoke("GC", &none, &conf(valid))?.ok().context("GC")?;
    assert_eq!(
        masquerade_rules(&net.name)?.len(),
        2,
        "GC dropped rules in use"
    );
    net.invoke("GC", &none, &conf(json!([])))?
        .ok()
        .context("GC")?;
    assert!(masquerade_rules(&net.name)?.is_empty(), "GC kept the rules");
    let calls = std::fs::read_to_string(&log)?;
    assert_eq!(
        calls.split_whitespace().collect::<Vec<_>>(),
        ["ADD", "STATUS", "GC", "GC"]
    );

    net.invoke("DEL", &attachment, &conf(json!([])))?
        .ok()
        .context("DEL")?;
    assert!(net.allocations().is_empty(), "{:?}", net.allocations());
    Ok(())
}
