//! Blocking netlink operations (links, addresses, routes) over `rtnetlink`, on a
//! current-thread runtime owned by the calling thread: the socket lives in the network
//! namespace of the thread that made it.

use std::future::Future;
use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteMetric, RouteProtocol,
};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};
use tokio::runtime::Runtime;

use crate::error::CniError;
use crate::types::{IpNet, Route};

/// What the bridge plugin needs to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Link kind (`bridge`, `veth`, ...); `None` for plain devices.
    pub kind: Option<InfoKind>,
    /// Hardware address as `aa:bb:..`.
    pub mac: String,
    /// MTU.
    pub mtu: u32,
    /// Index of the bridge (controller) it is attached to.
    pub master: Option<u32>,
    /// Index of the peer device (`IFLA_LINK`), for veths.
    pub peer: Option<u32>,
    /// Administratively up.
    pub up: bool,
    /// Promiscuous flag set.
    pub promisc: bool,
}

impl Link {
    fn from_message(msg: &LinkMessage) -> Self {
        let mut link = Self {
            index: msg.header.index,
            name: String::new(),
            kind: None,
            mac: String::new(),
            mtu: 0,
            master: None,
            peer: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            promisc: msg.header.flags.contains(LinkFlags::Promisc),
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name.clone_from(name),
                LinkAttribute::Address(mac) => link.mac = format_mac(mac),
                LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
                LinkAttribute::Controller(index) => link.master = Some(*index),
                LinkAttribute::Link(index) => link.peer = Some(*index),
                LinkAttribute::LinkInfo(infos) => {
                    link.kind = infos.iter().find_map(|info| match info {
                        LinkInfo::Kind(kind) => Some(kind.clone()),
                        _ => None,
                    })
                }
                _ => {}
            }
        }
        link
    }

    /// The kind as `ip -d link` shows it.
    pub fn kind_name(&self) -> String {
        self.kind.as_ref().map_or_else(
            || "device without a link kind".to_owned(),
            ToString::to_string,
        )
    }
}

/// Plugin-specific error code of a failed netlink operation (the same in every plugin).
pub const NETLINK_FAILURE: u32 = 101;

/// A rtnetlink connection driven by its own current-thread runtime.
pub struct Netlink {
    runtime: Runtime,
    handle: Handle,
}

impl Netlink {
    /// Connect in the calling thread's network namespace.
    pub fn connect() -> Result<Self, CniError> {
        let fail = |e: std::io::Error| {
            CniError::new(NETLINK_FAILURE, "opening a netlink socket", e.to_string())
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(fail)?;
        let (connection, handle, _) = {
            let _entered = runtime.enter();
            rtnetlink::new_connection().map_err(fail)?
        };
        runtime.spawn(connection);
        Ok(Self { runtime, handle })
    }

    /// The underlying handle, for requests without a wrapper here.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Drive one request to completion.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// The link named `name`, `None` if there is none.
    pub fn link_by_name(&self, name: &str) -> Result<Option<Link>, CniError> {
        let request = self.handle.link().get().match_name(name.to_owned());
        self.get_one(request.execute(), &format!("looking up link {name:?}"))
    }

    /// The link with index `index`, `None` if there is none.
    pub fn link_by_index(&self, index: u32) -> Result<Option<Link>, CniError> {
        let request = self.handle.link().get().match_index(index);
        self.get_one(request.execute(), &format!("looking up link #{index}"))
    }

    fn get_one(
        &self,
        stream: impl futures::Stream<Item = Result<LinkMessage, rtnetlink::Error>>,
        what: &str,
    ) -> Result<Option<Link>, CniError> {
        let mut stream = std::pin::pin!(stream);
        match self.block_on(stream.try_next()) {
            Ok(msg) => Ok(msg.as_ref().map(Link::from_message)),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(error(what, e)),
        }
    }

    /// The links attached to bridge `master` (filtered by the kernel).
    pub fn ports_of(&self, master: u32) -> Result<Vec<Link>, CniError> {
        let mut request = self.handle.link().get();
        request
            .message_mut()
            .attributes
            .push(LinkAttribute::Controller(master));
        let links: Vec<LinkMessage> = self
            .block_on(request.execute().try_collect())
            .map_err(|e| error(&format!("listing the ports of link #{master}"), e))?;
        Ok(links
            .iter()
            .map(Link::from_message)
            .filter(|l| l.master == Some(master))
            .collect())
    }

    /// Create a link from a prepared message (`EEXIST` is an error).
    pub fn add_link(&self, message: LinkMessage) -> Result<(), rtnetlink::Error> {
        self.block_on(self.handle.link().add(message).execute())
    }

    /// Change a link's flags or attributes.
    pub fn set_link(&self, message: LinkMessage, what: &str) -> Result<(), CniError> {
        self.block_on(self.handle.link().set(message).execute())
            .map_err(|e| error(what, e))
    }

    /// Bring link `index` up.
    pub fn set_up(&self, index: u32) -> Result<(), CniError> {
        self.set_link(
            LinkUnspec::new_with_index(index).up().build(),
            &format!("bringing link #{index} up"),
        )
    }

    /// Bring link `index` down.
    pub fn set_down(&self, index: u32) -> Result<(), CniError> {
        self.set_link(
            LinkUnspec::new_with_index(index).down().build(),
            &format!("bringing link #{index} down"),
        )
    }

    /// Delete link `index`; `false` when it was already gone.
    pub fn delete_link(&self, index: u32) -> Result<bool, CniError> {
        match self.block_on(self.handle.link().del(index).execute()) {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(error(&format!("deleting link #{index}"), e)),
        }
    }

    /// Add `addr` to link `index` without duplicate address detection; `false` when the link
    /// already has it.
    pub fn add_address(&self, index: u32, addr: IpNet) -> Result<bool, CniError> {
        let mut request = self.handle.address().add(index, addr.addr, addr.prefix);
        if addr.addr.is_ipv6() {
            // Usable at once: DAD would keep it tentative for a second or more.
            request
                .message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match self.block_on(request.execute()) {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(error(&format!("adding address {addr} to link #{index}"), e)),
        }
    }

    /// The addresses on link `index`.
    pub fn addresses(&self, index: u32) -> Result<Vec<IpNet>, CniError> {
        let request = self.handle.address().get().set_link_index_filter(index);
        let messages: Vec<_> = self
            .block_on(request.execute().try_collect())
            .map_err(|e| error(&format!("listing the addresses of link #{index}"), e))?;
        Ok(messages
            .iter()
            .filter_map(|msg| {
                msg.attributes.iter().find_map(|attr| match attr {
                    AddressAttribute::Local(addr) | AddressAttribute::Address(addr) => {
                        Some(IpNet {
                            addr: *addr,
                            prefix: msg.header.prefix_len,
                        })
                    }
                    _ => None,
                })
            })
            .collect())
    }

    /// Add `route` through link `index` (its `gw` already resolved).
    pub fn add_route(&self, index: u32, route: &Route) -> Result<(), CniError> {
        let via = route.gw.map(|gw| format!(" via {gw}")).unwrap_or_default();
        let what = format!("adding route to {}{via}", route.dst);
        let invalid = |e: &dyn std::fmt::Display| {
            CniError::invalid_config(format!("route to {}: {e}", route.dst))
        };
        let mut builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(route.dst.network(), route.dst.prefix)
            .map_err(|e| invalid(&e))?
            .output_interface(index);
        if let Some(gw) = route.gw {
            builder = builder.gateway(gw).map_err(|e| invalid(&e))?;
        }
        if let Some(priority) = route.priority {
            builder = builder.priority(priority);
        }
        let mut message = builder.build();
        // As `ip route add` and the reference plugin do.
        message.header.protocol = RouteProtocol::Boot;
        if let Some(mtu) = route.mtu {
            message
                .attributes
                .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
        }
        self.block_on(self.handle.route().add(message).execute())
            .map_err(|e| error(&what, e))
    }

    /// The main table's routes through link `index`, as (destination, gateway).
    pub fn routes(&self, index: u32) -> Result<Vec<(IpNet, Option<IpAddr>)>, CniError> {
        let request = self.handle.route().get(RouteMessage::default());
        let messages: Vec<RouteMessage> = self
            .block_on(request.execute().try_collect())
            .map_err(|e| error("listing routes", e))?;
        Ok(messages
            .iter()
            .filter_map(|msg| route_via(msg, index))
            .collect())
    }
}

fn route_via(msg: &RouteMessage, index: u32) -> Option<(IpNet, Option<IpAddr>)> {
    let mut dst = None;
    let mut gw = None;
    let mut oif = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(addr) => dst = route_addr(addr),
            RouteAttribute::Gateway(addr) => gw = route_addr(addr),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    if oif != Some(index) {
        return None;
    }
    let unspecified: IpAddr = match msg.header.address_family {
        rtnetlink::packet_route::AddressFamily::Inet => std::net::Ipv4Addr::UNSPECIFIED.into(),
        rtnetlink::packet_route::AddressFamily::Inet6 => std::net::Ipv6Addr::UNSPECIFIED.into(),
        _ => return None,
    };
    let dst = IpNet {
        addr: dst.unwrap_or(unspecified),
        prefix: msg.header.destination_prefix_length,
    };
    Some((dst, gw))
}

fn route_addr(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(a) => Some((*a).into()),
        RouteAddress::Inet6(a) => Some((*a).into()),
        _ => None,
    }
}

/// The errno of a netlink error reply (positive), if it is one.
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| -c.get()),
        _ => None,
    }
}

/// A netlink failure as a CNI error: transient conditions say "try again later".
pub fn error(what: &str, e: rtnetlink::Error) -> CniError {
    match errno(&e) {
        Some(libc::EBUSY | libc::EAGAIN) => CniError::try_again_later(what, e.to_string()),
        Some(n) => CniError::new(
            NETLINK_FAILURE,
            what,
            std::io::Error::from_raw_os_error(n).to_string(),
        ),
        None => CniError::new(NETLINK_FAILURE, what, e.to_string()),
    }
}

/// `aa:bb:cc:dd:ee:ff` for a hardware address.
pub fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
