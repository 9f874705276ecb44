//! The runtime side of CNI (`cri_shim::network::Cni`) against real plugin chains: the
//! reference plugins (bridge, host-local, portmap, loopback) and Capstan's. Pods are network
//! namespaces; every network has its own bridge, subnets and nftables table.

use std::future::Future;
use std::path::PathBuf;

use anyhow::{Context, Result};
use cri_shim::config::CniSettings;
use cri_shim::network::{
    pod_ips, Attachment, AttachmentRef, Cni, CniResult, NetworkError, PodIdentity, PortMapping,
};
use serde_json::json;
use tests::cleanup::TempRoot;
use tests::names::unique_name;
use tests::netns::{link_exists, NetNs};
use tests::podnet::{
    enable_forwarding, reaches, unique_host_port, Httpd, Impl, Plugins, PodNetwork,
};

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}

/// Whether `ip` lies in `subnet` ("address/prefix") of the same family.
fn in_subnet(ip: &str, subnet: &str) -> bool {
    use std::net::IpAddr;
    // Addresses as the top bits of a u128, so a prefix counts from the top in both families.
    let bits = |addr: IpAddr| match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)) << 96,
        IpAddr::V6(a) => u128::from(a),
    };
    let Some((net, prefix)) = subnet.split_once('/') else {
        return false;
    };
    let (Ok(ip), Ok(net), Ok(prefix)) = (
        ip.parse::<IpAddr>(),
        net.parse::<IpAddr>(),
        prefix.parse::<u32>(),
    ) else {
        return false;
    };
    let mask = u128::MAX.checked_shl(128 - prefix.min(128)).unwrap_or(0);
    ip.is_ipv4() == net.is_ipv4() && bits(ip) & mask == bits(net) & mask
}

/// A network written to its own configuration directory, with its own result cache.
struct Setup {
    which: Impl,
    net: PodNetwork,
    cni: Cni,
    version: &'static str,
    dual_stack: bool,
    _dirs: TempRoot,
}

impl Setup {
    /// A network of `which` plugins: loopback, bridge (masquerading) with IPAM, portmap;
    /// IPv4 only unless `dual_stack`.
    fn new(which: Impl, dual_stack: bool) -> Result<Self> {
        Self::with_masquerade(which, dual_stack, true)
    }

    fn with_masquerade(which: Impl, dual_stack: bool, masquerade: bool) -> Result<Self> {
        tests::binaries::require_root()?;
        enable_forwarding()?;
        let mut net = PodNetwork::new(Plugins {
            bridge: which,
            ipam: which,
            portmap: Some(which),
        })?;
        net.masquerade = masquerade;
        let (version, loopback) = match which {
            // Debian's reference plugins speak CNI up to 1.0.0.
            Impl::Reference => ("1.0.0", "loopback"),
            Impl::Capstan => ("1.1.0", "capstan-loopback"),
        };
        // Loopback first: capstan-loopback does not pass prevResult on, so chained last it
        // would replace the pod's result with lo's addresses.
        let mut plugins = vec![json!({"type": loopback})];
        for (_, mut conf) in net.chain(None)? {
            // Port mappings come from the runtime through the capability, not the file.
            if let Some(object) = conf.as_object_mut() {
                object.remove("runtimeConfig");
            }
            if !dual_stack && conf["ipam"].is_object() {
                conf["ipam"]["ranges"] = json!([[{"subnet": net.v4}]]);
                conf["ipam"]["routes"] = json!([{"dst": "0.0.0.0/0"}]);
            }
            plugins.push(conf);
        }
        let dirs = TempRoot::new("crinet")?;
        let conf_dir = dirs.join("net.d");
        std::fs::create_dir_all(&conf_dir)?;
        let list = json!({"cniVersion": version, "name": net.name(), "plugins": plugins});
        std::fs::write(conf_dir.join("10-pods.conflist"), list.to_string())?;
        let cni = Cni::new(CniSettings {
            conf_dir,
            bin_dirs: net.cni_path()?,
            cache_dir: dirs.join("cache"),
        });
        Ok(Self {
            which,
            net,
            cni,
            version,
            dual_stack,
            _dirs: dirs,
        })
    }

    /// IP allocation files in the IPAM store, sorted.
    fn allocations(&self) -> Vec<String> {
        let mut found: Vec<String> = std::fs::read_dir(self.net.allocations_dir())
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect();
        found.sort();
        found
    }

    /// CHECK of an attachment. Debian's portmap (1.1.1) always fails CHECK looking for
    /// IPv6 rules it never made (containernetworking/plugins#819); as it is the last plugin
    /// checked, its failure still shows loopback, bridge and host-local passed.
    fn check(&self, attachment: &AttachmentRef) -> Result<()> {
        match block_on(self.cni.check(attachment)) {
            Ok(()) => Ok(()),
            Err(NetworkError::Plugin { plugin, msg, .. })
                if self.which == Impl::Reference
                    && plugin == "portmap"
                    && msg.contains("could not check ipv6") =>
            {
                Ok(())
            }
            Err(e) => Err(e).context("CHECK"),
        }
    }
}

/// A pod attached through `Cni::add`; detached on drop should the test fail first.
struct AttachedPod<'s> {
    setup: &'s Setup,
    ns: Option<NetNs>,
    attachment: Attachment,
    result: CniResult,
    host_port: u16,
}

impl<'s> AttachedPod<'s> {
    fn attach(setup: &'s Setup) -> Result<Self> {
        let ns = NetNs::new("cri")?;
        let host_port = unique_host_port();
        let attachment = Attachment {
            container_id: unique_name("sandbox"),
            netns: ns.path(),
            ifname: "eth0".to_owned(),
            pod: PodIdentity {
                namespace: "default".to_owned(),
                name: unique_name("pod"),
                uid: unique_name("uid"),
            },
            port_mappings: vec![PortMapping {
                host_port,
                container_port: 80,
                protocol: "tcp".to_owned(),
                host_ip: String::new(),
            }],
        };
        let result = block_on(setup.cni.add(&attachment))?;
        Ok(Self {
            setup,
            ns: Some(ns),
            attachment,
            result,
            host_port,
        })
    }

    fn reference(&self) -> AttachmentRef {
        AttachmentRef::from(&self.attachment)
    }

    fn ns(&self) -> Result<&NetNs> {
        self.ns.as_ref().context("the namespace was deleted")
    }

    fn cache_file(&self) -> PathBuf {
        self.setup
            .cni
            .cache_path(&self.setup.net.name(), &self.reference())
    }

    /// The host end of the pod's veth: the result's interface outside any namespace that
    /// is not the bridge.
    fn host_veth(&self) -> Result<String> {
        self.result
            .interfaces
            .iter()
            .find(|i| i.sandbox.is_empty() && i.name != self.setup.net.bridge)
            .map(|i| i.name.clone())
            .with_context(|| format!("no host veth in {:?}", self.result))
    }

    fn gateway(&self) -> Result<String> {
        self.result
            .ips
            .iter()
            .filter_map(|ip| ip.gateway)
            .find(|g| g.is_ipv4())
            .map(|g| g.to_string())
            .context("no IPv4 gateway in the result")
    }

    fn del(&self) -> Result<()> {
        Ok(block_on(self.setup.cni.del(&self.reference()))?)
    }
}

impl Drop for AttachedPod<'_> {
    fn drop(&mut self) {
        let _ = block_on(self.setup.cni.del(&self.reference()));
    }
}

/// The pod has one address per family of the network, allocated by IPAM, each reachable
/// from the host. Returns them, IPv4 first.
fn assert_addressed(setup: &Setup, pod: &AttachedPod) -> Result<Vec<String>> {
    let ips = pod_ips(&pod.result);
    let families = if setup.dual_stack { 2 } else { 1 };
    assert_eq!(ips.len(), families, "one address per family: {ips:?}");
    assert!(
        in_subnet(&ips[0], &setup.net.v4),
        "{} not in {}",
        ips[0],
        setup.net.v4
    );
    if setup.dual_stack {
        assert!(
            in_subnet(&ips[1], &setup.net.v6),
            "{} not in {}",
            ips[1],
            setup.net.v6
        );
    }
    let mut expected = ips.clone();
    expected.sort();
    assert_eq!(setup.allocations(), expected, "IPAM allocations");
    for ip in &ips {
        assert!(reaches(None, ip)?, "host → pod {ip}");
    }
    Ok(ips)
}

/// STATUS, ADD (address, cache entry, reachability, lo up), CHECK, a host port, DEL (veth,
/// allocation and cache entry gone), DEL again.
fn lifecycle(which: Impl, dual_stack: bool) -> Result<()> {
    let setup = Setup::new(which, dual_stack)?;
    block_on(setup.cni.status()).context("STATUS")?;
    assert_eq!(setup.cni.load()?.cni_version, setup.version);

    let pod = AttachedPod::attach(&setup)?;
    assert_addressed(&setup, &pod)?;
    assert!(
        pod.cache_file().is_file(),
        "no cache entry {}",
        pod.cache_file().display()
    );
    assert!(
        pod.ns()?
            .exec_ok(&["ip", "-o", "link", "show", "lo"])?
            .contains(",UP"),
        "lo is down in the pod"
    );
    setup.check(&pod.reference())?;

    let httpd = Httpd::start(pod.ns()?)?;
    let node = pod.gateway()?;
    assert!(
        httpd.served_at(None, &node, pod.host_port)?,
        "host port {} → pod port 80",
        pod.host_port
    );
    drop(httpd);

    let veth = pod.host_veth()?;
    assert!(link_exists(&veth), "host veth {veth} missing after ADD");
    pod.del()?;
    assert!(!link_exists(&veth), "host veth {veth} left after DEL");
    assert!(
        setup.allocations().is_empty(),
        "allocations left: {:?}",
        setup.allocations()
    );
    assert!(!pod.cache_file().exists(), "cache entry left after DEL");
    pod.del().context("a second DEL")?;
    assert!(
        block_on(setup.cni.check(&pod.reference())).is_err(),
        "CHECK of a deleted attachment passed"
    );
    Ok(())
}

/// DEL once the pod's namespace was deleted still frees the addresses.
fn del_after_the_namespace_is_gone(which: Impl) -> Result<()> {
    // Debian's bridge (1.1.1) finds the addresses whose masquerade rules it removes in the
    // namespace, so without one it would leave them behind.
    let masquerade = which == Impl::Capstan;
    let setup = Setup::with_masquerade(which, false, masquerade)?;
    let mut pod = AttachedPod::attach(&setup)?;
    assert_eq!(setup.allocations().len(), 1);
    drop(pod.ns.take());
    pod.del().context("DEL without the namespace")?;
    assert!(
        setup.allocations().is_empty(),
        "allocations left: {:?}",
        setup.allocations()
    );
    assert!(!pod.cache_file().exists());
    pod.del().context("a second DEL")?;
    Ok(())
}

/// GC releases cached attachments outside the valid list and keeps the listed ones; on
/// CNI 1.1 networks the plugins' own GC also frees what the cache does not know.
fn gc_releases_leftovers(which: Impl) -> Result<()> {
    let setup = Setup::new(which, false)?;
    let kept = AttachedPod::attach(&setup)?;
    let stale = AttachedPod::attach(&setup)?;
    assert_eq!(setup.allocations().len(), 2);

    block_on(setup.cni.gc(&[kept.reference()])).context("GC")?;
    assert_eq!(
        setup.allocations(),
        pod_ips(&kept.result),
        "GC kept the wrong ones"
    );
    assert!(!stale.cache_file().exists());
    assert!(kept.cache_file().exists());
    setup.check(&kept.reference())?;

    if setup.version == "1.1.0" {
        // The entry is lost (as after a crash): only the plugins' GC can free the address.
        std::fs::remove_file(kept.cache_file())?;
    }
    block_on(setup.cni.gc(&[])).context("GC with an empty valid list")?;
    assert!(
        setup.allocations().is_empty(),
        "GC left {:?}",
        setup.allocations()
    );
    assert!(!kept.cache_file().exists());
    Ok(())
}

/// Both families: ADD gives an address of each (IPv4 first), both reach the pod, DEL frees
/// both.
fn dual_stack(which: Impl) -> Result<()> {
    let setup = Setup::new(which, true)?;
    let pod = AttachedPod::attach(&setup)?;
    let ips = assert_addressed(&setup, &pod)?;
    assert!(
        ips[0].contains('.') && ips[1].contains(':'),
        "IPv4 first: {ips:?}"
    );
    pod.del()?;
    assert!(
        setup.allocations().is_empty(),
        "allocations left: {:?}",
        setup.allocations()
    );
    Ok(())
}

#[test]
fn reference_plugins_attach_check_map_ports_and_detach() -> Result<()> {
    lifecycle(Impl::Reference, false)
}

#[test]
fn capstan_plugins_attach_check_map_ports_and_detach() -> Result<()> {
    lifecycle(Impl::Capstan, true)
}

#[test]
fn reference_plugins_detach_after_the_namespace_is_gone() -> Result<()> {
    del_after_the_namespace_is_gone(Impl::Reference)
}

#[test]
fn capstan_plugins_detach_after_the_namespace_is_gone() -> Result<()> {
    del_after_the_namespace_is_gone(Impl::Capstan)
}

#[test]
fn reference_network_gc_releases_stale_attachments() -> Result<()> {
    gc_releases_leftovers(Impl::Reference)
}

#[test]
fn capstan_network_gc_releases_stale_and_unknown_attachments() -> Result<()> {
    gc_releases_leftovers(Impl::Capstan)
}

#[test]
fn reference_plugins_give_dual_stack_addresses() -> Result<()> {
    dual_stack(Impl::Reference)
}

#[test]
fn capstan_plugins_give_dual_stack_addresses() -> Result<()> {
    dual_stack(Impl::Capstan)
}
