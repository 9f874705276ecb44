//! Container-side work, each step run on a thread inside the container's network namespace:
//! configuring the container end of the veth, checking it, deleting it.

use rtnetlink::packet_route::link::InfoKind;

use super::addressing::container_routes;
use super::code;
use crate::error::CniError;
use crate::netlink::{Link, Netlink};
use crate::netns::NetNs;
use crate::types::{IpConfig, Route};

/// Address `ifname` with `ips`, bring it up and add `routes`; returns the link.
pub fn configure(
    ns: &NetNs,
    ifname: &str,
    ips: &[IpConfig],
    routes: &[Route],
) -> Result<Link, CniError> {
    in_netns(ns, || {
        let nl = Netlink::connect()?;
        let link = nl
            .link_by_name(ifname)?
            .ok_or_else(|| missing(ns, ifname))?;
        if ips.iter().any(|ip| ip.address.addr.is_ipv6()) {
            disable_dad(ifname)?;
        }
        for ip in ips {
            nl.add_address(link.index, ip.address)?;
        }
        nl.set_up(link.index)?;
        for route in container_routes(ips, routes) {
            nl.add_route(link.index, &route)?;
        }
        Ok(link)
    })
}

/// Verify `ifname` is a veth with `mac` (if given), `addrs` and `routes`; returns its peer's
/// index on the host.
pub fn verify(
    ns: &NetNs,
    ifname: &str,
    mac: &str,
    ips: &[IpConfig],
    routes: &[Route],
) -> Result<u32, CniError> {
    in_netns(ns, || {
        let nl = Netlink::connect()?;
        let link = nl
            .link_by_name(ifname)?
            .ok_or_else(|| missing(ns, ifname))?;
        if link.kind != Some(InfoKind::Veth) {
            return Err(mismatch(format!(
                "{ifname:?} is a {}, not a veth",
                link.kind_name()
            )));
        }
        if !mac.is_empty() && !mac.eq_ignore_ascii_case(&link.mac) {
            return Err(mismatch(format!(
                "{ifname:?} has MAC {}, expected {mac}",
                link.mac
            )));
        }
        let present = nl.addresses(link.index)?;
        for ip in ips {
            if !present.contains(&ip.address) {
                return Err(mismatch(format!("{ifname:?} lacks address {}", ip.address)));
            }
        }
        let installed = nl.routes(link.index)?;
        for route in container_routes(ips, routes) {
            let found = installed
                .iter()
                .any(|(dst, gw)| *dst == route.dst && (route.gw.is_none() || *gw == route.gw));
            if !found {
                return Err(mismatch(format!(
                    "route to {} via {:?} is missing on {ifname:?}",
                    route.dst, route.gw
                )));
            }
        }
        link.peer
            .ok_or_else(|| mismatch(format!("{ifname:?} reports no peer interface")))
    })
}

/// Delete `ifname` if it is a veth; `false` when there is none.
pub fn delete(ns: &NetNs, ifname: &str) -> Result<bool, CniError> {
    in_netns(ns, || {
        let nl = Netlink::connect()?;
        match nl.link_by_name(ifname)? {
            Some(link) if link.kind == Some(InfoKind::Veth) => nl.delete_link(link.index),
            _ => Ok(false),
        }
    })
}

fn in_netns<T: Send>(
    ns: &NetNs,
    f: impl FnOnce() -> Result<T, CniError> + Send,
) -> Result<T, CniError> {
    ns.run(f).map_err(|e| {
        CniError::new(
            code::NETLINK,
            format!("entering network namespace {}", ns.path().display()),
            e.to_string(),
        )
    })?
}

/// Addresses must work at once: without this they stay tentative during DAD. (The procfs
/// sysctl follows the writing thread's namespace.)
fn disable_dad(ifname: &str) -> Result<(), CniError> {
    let key = format!("/proc/sys/net/ipv6/conf/{ifname}/accept_dad");
    std::fs::write(&key, "0")
        .map_err(|e| CniError::new(code::SYSCTL, format!("writing {key}"), e.to_string()))
}

fn missing(ns: &NetNs, ifname: &str) -> CniError {
    mismatch(format!(
        "no interface {ifname:?} in {}",
        ns.path().display()
    ))
}

fn mismatch(msg: String) -> CniError {
    CniError::new(code::CHECK_FAILED, msg, "")
}
