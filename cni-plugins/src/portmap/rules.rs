//! The nftables rules one attachment needs, as nft statements plus the comments that
//! identify them (DEL, CHECK and GC find rules by comment, never by re-parsing bodies).

use std::net::{IpAddr, Ipv4Addr};

use sha2::{Digest, Sha256};

use super::config::{ContainerAddrs, PortMapping};
use crate::error::CniError;
use crate::types::IpNet;

/// Prefix of every per-attachment chain.
pub const CHAIN_PREFIX: &str = "hp-";

/// The chain-name prefix of one network: GC only touches its own network's chains when
/// several networks share a table.
pub fn network_prefix(network: &str) -> String {
    format!(
        "{CHAIN_PREFIX}{}-",
        hex(&Sha256::digest(network.as_bytes())[..4])
    )
}

/// The attachment's chain: `hp-<network hash>-<hash of container ID and ifname>`; only
/// hashes reach the script, so IDs need no quoting.
pub fn chain_name(network: &str, container_id: &str, ifname: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(container_id.as_bytes());
    hash.update([0]);
    hash.update(ifname.as_bytes());
    format!("{}{}", network_prefix(network), hex(&hash.finalize()[..8]))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One rule: its nft statement and its identifying comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Matches and verdict, as written after `add rule <table> <chain>`.
    pub body: String,
    /// The rule's comment.
    pub comment: String,
}

/// Everything ADD installs for one attachment.
#[derive(Debug, Clone)]
pub struct AttachmentRules {
    /// The attachment's chain.
    pub chain: String,
    /// DNAT rules, in the attachment's chain.
    pub dnat: Vec<Rule>,
    /// Masquerade rules for hairpin/localhost traffic, in the postrouting chain.
    pub masquerade: Vec<Rule>,
    /// The IPv4 container address that 127.0.0.1 is forwarded to, if any.
    pub localhost_target: Option<Ipv4Addr>,
}

impl AttachmentRules {
    /// The comment of the jump rules from the base chains.
    pub fn jump_comment(&self) -> &str {
        &self.chain
    }

    /// Comments every rule of this attachment outside its own chain carries (and only
    /// they): its name, alone or followed by a space.
    pub fn owns_comment(chain: &str, comment: &str) -> bool {
        comment
            .strip_prefix(chain)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
    }
}

/// Build an attachment's rules; code 7 when a mapping has no container address to go to.
pub fn attachment_rules(
    chain: &str,
    mappings: &[PortMapping],
    addrs: &ContainerAddrs,
    snat: bool,
) -> Result<AttachmentRules, CniError> {
    let mut rules = AttachmentRules {
        chain: chain.to_owned(),
        dnat: Vec::new(),
        masquerade: Vec::new(),
        localhost_target: None,
    };
    for (i, mapping) in mappings.iter().enumerate() {
        for (dest, host) in targets(i, mapping, addrs)? {
            let dnat = dnat_rule(mapping, dest, host, snat);
            push_unique(&mut rules.dnat, dnat);
            if snat {
                push_unique(&mut rules.masquerade, masquerade_rule(chain, mapping, dest));
                match (dest.addr, host) {
                    (IpAddr::V4(v4), None) => rules.localhost_target = Some(v4),
                    (IpAddr::V4(v4), Some(h)) if h.is_loopback() => {
                        rules.localhost_target = Some(v4)
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(rules)
}

fn push_unique(rules: &mut Vec<Rule>, rule: Rule) {
    if !rules.iter().any(|r| r.comment == rule.comment) {
        rules.push(rule);
    }
}

/// The container addresses a mapping forwards to, each with the node address it matches
/// (`None`: every local address of that family).
fn targets(
    i: usize,
    mapping: &PortMapping,
    addrs: &ContainerAddrs,
) -> Result<Vec<(IpNet, Option<IpAddr>)>, CniError> {
    match mapping.host_ip {
        None => {
            let found: Vec<_> = [addrs.v4, addrs.v6]
                .into_iter()
                .flatten()
                .map(|dest| (dest, None))
                .collect();
            if found.is_empty() {
                return Err(CniError::invalid_config(
                    "prevResult has no IP address to forward runtimeConfig.portMappings to",
                ));
            }
            Ok(found)
        }
        Some(host) => {
            let dest = addrs.of_family(host.is_ipv4()).ok_or_else(|| {
                CniError::invalid_config(format!(
                    "runtimeConfig.portMappings[{i}].hostIP: {host} has no container address \
                     of its family in prevResult"
                ))
            })?;
            Ok(vec![(dest, Some(host).filter(|h| !h.is_unspecified()))])
        }
    }
}

fn family(addr: IpAddr) -> &'static str {
    if addr.is_ipv4() {
        "ip"
    } else {
        "ip6"
    }
}

/// `addr:port`, with brackets for IPv6 (as nft and humans write it).
fn socket(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

fn dnat_rule(mapping: &PortMapping, dest: IpNet, host: Option<IpAddr>, snat: bool) -> Rule {
    let fam = family(dest.addr);
    let daddr = match (host, dest.addr.is_ipv4()) {
        (Some(host), _) => format!("{fam} daddr {host}"),
        // Loopback sources only work with route_localnet plus masquerade (snat).
        (None, true) if snat => "meta nfproto ipv4".to_owned(),
        (None, true) => "ip daddr != 127.0.0.0/8".to_owned(),
        // ::1 can never leave the host, so DNAT would only break local listeners.
        (None, false) => "ip6 daddr != ::1".to_owned(),
    };
    let (proto, port) = (mapping.protocol, mapping.host_port);
    let to = socket(dest.addr, mapping.container_port);
    let matched = match host {
        Some(host) => socket(host, port),
        None => format!("*:{port}"),
    };
    Rule {
        body: format!("{daddr} meta l4proto {proto} th dport {port} dnat {fam} to {to}"),
        comment: format!("{proto} {matched}>{to}"),
    }
}

/// Masquerade DNATed connections from the container's subnet (hairpin, and neighbours
/// whose replies would otherwise bypass the host on the bridge) and from 127.0.0.0/8.
fn masquerade_rule(chain: &str, mapping: &PortMapping, dest: IpNet) -> Rule {
    let fam = family(dest.addr);
    let subnet = format!("{}/{}", dest.network(), dest.prefix);
    let loopback: IpAddr = Ipv4Addr::LOCALHOST.into();
    let sources = if dest.addr.is_ipv4() && !(dest.prefix <= 8 && dest.contains(loopback)) {
        format!("{{ {subnet}, 127.0.0.0/8 }}")
    } else {
        subnet
    };
    let (proto, to) = (mapping.protocol, socket(dest.addr, mapping.container_port));
    Rule {
        body: format!(
            "{fam} saddr {sources} {fam} daddr {} meta l4proto {proto} th dport {} \
             ct original proto-dst {} masquerade",
            dest.addr, mapping.container_port, mapping.host_port
        ),
        comment: format!("{chain} masq {proto} {}>{to}", mapping.host_port),
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::Protocol;
    use super::*;

    fn mapping(host_ip: Option<&str>) -> PortMapping {
        PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: Protocol::Tcp,
            host_ip: host_ip.map(|h| h.parse().unwrap()),
        }
    }

    fn addrs() -> ContainerAddrs {
        ContainerAddrs {
            v4: Some("10.1.2.3/24".parse().unwrap()),
            v6: Some("fd00::3/64".parse().unwrap()),
        }
    }

    #[test]
    fn names_are_stable_short_and_per_network() {
        let a = chain_name("net", "ctr", "eth0");
        assert_eq!(a, chain_name("net", "ctr", "eth0"));
        assert_ne!(a, chain_name("net", "ctr", "eth1"));
        assert_ne!(a, chain_name("other", "ctr", "eth0"));
        assert!(a.starts_with(&network_prefix("net")) && a.len() == 3 + 8 + 1 + 16);
        assert!(AttachmentRules::owns_comment(&a, &format!("{a} masq x")));
        assert!(!AttachmentRules::owns_comment(&a, &format!("{a}0")));
    }

    #[test]
    fn wildcard_mappings_cover_both_families_and_dedupe() {
        let m = mapping(None);
        let rules = attachment_rules("hp-c", &[m.clone(), m], &addrs(), true).unwrap();
        let bodies: Vec<_> = rules.dnat.iter().map(|r| r.body.as_str()).collect();
        assert_eq!(
            bodies,
            [
                "meta nfproto ipv4 meta l4proto tcp th dport 8080 dnat ip to 10.1.2.3:80",
                "ip6 daddr != ::1 meta l4proto tcp th dport 8080 dnat ip6 to [fd00::3]:80",
            ]
        );
        assert_eq!(rules.dnat[1].comment, "tcp *:8080>[fd00::3]:80");
        assert_eq!(rules.masquerade.len(), 2);
        assert!(rules.masquerade[0]
            .body
            .starts_with("ip saddr { 10.1.2.0/24, 127.0.0.0/8 } ip daddr 10.1.2.3"));
        assert_eq!(
            rules.masquerade[1].comment,
            "hp-c masq tcp 8080>[fd00::3]:80"
        );
        assert_eq!(rules.localhost_target, Some(Ipv4Addr::new(10, 1, 2, 3)));
    }

    #[test]
    fn host_ips_and_snat_shape_the_rules() {
        let rules = attachment_rules("c", &[mapping(Some("192.0.2.1"))], &addrs(), true).unwrap();
        assert_eq!(rules.dnat.len(), 1);
        assert!(rules.dnat[0].body.starts_with("ip daddr 192.0.2.1 "));
        assert_eq!(rules.localhost_target, None);
        let rules = attachment_rules("c", &[mapping(None)], &addrs(), false).unwrap();
        assert!(rules.dnat[0].body.starts_with("ip daddr != 127.0.0.0/8 "));
        assert!(rules.masquerade.is_empty() && rules.localhost_target.is_none());
        let v4only = ContainerAddrs {
            v6: None,
            ..addrs()
        };
        let err = attachment_rules("c", &[mapping(Some("::"))], &v4only, true).unwrap_err();
        assert!(err.msg.contains("hostIP"), "{err}");
        let none = ContainerAddrs::default();
        assert_eq!(
            attachment_rules("c", &[mapping(None)], &none, true)
                .unwrap_err()
                .code,
            7
        );
    }
}
