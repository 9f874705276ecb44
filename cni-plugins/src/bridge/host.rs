//! Host-side setup: the bridge, the veth pair (its container end created directly inside the
//! container's namespace), hairpin, gateway addresses and IP forwarding.

use std::os::fd::AsRawFd;

use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth};
use rtnetlink::{LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth};
use sha2::{Digest, Sha256};

use super::code;
use super::config::BridgeConf;
use crate::error::CniError;
use crate::netlink::{errno, error, Link, Netlink};
use crate::netns::NetNs;
use crate::types::IpNet;

/// The bridge named in `conf`, created (up, with the configured MTU) if missing. Fails
/// without side effects when a link of another kind holds the name.
pub fn ensure_bridge(nl: &Netlink, conf: &BridgeConf) -> Result<Link, CniError> {
    // Two rounds: a concurrent ADD may create the bridge between our lookup and our create.
    for _ in 0..2 {
        if let Some(link) = nl.link_by_name(&conf.bridge)? {
            if link.kind != Some(InfoKind::Bridge) {
                return Err(CniError::new(
                    code::NOT_A_BRIDGE,
                    format!(
                        "link {:?} exists but is a {}, not a bridge",
                        conf.bridge,
                        link.kind_name()
                    ),
                    "remove it or choose another `bridge` name",
                ));
            }
            if !link.up || (conf.promisc_mode && !link.promisc) {
                let mut change = LinkUnspec::new_with_index(link.index).up();
                if conf.promisc_mode {
                    change = change.promiscuous(true);
                }
                nl.set_link(
                    change.build(),
                    &format!("setting up bridge {:?}", conf.bridge),
                )?;
            }
            return Ok(link);
        }
        // A fixed address keeps the bridge's MAC from following its lowest port's.
        let mut create = LinkBridge::new(&conf.bridge).address(bridge_mac(&conf.bridge));
        if let Some(mtu) = conf.mtu {
            create = create.mtu(mtu);
        }
        if conf.promisc_mode {
            create = create.promiscuous(true);
        }
        match nl.add_link(create.build()) {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(libc::EEXIST) => {}
            Err(e) => return Err(error(&format!("creating bridge {:?}", conf.bridge), e)),
        }
    }
    Err(CniError::try_again_later(
        format!("bridge {:?} vanished while being set up", conf.bridge),
        "",
    ))
}

/// A stable, locally administered unicast MAC for a bridge name.
fn bridge_mac(name: &str) -> Vec<u8> {
    let mut mac = Sha256::digest(format!("capstan-bridge:{name}").as_bytes())[..6].to_vec();
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

/// The veth pair of one attachment, named `host` on the host (attached to `bridge` and up)
/// and `ifname` inside `ns` (down, to be configured there), both with `mtu`. One request
/// creates it all, so a crash leaves either nothing or a pair DEL finds by name.
pub fn create_veth(
    nl: &Netlink,
    host: &str,
    ifname: &str,
    mtu: u32,
    bridge: &Link,
    ns: &NetNs,
) -> Result<(), CniError> {
    let peer = LinkUnspec::new_with_name(ifname)
        .mtu(mtu)
        .setns_by_fd(ns.fd().as_raw_fd())
        .build();
    let message = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(host)
        .mtu(mtu)
        .controller(bridge.index)
        .up()
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    match nl.add_link(message) {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::EEXIST) => {
            if nl.link_by_name(host)?.is_some() {
                return Err(already_attached(host));
            }
            Err(CniError::new(
                code::LINK_EXISTS,
                format!(
                    "interface {ifname:?} already exists in {}",
                    ns.path().display()
                ),
                "",
            ))
        }
        Err(e) => Err(error(
            &format!(
                "creating veth pair {host:?}/{ifname:?} on bridge {:?}",
                bridge.name
            ),
            e,
        )),
    }
}

/// The error for an ADD whose host veth already exists.
pub fn already_attached(host: &str) -> CniError {
    CniError::new(
        code::LINK_EXISTS,
        format!("host interface {host:?} of this container ID and interface already exists"),
        "DEL the previous attachment first",
    )
}

/// Let frames leave through the bridge port they arrived on (pods reaching themselves via a
/// service address).
pub fn set_hairpin(nl: &Netlink, port: &Link) -> Result<(), CniError> {
    let message = LinkBridgePort::new(port.index).hairpin(true).build();
    nl.block_on(nl.handle().link().set_port(message).execute())
        .map_err(|e| error(&format!("enabling hairpin mode on {:?}", port.name), e))
}

/// Put each gateway address on the bridge unless it is already there.
pub fn ensure_gateways(nl: &Netlink, bridge: &Link, gateways: &[IpNet]) -> Result<(), CniError> {
    for gw in gateways {
        nl.add_address(bridge.index, *gw)?;
    }
    Ok(())
}

/// Turn on IP forwarding for the families in use (a read first: most ADDs find it on).
pub fn enable_forwarding(v4: bool, v6: bool) -> Result<(), CniError> {
    let keys = [
        (v4, "/proc/sys/net/ipv4/ip_forward"),
        (v6, "/proc/sys/net/ipv6/conf/all/forwarding"),
    ];
    for (_, key) in keys.iter().filter(|(wanted, _)| *wanted) {
        if std::fs::read_to_string(key).is_ok_and(|v| v.trim() == "1") {
            continue;
        }
        std::fs::write(key, "1")
            .map_err(|e| CniError::new(code::SYSCTL, format!("enabling {key}"), e.to_string()))?;
    }
    Ok(())
}

/// Delete the host end `name` (and with it the container end); `false` if it is gone.
pub fn delete_veth(nl: &Netlink, name: &str) -> Result<bool, CniError> {
    match nl.link_by_name(name)? {
        Some(link) if link.kind == Some(InfoKind::Veth) => nl.delete_link(link.index),
        Some(link) => Err(CniError::new(
            code::LINK_EXISTS,
            format!(
                "{name:?} is a {}, not this attachment's veth",
                link.kind_name()
            ),
            "",
        )),
        None => Ok(false),
    }
}
