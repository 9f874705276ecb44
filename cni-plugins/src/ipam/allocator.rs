//! Allocation, release and verification over a locked [`Store`].

use std::collections::HashSet;
use std::net::IpAddr;

use super::code;
use super::config::Config;
use super::store::{Holder, Store};
use crate::error::CniError;
use crate::types::{Attachment, CniResult, IpConfig, IpNet};

/// Allocate one address per range set for `holder`; on failure nothing allocated here is
/// left behind and no round-robin position moves.
pub fn allocate(
    store: &Store,
    config: &Config,
    holder: &Holder,
) -> Result<Vec<IpConfig>, CniError> {
    let mut made = Vec::new();
    match allocate_sets(store, config, holder, &mut made) {
        Ok(ips) => {
            for (set, ip) in made {
                // Only a round-robin hint: the allocation itself is already durable.
                let _ = store.set_last_reserved(set, ip);
            }
            Ok(ips)
        }
        Err(err) => {
            for (_, ip) in made {
                let _ = store.release(ip);
            }
            Err(err)
        }
    }
}

fn allocate_sets(
    store: &Store,
    config: &Config,
    holder: &Holder,
    made: &mut Vec<(usize, IpAddr)>,
) -> Result<Vec<IpConfig>, CniError> {
    let existing = store.allocations()?;
    let mut taken: HashSet<IpAddr> = existing.iter().map(|a| a.ip).collect();
    let held: Vec<IpAddr> = existing
        .iter()
        .filter(|a| a.holder.as_ref().is_some_and(|h| h.is(holder)))
        .map(|a| a.ip)
        .collect();
    let mut requested = config.requested.clone();
    let mut ips = Vec::new();
    for (idx, set) in config.sets.iter().enumerate() {
        let fail = |code: u32, msg: String| {
            CniError::new(
                code,
                format!("failed to allocate for range {idx}: {msg}"),
                "",
            )
        };
        // The spec forbids a second ADD for one attachment; host-local refuses it too.
        if let Some(ip) = held.iter().find(|ip| set.range_for(**ip).is_some()) {
            return Err(fail(
                code::DUPLICATE_ALLOCATION,
                format!(
                    "{ip} has been allocated to {}, duplicate allocation is not allowed",
                    holder.container_id
                ),
            ));
        }
        let wanted = requested
            .iter()
            .position(|ip| set.range_for(*ip).is_some())
            .map(|i| requested.remove(i));
        let found = match wanted {
            Some(ip) => {
                let range = set
                    .range_for(ip)
                    .filter(|r| r.gateway != ip)
                    .ok_or_else(|| {
                        fail(
                            code::REQUESTED_UNAVAILABLE,
                            format!("requested ip {ip} is subnet's gateway"),
                        )
                    })?;
                if taken.contains(&ip) || !store.reserve(ip, holder)? {
                    return Err(fail(
                        code::REQUESTED_UNAVAILABLE,
                        format!("requested IP address {ip} is not available in range set {set}"),
                    ));
                }
                (ip, range)
            }
            None => {
                let mut found = None;
                for (ip, range) in set.walk(store.last_reserved(idx)) {
                    if taken.contains(&ip) {
                        continue;
                    }
                    if store.reserve(ip, holder)? {
                        found = Some((ip, range));
                        break;
                    }
                    taken.insert(ip);
                }
                found.ok_or_else(|| {
                    fail(
                        code::NO_ADDRESSES,
                        format!("no IP addresses available in range set: {set}"),
                    )
                })?
            }
        };
        let (ip, range) = found;
        taken.insert(ip);
        made.push((idx, ip));
        ips.push(IpConfig {
            address: IpNet {
                addr: ip,
                prefix: range.subnet.prefix,
            },
            gateway: Some(range.gateway),
            interface: None,
            version: None,
        });
    }
    if !requested.is_empty() {
        let list: Vec<String> = requested.iter().map(IpAddr::to_string).collect();
        return Err(CniError::new(
            code::REQUESTED_UNAVAILABLE,
            format!(
                "failed to allocate all requested IPs: {} (not in any range set)",
                list.join(" ")
            ),
            "",
        ));
    }
    Ok(ips)
}

/// Release what `holder` holds: its exact files, or (as host-local does) the legacy
/// container-only files when there are none.
pub fn release(store: &Store, holder: &Holder) -> Result<(), CniError> {
    let allocations = store.allocations()?;
    let held = |exact: bool| -> Vec<IpAddr> {
        allocations
            .iter()
            .filter(|a| {
                a.holder
                    .as_ref()
                    .is_some_and(|h| h.is(holder) && (h.ifname.is_some() == exact))
            })
            .map(|a| a.ip)
            .collect()
    };
    let mut ips = held(true);
    if ips.is_empty() {
        ips = held(false);
    }
    ips.into_iter().try_for_each(|ip| store.release(ip))
}

/// Release every allocation whose holder is not among `valid` (legacy files stay while
/// their container is valid on any interface).
pub fn collect_garbage(store: &Store, valid: &[Attachment]) -> Result<(), CniError> {
    let valid: Vec<Holder> = valid
        .iter()
        .map(|a| Holder::new(&a.container_id, &a.ifname))
        .collect();
    for allocation in store.allocations()? {
        let keep = allocation
            .holder
            .as_ref()
            .is_some_and(|h| valid.iter().any(|v| h.is(v)));
        if !keep {
            store.release(allocation.ip)?;
        }
    }
    Ok(())
}

/// Verify that `holder` holds an address in every range set and, with a previous result,
/// that it lists exactly those addresses.
pub fn check(
    store: &Store,
    config: &Config,
    holder: &Holder,
    prev: Option<&CniResult>,
) -> Result<(), CniError> {
    let who = format!(
        "container {} interface {}",
        holder.container_id,
        holder.ifname.as_deref().unwrap_or_default()
    );
    let fail = |msg: String| CniError::new(code::CHECK_FAILED, msg, "");
    let held: Vec<IpAddr> = store
        .allocations()?
        .into_iter()
        .filter(|a| a.holder.as_ref().is_some_and(|h| h.is(holder)))
        .map(|a| a.ip)
        .collect();
    for (idx, set) in config.sets.iter().enumerate() {
        if !held.iter().any(|ip| set.range_for(*ip).is_some()) {
            return Err(fail(format!(
                "{who} holds no address in range set {idx} ({set})"
            )));
        }
    }
    let Some(prev) = prev else {
        return Ok(());
    };
    for ip in &prev.ips {
        let addr = ip.address.addr;
        if !held.contains(&addr) {
            return Err(fail(format!(
                "prevResult lists {}, which {who} does not hold",
                ip.address
            )));
        }
        let range = config.sets.iter().find_map(|s| s.range_for(addr));
        if let Some(range) = range.filter(|r| r.subnet.prefix != ip.address.prefix) {
            return Err(fail(format!(
                "prevResult lists {} but its range {range} has prefix length {}",
                ip.address, range.subnet.prefix
            )));
        }
    }
    if let Some(ip) = held
        .iter()
        .find(|ip| !prev.ips.iter().any(|p| p.address.addr == **ip))
    {
        return Err(fail(format!(
            "{who} holds {ip}, which prevResult does not list"
        )));
    }
    Ok(())
}
