//! The `capstan-bridge` plugin: attaches containers to a Linux bridge through veth pairs, with
//! addresses from a delegated IPAM plugin. Config fields and results follow the reference
//! `bridge` plugin; all link work is netlink, and `nft` runs only for a network's first
//! masqueraded ADD.

pub mod addressing;
pub mod config;
pub mod container;
pub mod host;
pub mod masq;

use sha2::{Digest, Sha256};

use crate::delegate;
use crate::error::CniError;
use crate::netlink::{Link, Netlink};
use crate::netns::NetNs;
use crate::skel::{Context, Plugin};
use crate::types::{CniResult, Command, Interface};
use addressing::Plan;
use config::BridgeConf;

/// The plugin's error codes (beyond the spec's; 100 is a delegate failure).
pub mod code {
    /// A netlink operation failed.
    pub const NETLINK: u32 = crate::netlink::NETLINK_FAILURE;
    /// The configured bridge name belongs to a link of another kind.
    pub const NOT_A_BRIDGE: u32 = 102;
    /// An interface of the attachment already exists.
    pub const LINK_EXISTS: u32 = 103;
    /// Installing or removing the masquerade rules failed.
    pub const MASQUERADE: u32 = 104;
    /// CHECK found the attachment differing from its result.
    pub const CHECK_FAILED: u32 = 105;
    /// The IPAM result cannot be applied.
    pub const IPAM_RESULT: u32 = 106;
    /// Writing a sysctl failed.
    pub const SYSCTL: u32 = 107;
}

/// The plugin.
#[derive(Debug, Default)]
pub struct Bridge;

/// The host end's name: fixed by container ID and interface, so DEL finds it without the
/// container's namespace.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let digest = Sha256::digest(format!("{container_id}\0{ifname}").as_bytes());
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("veth{hex}")
}

impl Plugin for Bridge {
    fn add(&self, ctx: &Context) -> Result<CniResult, CniError> {
        let conf = BridgeConf::from_context(ctx)?;
        let ns = open_netns(ctx)?.ok_or_else(|| netns_gone(ctx))?;
        let nl = Netlink::connect()?;
        let name = host_veth_name(&ctx.env.container_id, &ctx.env.ifname);
        // A repeated ADD must not reach IPAM: its rollback would release the first ADD's address.
        if nl.link_by_name(&name)?.is_some() {
            return Err(host::already_attached(&name));
        }
        // IPAM (a process) runs while the host side is prepared; both settle before either
        // outcome is acted on, so the rollback knows what to undo.
        let ipam = delegate::start(&conf.ipam_type, Command::Add, &ctx.env, &ctx.raw)?;
        let mut undo = Rollback {
            ctx,
            conf: &conf,
            veth: None,
            ipam: false,
        };
        let host = prepare_host(&nl, &name, ctx, &conf, &ns, &mut undo);
        let ipam = ipam.wait_result();
        undo.ipam = ipam.is_ok();
        let (host, ipam) = (host?, ipam?);
        let plan = Plan::new(&conf, &ipam)?;
        let container = container::configure(&ns, &ctx.env.ifname, &plan.ips, &plan.routes)?;
        if conf.is_gateway {
            host::ensure_gateways(&nl, &host.bridge, &plan.bridge_addrs)?;
            host::enable_forwarding(plan.has_family(false), plan.has_family(true))?;
        }
        if let Some(lock) = &host.masq_lock {
            masq::ensure(lock, &conf.network, &plan.subnets)?;
        }
        undo.disarm();
        Ok(result(
            &conf,
            &host.bridge,
            &host.veth,
            &container,
            &ns,
            plan,
        ))
    }

    fn del(&self, ctx: &Context) -> Result<(), CniError> {
        let conf = BridgeConf::from_context(ctx)?;
        // Release the address first, but clean up the links whatever IPAM says.
        let ipam = delegate::del(&conf.ipam_type, &ctx.env, &ctx.raw);
        let nl = Netlink::connect()?;
        let host_name = host_veth_name(&ctx.env.container_id, &ctx.env.ifname);
        if !host::delete_veth(&nl, &host_name)? {
            if let Some(ns) = open_netns(ctx)? {
                container::delete(&ns, &ctx.env.ifname)?;
            }
        }
        if conf.ip_masq {
            masq::release_if_unused(&nl, &conf.network, &conf.bridge)?;
        }
        ipam
    }

    fn check(&self, ctx: &Context) -> Result<(), CniError> {
        let conf = BridgeConf::from_context(ctx)?;
        let prev = ctx
            .conf
            .prev_result()?
            .ok_or_else(|| CniError::invalid_config("field `prevResult` is required for CHECK"))?;
        delegate::check(&conf.ipam_type, &ctx.env, &ctx.raw)?;
        let ns = open_netns(ctx)?.ok_or_else(|| netns_gone(ctx))?;
        let (index, iface) = prev
            .interfaces
            .iter()
            .enumerate()
            .find(|(_, i)| i.name == ctx.env.ifname && !i.sandbox.is_empty())
            .ok_or_else(|| {
                CniError::invalid_config(format!(
                    "prevResult has no container interface {:?}",
                    ctx.env.ifname
                ))
            })?;
        let ips: Vec<_> = prev
            .ips
            .iter()
            .filter(|ip| ip.interface == Some(index))
            .cloned()
            .collect();
        let peer = container::verify(&ns, &ctx.env.ifname, &iface.mac, &ips, &prev.routes)?;
        let nl = Netlink::connect()?;
        let bridge = nl
            .link_by_name(&conf.bridge)?
            .filter(|l| l.kind == Some(rtnetlink::packet_route::link::InfoKind::Bridge))
            .ok_or_else(|| {
                CniError::new(
                    code::CHECK_FAILED,
                    format!("bridge {:?} is missing", conf.bridge),
                    "",
                )
            })?;
        match nl.link_by_index(peer)? {
            Some(port) if port.master == Some(bridge.index) => Ok(()),
            _ => Err(CniError::new(
                code::CHECK_FAILED,
                format!(
                    "the host end of {:?} is not attached to {:?}",
                    ctx.env.ifname, conf.bridge
                ),
                "",
            )),
        }
    }

    fn status(&self, ctx: &Context) -> Result<(), CniError> {
        let conf = BridgeConf::from_context(ctx)?;
        delegate::status(&conf.ipam_type, &ctx.env, &ctx.raw)
    }

    fn gc(&self, ctx: &Context) -> Result<(), CniError> {
        let conf = BridgeConf::from_context(ctx)?;
        delegate::gc(&conf.ipam_type, &ctx.env, &ctx.raw)?;
        let none_left = ctx
            .conf
            .valid_attachments
            .as_ref()
            .is_some_and(Vec::is_empty);
        if conf.ip_masq && none_left {
            masq::remove(&conf.network)?;
        }
        Ok(())
    }
}

/// The host side of an attachment, ready for addressing.
struct HostSide {
    bridge: Link,
    veth: Link,
    /// Held from attaching the port until the masquerade rule is in place.
    masq_lock: Option<masq::Lock>,
}

/// Bridge, veth pair (recorded in `undo` once it exists) and hairpin.
fn prepare_host(
    nl: &Netlink,
    name: &str,
    ctx: &Context,
    conf: &BridgeConf,
    ns: &NetNs,
    undo: &mut Rollback,
) -> Result<HostSide, CniError> {
    let bridge = host::ensure_bridge(nl, conf)?;
    let masq_lock = conf.ip_masq.then(masq::Lock::shared).transpose()?;
    let mtu = conf.mtu.unwrap_or(bridge.mtu);
    host::create_veth(nl, name, &ctx.env.ifname, mtu, &bridge, ns)?;
    undo.veth = Some(name.to_owned());
    let veth = nl.link_by_name(name)?.ok_or_else(|| {
        CniError::try_again_later(format!("veth {name:?} vanished after creation"), "")
    })?;
    if conf.hairpin_mode {
        host::set_hairpin(nl, &veth)?;
    }
    Ok(HostSide {
        bridge,
        veth,
        masq_lock,
    })
}

/// The container's namespace, `None` when it is gone or not given.
fn open_netns(ctx: &Context) -> Result<Option<NetNs>, CniError> {
    let Some(path) = ctx.env.netns.as_deref() else {
        return Ok(None);
    };
    match NetNs::open(path) {
        Ok(ns) => Ok(Some(ns)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CniError::invalid_environment(format!(
            "CNI_NETNS {}: {e}",
            path.display()
        ))),
    }
}

fn netns_gone(ctx: &Context) -> CniError {
    let path = ctx.env.netns.as_deref().unwrap_or(std::path::Path::new(""));
    CniError::new(
        crate::error::code::UNKNOWN_CONTAINER,
        format!("network namespace {} does not exist", path.display()),
        "",
    )
}

/// The ADD result, shaped as the reference plugin's: bridge, host veth, container veth.
fn result(
    conf: &BridgeConf,
    bridge: &Link,
    host_veth: &Link,
    container: &Link,
    ns: &NetNs,
    plan: Plan,
) -> CniResult {
    let iface = |link: &Link, sandbox: String| Interface {
        name: link.name.clone(),
        mac: link.mac.clone(),
        mtu: None,
        sandbox,
    };
    CniResult {
        cni_version: String::new(),
        interfaces: vec![
            iface(bridge, String::new()),
            iface(host_veth, String::new()),
            iface(container, ns.path().display().to_string()),
        ],
        ips: plan.ips,
        routes: plan.routes,
        dns: conf.dns.clone(),
    }
}

/// Undoes a failed ADD: deletes the veth and releases the IPAM allocation, whichever
/// exist. Runs on drop, so early returns (and unwinding) cannot skip it.
struct Rollback<'a> {
    ctx: &'a Context,
    conf: &'a BridgeConf,
    veth: Option<String>,
    ipam: bool,
}

impl Rollback<'_> {
    fn disarm(&mut self) {
        self.veth = None;
        self.ipam = false;
    }
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if let Some(veth) = &self.veth {
            // A fresh connection: the failure may have been the ADD's own.
            let _ = Netlink::connect().and_then(|nl| host::delete_veth(&nl, veth));
        }
        if self.ipam {
            let _ = delegate::del(&self.conf.ipam_type, &self.ctx.env, &self.ctx.raw);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_stable_and_fit_ifnamsiz() {
        let a = host_veth_name("c1", "eth0");
        assert_eq!(a, host_veth_name("c1", "eth0"));
        assert_ne!(a, host_veth_name("c1", "eth1"));
        assert_ne!(a, host_veth_name("c2", "eth0"));
        assert_eq!(a.len(), 12);
        assert!(a.starts_with("veth"));
    }
}
