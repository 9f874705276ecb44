//! `capstan-ipam`: a host-local-compatible IPAM plugin. Addresses come from range sets in the
//! network's `ipam` config and are recorded in host-local's on-disk layout under
//! `<dataDir>/<network>/`, so the two plugins can take over each other's state.

pub mod allocator;
pub mod config;
pub mod dns;
pub mod range;
pub mod store;

#[cfg(test)]
mod tests;

use crate::error::{code::PLUGIN_NOT_AVAILABLE, CniError};
use crate::skel::{Context, Plugin};
use crate::types::CniResult;

use config::Config;
use store::{Holder, Store};

/// Plugin-specific error codes (the spec reserves 100 and up for plugins).
pub mod code {
    /// A range set has no free address.
    pub const NO_ADDRESSES: u32 = 100;
    /// The attachment already holds an address in a range set.
    pub const DUPLICATE_ALLOCATION: u32 = 101;
    /// A specifically requested address cannot be given.
    pub const REQUESTED_UNAVAILABLE: u32 = 102;
    /// CHECK found the allocations not as expected.
    pub const CHECK_FAILED: u32 = 103;
}

/// The IPAM plugin.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ipam;

impl Plugin for Ipam {
    fn add(&self, ctx: &Context) -> Result<CniResult, CniError> {
        let config = Config::load(ctx)?;
        let holder = holder(ctx)?;
        // Read DNS first so a bad resolvConf fails before anything is allocated.
        let dns = dns::for_result(config.resolv_conf.as_deref(), ctx.conf.dns.as_ref())?;
        let store = Store::create(&config.dir)?;
        let ips = allocator::allocate(&store, &config, &holder)?;
        Ok(CniResult {
            ips,
            routes: config.routes,
            dns,
            ..Default::default()
        })
    }

    fn del(&self, ctx: &Context) -> Result<(), CniError> {
        let dir = config::network_dir(ctx)?;
        let holder = holder(ctx)?;
        match Store::open_existing(&dir)? {
            Some(store) => allocator::release(&store, &holder),
            None => Ok(()),
        }
    }

    fn check(&self, ctx: &Context) -> Result<(), CniError> {
        let config = Config::load(ctx)?;
        let holder = holder(ctx)?;
        let prev = ctx.conf.prev_result()?;
        let Some(store) = Store::open_existing(&config.dir)? else {
            return Err(CniError::new(
                code::CHECK_FAILED,
                format!(
                    "no addresses are allocated on network {} ({} does not exist)",
                    ctx.conf.name,
                    config.dir.display()
                ),
                "",
            ));
        };
        allocator::check(&store, &config, &holder, prev.as_ref())
    }

    fn status(&self, ctx: &Context) -> Result<(), CniError> {
        let dir = config::network_dir(ctx)?;
        Store::create(&dir)
            .and_then(|store| store.probe())
            .map_err(|e| {
                CniError::new(
                    PLUGIN_NOT_AVAILABLE,
                    format!("data directory {} is not writable", dir.display()),
                    format!("{}: {}", e.msg, e.details),
                )
            })
    }

    fn gc(&self, ctx: &Context) -> Result<(), CniError> {
        let dir = config::network_dir(ctx)?;
        let valid = ctx.conf.valid_attachments()?;
        match Store::open_existing(&dir)? {
            Some(store) => allocator::collect_garbage(&store, valid),
            None => Ok(()),
        }
    }
}

/// The attachment's holder; a line break would make its file ambiguous.
fn holder(ctx: &Context) -> Result<Holder, CniError> {
    let env = &ctx.env;
    if env.container_id.contains(['\r', '\n']) || env.ifname.contains(['\r', '\n']) {
        return Err(CniError::invalid_environment(
            "CNI_CONTAINERID and CNI_IFNAME must not contain line breaks",
        ));
    }
    Ok(Holder::new(&env.container_id, &env.ifname))
}
