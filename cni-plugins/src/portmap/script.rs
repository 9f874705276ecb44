//! nft scripts: each ADD, DEL or GC is one script applied as a single atomic transaction,
//! so a failure leaves the previous rules untouched.

use std::collections::BTreeSet;
use std::fmt::Write;

use super::nft::{RuleState, TableState};
use super::rules::{AttachmentRules, Rule, CHAIN_PREFIX};

/// The table's base chains, hooked where DNAT and masquerade happen.
const BASE_CHAINS: &[(&str, &str)] = &[
    (
        "prerouting",
        "type nat hook prerouting priority -100; policy accept;",
    ),
    // nft 1.0 rejects the "dstnat" keyword for the output hook, hence -100.
    (
        "output",
        "type nat hook output priority -100; policy accept;",
    ),
    (
        "postrouting",
        "type nat hook postrouting priority 100; policy accept;",
    ),
];

/// Drops packets from outside addressed to 127.0.0.0/8: route_localnet (needed for
/// localhost host ports) would otherwise let neighbours reach the node's loopback services.
const GUARD_CHAIN: &str = "localnet-guard";

/// Declare the table and its base chains (idempotent: `add` of an existing object is a
/// no-op); STATUS checks this script.
pub fn base(table: &str) -> String {
    let mut s = format!("add table inet {table}\n");
    for (chain, spec) in BASE_CHAINS {
        let _ = writeln!(s, "add chain inet {table} {chain} {{ {spec} }}");
    }
    s
}

/// Install an attachment, replacing whatever an earlier ADD of it left (no duplicates).
pub fn add(table: &str, state: Option<&TableState>, rules: &AttachmentRules) -> String {
    let mut s = base(table);
    if rules.localhost_target.is_some() {
        let _ = writeln!(
            s,
            "add chain inet {table} {GUARD_CHAIN} {{ type filter hook prerouting priority -300; \
             policy accept; }}\nflush chain inet {table} {GUARD_CHAIN}\n\
             add rule inet {table} {GUARD_CHAIN} iifname != \"lo\" ip daddr 127.0.0.0/8 drop"
        );
    }
    let chain = &rules.chain;
    if let Some(state) = state {
        delete_references(&mut s, table, state, chain);
    }
    let _ = writeln!(
        s,
        "add chain inet {table} {chain}\nflush chain inet {table} {chain}"
    );
    for rule in &rules.dnat {
        add_rule(&mut s, table, chain, rule);
    }
    let jump = Rule {
        body: format!("fib daddr type local jump {chain}"),
        comment: rules.jump_comment().to_owned(),
    };
    add_rule(&mut s, table, "prerouting", &jump);
    add_rule(&mut s, table, "output", &jump);
    for rule in &rules.masquerade {
        add_rule(&mut s, table, "postrouting", rule);
    }
    s
}

/// Remove attachments' chains and the rules referring to them; the whole table once no
/// attachment is left. `None` when there is nothing to remove.
pub fn remove(table: &str, state: &TableState, chains: &BTreeSet<String>) -> Option<String> {
    let present: Vec<_> = state
        .chains
        .iter()
        .filter(|c| chains.contains(*c))
        .collect();
    let referred = state
        .rules
        .iter()
        .any(|r| chains.iter().any(|c| refers_to(r, c)));
    if present.is_empty() && !referred {
        return None;
    }
    let others_left = state
        .chains
        .iter()
        .any(|c| c.starts_with(CHAIN_PREFIX) && !chains.contains(c));
    if !others_left {
        return Some(format!("delete table inet {table}\n"));
    }
    let mut s = String::new();
    for chain in chains {
        delete_references(&mut s, table, state, chain);
    }
    for chain in present {
        let _ = writeln!(s, "delete chain inet {table} {chain}");
    }
    Some(s)
}

/// Attachment chains in `state` whose names start with `prefix`.
pub fn attachment_chains(state: &TableState, prefix: &str) -> BTreeSet<String> {
    state
        .chains
        .iter()
        .filter(|c| c.starts_with(prefix))
        .cloned()
        .collect()
}

/// Whether a rule outside `chain` belongs to it (by jump target or comment).
fn refers_to(rule: &RuleState, chain: &str) -> bool {
    rule.chain != chain
        && (rule.target.as_deref() == Some(chain)
            || rule
                .comment
                .as_deref()
                .is_some_and(|c| AttachmentRules::owns_comment(chain, c)))
}

fn delete_references(s: &mut String, table: &str, state: &TableState, chain: &str) {
    for rule in state.rules.iter().filter(|r| refers_to(r, chain)) {
        let _ = writeln!(
            s,
            "delete rule inet {table} {} handle {}",
            rule.chain, rule.handle
        );
    }
}

fn add_rule(s: &mut String, table: &str, chain: &str, rule: &Rule) {
    // Comments are built from validated numbers, addresses and hashes: no quotes inside.
    let _ = writeln!(
        s,
        "add rule inet {table} {chain} {} comment \"{}\"",
        rule.body, rule.comment
    );
}

#[cfg(test)]
mod tests {
    use super::super::nft::RuleState;
    use super::*;

    fn rule(chain: &str, handle: u64, comment: &str, target: Option<&str>) -> RuleState {
        RuleState {
            chain: chain.to_owned(),
            handle,
            comment: Some(comment.to_owned()),
            target: target.map(str::to_owned),
        }
    }

    fn state() -> TableState {
        TableState {
            chains: ["prerouting", "output", "postrouting", "hp-n-a", "hp-n-b"]
                .map(str::to_owned)
                .to_vec(),
            rules: vec![
                rule("prerouting", 5, "hp-n-a", Some("hp-n-a")),
                rule("prerouting", 6, "hp-n-b", Some("hp-n-b")),
                rule("postrouting", 7, "hp-n-a masq tcp 1>10.0.0.1:2", None),
                rule("hp-n-a", 8, "tcp *:1>10.0.0.1:2", None),
            ],
        }
    }

    fn attachment(chain: &str) -> AttachmentRules {
        AttachmentRules {
            chain: chain.to_owned(),
            dnat: vec![Rule {
                body: "meta nfproto ipv4 meta l4proto tcp th dport 1 dnat ip to 10.0.0.1:2".into(),
                comment: "tcp *:1>10.0.0.1:2".into(),
            }],
            masquerade: Vec::new(),
            localhost_target: None,
        }
    }

    #[test]
    fn re_adding_replaces_the_attachments_rules() {
        let script = add("t", Some(&state()), &attachment("hp-n-a"));
        for line in [
            "delete rule inet t prerouting handle 5",
            "delete rule inet t postrouting handle 7",
            "flush chain inet t hp-n-a",
            "add rule inet t output fib daddr type local jump hp-n-a comment \"hp-n-a\"",
        ] {
            assert!(script.lines().any(|l| l == line), "{line} not in\n{script}");
        }
        assert!(!script.contains("handle 6") && !script.contains(GUARD_CHAIN));
        let fresh = add("t", None, &attachment("hp-n-c"));
        assert!(fresh.starts_with(&base("t")) && !fresh.contains("delete"));
    }

    #[test]
    fn removal_drops_references_then_chains_or_the_whole_table() {
        let one = remove("t", &state(), &BTreeSet::from(["hp-n-a".to_owned()])).unwrap();
        assert_eq!(
            one,
            "delete rule inet t prerouting handle 5\ndelete rule inet t postrouting handle 7\n\
             delete chain inet t hp-n-a\n"
        );
        let all = BTreeSet::from(["hp-n-a".to_owned(), "hp-n-b".to_owned()]);
        assert_eq!(
            remove("t", &state(), &all).unwrap(),
            "delete table inet t\n"
        );
        assert_eq!(
            remove("t", &state(), &BTreeSet::from(["hp-n-z".to_owned()])),
            None
        );
        assert_eq!(attachment_chains(&state(), "hp-n-").len(), 2);
    }
}
