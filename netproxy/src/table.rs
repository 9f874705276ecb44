//! One family's table as a model (chains with content hashes, map/set elements, affinity
//! sets), the fixed skeleton every table has, and the diff of two models rendered as one
//! `nft -f` script that touches only what differs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::model::IpFamily;
use crate::names::short_hash;
use crate::plan::{Coll, MARK_CHAIN, REJECT_CHAIN};

/// Prefix of the comment on a chain's first rule carrying the hash of the chain's rules.
pub const HASH_COMMENT: &str = "h:";
/// Prefix of ClientIP affinity set names.
pub const AFFINITY_PREFIX: &str = "aff-";

/// A chain: its rules and their hash (what read-back compares).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Rules, without the hash comment.
    pub rules: Vec<String>,
    /// Hash of the rules.
    pub hash: String,
}

impl Chain {
    /// A chain holding `rules`.
    pub fn new(rules: Vec<String>) -> Self {
        let refs: Vec<&str> = rules.iter().map(String::as_str).collect();
        Self {
            hash: short_hash(&refs),
            rules,
        }
    }
}

/// One family's table contents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableModel {
    /// Chains by name (read-back models hold the hash only, with no rules).
    pub chains: BTreeMap<String, Chain>,
    /// Map and set elements: (collection, key) → verdict ("" for sets).
    pub elements: BTreeMap<(Coll, String), String>,
    /// Affinity sets and their timeouts in seconds.
    pub affinity: BTreeMap<String, u32>,
}

/// Which names a diff looks at; `None` fields mean "all".
#[derive(Debug, Clone, Default)]
pub struct Touched {
    /// Chain names.
    pub chains: BTreeSet<String>,
    /// Element keys.
    pub elements: BTreeSet<(Coll, String)>,
    /// Affinity set names.
    pub affinity: BTreeSet<String>,
}

impl Touched {
    /// Whether nothing was touched.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.elements.is_empty() && self.affinity.is_empty()
    }

    /// Every name in either model.
    pub fn all(a: &TableModel, b: &TableModel) -> Self {
        let mut t = Touched::default();
        for m in [a, b] {
            t.chains.extend(m.chains.keys().cloned());
            t.elements.extend(m.elements.keys().cloned());
            t.affinity.extend(m.affinity.keys().cloned());
        }
        t
    }
}

/// Base chains: name, hook declaration.
const BASE_CHAINS: [(&str, &str); 8] = [
    ("nat-prerouting", "type nat hook prerouting priority dstnat"),
    ("nat-output", "type nat hook output priority -100"),
    (
        "nat-postrouting",
        "type nat hook postrouting priority srcnat",
    ),
    (
        "filter-prerouting",
        "type filter hook prerouting priority -110",
    ),
    ("filter-input", "type filter hook input priority -110"),
    ("filter-forward", "type filter hook forward priority -110"),
    ("filter-output", "type filter hook output priority -110"),
    (
        "filter-output-post-dnat",
        "type filter hook output priority -90",
    ),
];

/// The hook declaration of a base chain.
fn hook_of(chain: &str) -> Option<&'static str> {
    BASE_CHAINS
        .iter()
        .find(|(n, _)| *n == chain)
        .map(|(_, h)| *h)
}

/// The fixed chains of every table (base chains and the dispatch/check chains).
pub fn skeleton(family: IpFamily, mark: u32) -> BTreeMap<String, Chain> {
    let fam = family.nft();
    let new = "ct state new";
    let tuple = format!("{fam} daddr . meta l4proto . th dport");
    let nodeport = format!(
        "{fam} daddr @{} meta l4proto . th dport",
        Coll::NodeportIps.name()
    );
    let chains: Vec<(&str, Vec<String>)> = vec![
        ("nat-prerouting", vec!["jump services".into()]),
        ("nat-output", vec!["jump services".into()]),
        ("nat-postrouting", vec!["jump masquerading".into()]),
        (
            "filter-prerouting",
            vec![format!("{new} jump firewall-check")],
        ),
        ("filter-input", vec![format!("{new} jump endpoints-check")]),
        (
            "filter-forward",
            vec![
                format!("{new} jump endpoints-check"),
                format!("{new} jump cluster-ips-check"),
            ],
        ),
        (
            "filter-output",
            vec![
                format!("{new} jump endpoints-check"),
                format!("{new} jump firewall-check"),
            ],
        ),
        (
            "filter-output-post-dnat",
            vec![format!("{new} jump cluster-ips-check")],
        ),
        (
            "services",
            vec![
                format!("{tuple} vmap @{}", Coll::ServiceIps.name()),
                format!("{nodeport} vmap @{}", Coll::ServiceNodeports.name()),
            ],
        ),
        (
            "endpoints-check",
            vec![
                format!("{tuple} vmap @{}", Coll::NoEndpointServices.name()),
                format!("{nodeport} vmap @{}", Coll::NoEndpointNodeports.name()),
            ],
        ),
        (
            "firewall-check",
            vec![format!("{tuple} vmap @{}", Coll::FirewallIps.name())],
        ),
        (
            "cluster-ips-check",
            vec![format!("{fam} daddr @{} reject", Coll::ClusterIps.name())],
        ),
        (
            "masquerading",
            vec![
                format!("meta mark & {mark:#x} == 0 return"),
                format!("meta mark set meta mark ^ {mark:#x}"),
                "masquerade fully-random".into(),
            ],
        ),
        (
            MARK_CHAIN,
            vec![format!("meta mark set meta mark | {mark:#x}")],
        ),
        (REJECT_CHAIN, vec!["reject".into()]),
    ];
    chains
        .into_iter()
        .map(|(name, rules)| (name.to_owned(), Chain::new(rules)))
        .collect()
}

/// Whether `name` is a skeleton chain (never deleted by a diff).
pub fn is_skeleton(name: &str) -> bool {
    hook_of(name).is_some()
        || matches!(
            name,
            "services"
                | "endpoints-check"
                | "firewall-check"
                | "cluster-ips-check"
                | "masquerading"
                | MARK_CHAIN
                | REJECT_CHAIN
        )
}

/// The script turning `old` into `new` for the names in `touched`; `declare` also (re)declares
/// the table, base chains and collections (idempotent `add`s). Empty when nothing differs.
pub fn diff_script(
    family: IpFamily,
    table: &str,
    old: &TableModel,
    new: &TableModel,
    touched: &Touched,
    declare: bool,
) -> String {
    let fam = family.nft();
    let t = format!("{fam} {table}");
    let mut out = String::new();
    if declare {
        let _ = writeln!(out, "add table {t}");
        for c in Coll::ALL {
            let kind = if c.is_map() { "map" } else { "set" };
            let value = if c.is_map() { " : verdict" } else { "" };
            let _ = writeln!(
                out,
                "add {kind} {t} {} {{ type {}{value} ; }}",
                c.name(),
                c.key_type(family)
            );
        }
    }
    let addr_type = Coll::ClusterIps.key_type(family);
    for name in &touched.affinity {
        if let (Some(timeout), None) = (new.affinity.get(name), old.affinity.get(name)) {
            let _ = writeln!(
                out,
                "add set {t} {name} {{ type {addr_type} ; flags dynamic,timeout ; timeout {timeout}s ; }}"
            );
        }
    }
    let changed: Vec<(&String, &Chain)> = touched
        .chains
        .iter()
        .filter_map(|n| new.chains.get_key_value(n))
        .filter(|(n, c)| old.chains.get(*n).is_none_or(|o| o.hash != c.hash))
        .collect();
    for (name, _) in &changed {
        match hook_of(name) {
            Some(hook) => {
                let _ = writeln!(out, "add chain {t} {name} {{ {hook} ; }}");
            }
            None => {
                let _ = writeln!(out, "add chain {t} {name}");
            }
        }
    }
    for (name, chain) in &changed {
        let _ = writeln!(out, "flush chain {t} {name}");
        for (i, rule) in chain.rules.iter().enumerate() {
            if i == 0 {
                let _ = writeln!(
                    out,
                    "add rule {t} {name} {rule} comment \"{HASH_COMMENT}{}\"",
                    chain.hash
                );
            } else {
                let _ = writeln!(out, "add rule {t} {name} {rule}");
            }
        }
    }
    let mut deletes: BTreeMap<Coll, Vec<&str>> = BTreeMap::new();
    let mut adds: BTreeMap<Coll, Vec<String>> = BTreeMap::new();
    for key in &touched.elements {
        let (before, after) = (old.elements.get(key), new.elements.get(key));
        if before == after {
            continue;
        }
        let (coll, text) = key;
        if before.is_some() {
            deletes.entry(*coll).or_default().push(text);
        }
        if let Some(value) = after {
            let item = if coll.is_map() {
                format!("{text} : {value}")
            } else {
                text.clone()
            };
            adds.entry(*coll).or_default().push(item);
        }
    }
    for (coll, keys) in deletes {
        let _ = writeln!(
            out,
            "delete element {t} {} {{ {} }}",
            coll.name(),
            keys.join(", ")
        );
    }
    for (coll, items) in adds {
        let _ = writeln!(
            out,
            "add element {t} {} {{ {} }}",
            coll.name(),
            items.join(", ")
        );
    }
    let gone: Vec<&String> = touched
        .chains
        .iter()
        .filter(|n| old.chains.contains_key(*n) && !new.chains.contains_key(*n) && !is_skeleton(n))
        .collect();
    // Flushing first drops every jump between the chains being deleted.
    for name in &gone {
        let _ = writeln!(out, "flush chain {t} {name}");
    }
    for name in &gone {
        let _ = writeln!(out, "delete chain {t} {name}");
    }
    for name in &touched.affinity {
        if old.affinity.contains_key(name) && !new.affinity.contains_key(name) {
            let _ = writeln!(out, "delete set {t} {name}");
        }
    }
    out
}

/// Make `model` equal `target` on the names in `touched` (after a successful apply).
pub fn copy_touched(model: &mut TableModel, target: &TableModel, touched: &Touched) {
    for name in &touched.chains {
        match target.chains.get(name) {
            Some(c) => model.chains.insert(name.clone(), c.clone()),
            None => model.chains.remove(name),
        };
    }
    for key in &touched.elements {
        match target.elements.get(key) {
            Some(v) => model.elements.insert(key.clone(), v.clone()),
            None => model.elements.remove(key),
        };
    }
    for name in &touched.affinity {
        match target.affinity.get(name) {
            Some(v) => model.affinity.insert(name.clone(), *v),
            None => model.affinity.remove(name),
        };
    }
}
