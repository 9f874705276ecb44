//! `capstan-loopback`: brings `lo` up in the container's network namespace, as the
//! reference `loopback` plugin does, for runtimes that do not do it themselves.

use std::path::Path;

use crate::error::CniError;
use crate::netlink::{Netlink, NETLINK_FAILURE};
use crate::netns::NetNs;
use crate::skel::{Context, Plugin};
use crate::types::{CniResult, Interface, IpConfig};

/// Plugin-specific error code: CHECK found `lo` down.
pub const LOOPBACK_DOWN: u32 = 102;

/// The plugin.
#[derive(Debug, Default)]
pub struct Loopback;

/// Run `op` on the namespace's `lo`; `None` when the namespace is gone.
fn in_namespace<T: Send>(
    netns: &Path,
    op: impl FnOnce(&Netlink, u32) -> Result<T, CniError> + Send,
) -> Result<Option<T>, CniError> {
    let ns = match NetNs::open(netns) {
        Ok(ns) => ns,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CniError::io(
                format!("opening netns {}", netns.display()),
                e,
            ))
        }
    };
    ns.run(|| {
        let netlink = Netlink::connect()?;
        let lo = netlink
            .link_by_name("lo")?
            .ok_or_else(|| CniError::new(NETLINK_FAILURE, "the namespace has no lo", ""))?;
        op(&netlink, lo.index)
    })
    .map_err(|e| CniError::io("entering the container's network namespace", e))?
    .map(Some)
}

fn netns(ctx: &Context) -> Result<&Path, CniError> {
    ctx.env
        .netns
        .as_deref()
        .ok_or_else(|| CniError::invalid_environment("CNI_NETNS is required"))
}

impl Plugin for Loopback {
    fn add(&self, ctx: &Context) -> Result<CniResult, CniError> {
        let netns = netns(ctx)?;
        let addresses = in_namespace(netns, |netlink, lo| {
            netlink.set_up(lo)?;
            netlink.addresses(lo)
        })?
        .ok_or_else(|| {
            CniError::new(
                crate::error::code::UNKNOWN_CONTAINER,
                format!("network namespace {} does not exist", netns.display()),
                "",
            )
        })?;
        Ok(CniResult {
            interfaces: vec![Interface {
                name: "lo".to_owned(),
                sandbox: netns.display().to_string(),
                ..Default::default()
            }],
            ips: addresses
                .into_iter()
                .map(|address| IpConfig {
                    address,
                    gateway: None,
                    interface: Some(0),
                    version: None,
                })
                .collect(),
            dns: ctx.conf.dns.clone().unwrap_or_default(),
            ..Default::default()
        })
    }

    fn del(&self, ctx: &Context) -> Result<(), CniError> {
        // Nothing to undo when the namespace is already gone.
        let Some(netns) = ctx.env.netns.as_deref() else {
            return Ok(());
        };
        in_namespace(netns, |netlink, lo| netlink.set_down(lo)).map(|_| ())
    }

    fn check(&self, ctx: &Context) -> Result<(), CniError> {
        let netns = netns(ctx)?;
        let up = in_namespace(netns, |netlink, lo| {
            Ok(netlink.link_by_index(lo)?.is_some_and(|link| link.up))
        })?;
        match up {
            Some(true) => Ok(()),
            Some(false) => Err(CniError::new(LOOPBACK_DOWN, "lo is down", "")),
            None => Err(CniError::new(
                crate::error::code::UNKNOWN_CONTAINER,
                format!("network namespace {} does not exist", netns.display()),
                "",
            )),
        }
    }
}
