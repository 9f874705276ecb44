//! `capstan-portmap`: forwards host ports to a container, like the reference `portmap`
//! plugin but with nftables rules in Capstan's own `inet` table.
//!
//! Layout: base NAT chains `prerouting`/`output` jump (for local destinations) to one chain
//! per attachment holding its DNAT rules; `postrouting` masquerades hairpin and localhost
//! connections. Every rule outside an attachment's chain carries the chain's name in its
//! comment, so DEL and GC find them without the previous result.

pub mod config;
pub mod localnet;
pub mod lock;
pub mod nft;
pub mod rules;
pub mod script;

use std::collections::BTreeSet;

use crate::error::{code, CniError};
use crate::skel::{Context, Plugin};
use crate::types::CniResult;
use config::{ContainerAddrs, PortmapConf};
use nft::{Nft, TableState};
use rules::AttachmentRules;

/// Plugin-specific error codes.
pub mod codes {
    /// `nft` is missing or failed (details carry its stderr).
    pub const NFT_FAILED: u32 = 100;
    /// `nft -j` printed something unexpected.
    pub const NFT_OUTPUT: u32 = 101;
    /// CHECK found the attachment's rules missing or different.
    pub const CHECK_MISMATCH: u32 = 102;
    /// `route_localnet` could not be set for localhost host ports.
    pub const LOCALNET: u32 = 103;
}

/// The portmap plugin.
#[derive(Debug, Default)]
pub struct Portmap;

/// What ADD and CHECK derive from an invocation.
struct Wanted {
    table: String,
    result: CniResult,
    rules: Option<AttachmentRules>,
}

fn wanted(ctx: &Context) -> Result<Wanted, CniError> {
    let result = ctx.conf.prev_result()?.ok_or_else(|| {
        CniError::invalid_config(
            "prevResult is required: portmap must follow a plugin that assigns addresses",
        )
    })?;
    let conf: PortmapConf = ctx.plugin_conf()?;
    let table = conf.table()?.to_owned();
    let mappings = config::port_mappings(ctx.conf.runtime_config.as_ref())?;
    let rules = if mappings.is_empty() {
        None
    } else {
        let addrs = ContainerAddrs::from_result(&result, &ctx.env.ifname);
        let chain = rules::chain_name(&ctx.conf.name, &ctx.env.container_id, &ctx.env.ifname);
        Some(rules::attachment_rules(
            &chain,
            &mappings,
            &addrs,
            conf.snat(),
        )?)
    };
    Ok(Wanted {
        table,
        result,
        rules,
    })
}

/// Remove `chains` (and the rules referring to them) from `table`, if present.
fn remove_chains(
    nft: &Nft,
    table: &str,
    chains: impl FnOnce(&TableState) -> BTreeSet<String>,
) -> Result<(), CniError> {
    let _lock = lock::lock();
    let Some(state) = nft.list_table(table)? else {
        return Ok(());
    };
    match script::remove(table, &state, &chains(&state)) {
        Some(script) => nft.apply(&script, false),
        None => Ok(()),
    }
}

impl Plugin for Portmap {
    fn add(&self, ctx: &Context) -> Result<CniResult, CniError> {
        let wanted = wanted(ctx)?;
        // Pods without host ports need neither nft nor any rule.
        let Some(rules) = &wanted.rules else {
            return Ok(wanted.result);
        };
        let nft = Nft::require()?;
        if let Some(target) = rules.localhost_target {
            localnet::enable_for(target)?;
        }
        let _lock = lock::lock();
        let state = nft.list_table(&wanted.table)?;
        nft.apply(&script::add(&wanted.table, state.as_ref(), rules), false)?;
        Ok(wanted.result)
    }

    fn del(&self, ctx: &Context) -> Result<(), CniError> {
        let conf: PortmapConf = ctx.plugin_conf()?;
        let table = conf.table()?;
        // Without nft nothing can have been installed.
        let Some(nft) = Nft::find() else {
            return Ok(());
        };
        let chain = rules::chain_name(&ctx.conf.name, &ctx.env.container_id, &ctx.env.ifname);
        remove_chains(&nft, table, |_| BTreeSet::from([chain]))
    }

    fn check(&self, ctx: &Context) -> Result<(), CniError> {
        let wanted = wanted(ctx)?;
        let Some(rules) = &wanted.rules else {
            return Ok(());
        };
        let state = Nft::require()?
            .list_table(&wanted.table)?
            .unwrap_or_default();
        let problems = mismatches(&state, rules);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(
                codes::CHECK_MISMATCH,
                format!(
                    "port mapping rules of chain {} differ from the configuration",
                    rules.chain
                ),
                problems.join("; "),
            ))
        }
    }

    fn status(&self, ctx: &Context) -> Result<(), CniError> {
        let conf: PortmapConf = ctx.plugin_conf()?;
        let table = conf.table()?;
        let unavailable = |details: String| {
            CniError::new(
                code::PLUGIN_NOT_AVAILABLE,
                "nftables is not usable",
                details,
            )
        };
        let nft = Nft::find().ok_or_else(|| unavailable("nft not found".to_owned()))?;
        // A kernel-side dry run: catches missing nf_tables/NAT support, not just the binary.
        nft.apply(&script::base(table), true)
            .map_err(|e| unavailable(e.details))
    }

    fn gc(&self, ctx: &Context) -> Result<(), CniError> {
        let conf: PortmapConf = ctx.plugin_conf()?;
        let table = conf.table()?;
        let valid = ctx.conf.valid_attachments()?;
        let Some(nft) = Nft::find() else {
            return Ok(());
        };
        let keep: BTreeSet<String> = valid
            .iter()
            .map(|a| rules::chain_name(&ctx.conf.name, &a.container_id, &a.ifname))
            .collect();
        let prefix = rules::network_prefix(&ctx.conf.name);
        remove_chains(&nft, table, |state| {
            let mut stale = script::attachment_chains(state, &prefix);
            stale.retain(|c| !keep.contains(c));
            stale
        })
    }
}

/// What CHECK finds wrong: rule comments expected but missing, or present but unexpected.
fn mismatches(state: &TableState, rules: &AttachmentRules) -> Vec<String> {
    let chain = &rules.chain;
    if !state.has_chain(chain) {
        return vec![format!("chain {chain} is missing")];
    }
    let mut problems = Vec::new();
    let mut compare = |place: &str, expected: BTreeSet<String>, found: BTreeSet<String>| {
        for missing in expected.difference(&found) {
            problems.push(format!("{place}: missing {missing:?}"));
        }
        for extra in found.difference(&expected) {
            problems.push(format!("{place}: unexpected {extra:?}"));
        }
    };
    let comments = |chain_name: &str, owned: bool| -> BTreeSet<String> {
        state
            .rules_in(chain_name)
            .filter_map(|r| r.comment.clone())
            .filter(|c| !owned || AttachmentRules::owns_comment(chain, c))
            .collect()
    };
    let set = |rules: &[rules::Rule]| rules.iter().map(|r| r.comment.clone()).collect();
    compare(chain, set(&rules.dnat), comments(chain, false));
    for base in ["prerouting", "output"] {
        compare(
            base,
            BTreeSet::from([rules.jump_comment().to_owned()]),
            comments(base, true),
        );
    }
    compare(
        "postrouting",
        set(&rules.masquerade),
        comments("postrouting", true),
    );
    problems
}
