//! The node-local set-up (NodeLocal DNSCache's): the listen addresses on a dedicated
//! interface, and NOTRACK rules so DNS to and from them bypasses conntrack (no conntrack
//! table pressure, no DNAT races for UDP).
//!
//! The interface is an empty bridge rather than a `dummy` link: bridges exist on every
//! kernel that runs containers (some, like these CI machines, lack the dummy module), and a
//! bridge without ports is just a place to hold local addresses.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::{Handle, LinkBridge, LinkUnspec};

use crate::{DnsConfig, DnsError};

const EEXIST: i32 = 17;
const ENODEV: i32 = 19;
/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;

/// The node-local address + NOTRACK rules.
#[derive(Debug)]
pub struct NodeLocal;

impl NodeLocal {
    /// Sets up the interface, its addresses and the NOTRACK table (idempotent: adopts what
    /// exists and replaces the table's rules in one transaction).
    pub fn install(config: &DnsConfig) -> Result<Self, DnsError> {
        let (interface, table) = validated_names(config)?;
        let addresses = addresses(config);
        let to_add = addresses.clone();
        on_netlink_thread(|handle| async move {
            let index = ensure_bridge(&handle, interface).await?;
            for ip in to_add {
                ensure_address(&handle, index, ip).await?;
            }
            Ok(())
        })?;
        nft(
            &notrack_ruleset(table, &addresses, config.port),
            "installing NOTRACK rules",
        )?;
        Ok(Self)
    }

    /// Removes the interface (and with it its addresses) and the NOTRACK table.
    pub fn remove(config: &DnsConfig) -> Result<(), DnsError> {
        let (interface, table) = validated_names(config)?;
        nft(&delete_table(table), "removing NOTRACK rules")?;
        on_netlink_thread(|handle| async move {
            let Some(link) = link_by_name(&handle, interface).await? else {
                return Ok(());
            };
            match handle.link().del(link.header.index).execute().await {
                Err(e) if errno(&e) != Some(ENODEV) => {
                    Err(netlink(format!("deleting interface {interface}"), &e))
                }
                _ => Ok(()),
            }
        })
    }
}

/// The addresses the interface holds.
fn addresses(config: &DnsConfig) -> Vec<IpAddr> {
    std::iter::once(config.local_address)
        .chain(config.serve_cluster_ip)
        .collect()
}

fn validated_names(config: &DnsConfig) -> Result<(&str, &str), DnsError> {
    let interface = config.interface_name.as_str();
    let interface_ok = !interface.is_empty()
        && interface.len() <= MAX_IFNAME
        && interface
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !interface_ok {
        return Err(DnsError::InvalidName {
            what: "interface name",
            value: interface.to_owned(),
        });
    }
    let table = config.nftables_table.as_str();
    let table_ok = !table.is_empty()
        && table.len() <= 64
        && table.starts_with(|c: char| c.is_ascii_alphabetic())
        && table
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !table_ok {
        return Err(DnsError::InvalidName {
            what: "nftables table",
            value: table.to_owned(),
        });
    }
    Ok((interface, table))
}

/// An nft script that (re)creates `table` with NOTRACK rules for DNS to and from `addresses`
/// on `port`: declaring then deleting the table first makes it idempotent and atomic.
pub fn notrack_ruleset(table: &str, addresses: &[IpAddr], port: u16) -> String {
    let mut incoming = String::new();
    let mut outgoing = String::new();
    for ip in addresses {
        let family = if ip.is_ipv4() { "ip" } else { "ip6" };
        for proto in ["udp", "tcp"] {
            // Queries arriving from pods, and answers leaving to them.
            incoming.push_str(&format!(
                "    {family} daddr {ip} {proto} dport {port} notrack\n"
            ));
            outgoing.push_str(&format!(
                "    {family} saddr {ip} {proto} sport {port} notrack\n"
            ));
            // Queries from host-network clients on this node.
            outgoing.push_str(&format!(
                "    {family} daddr {ip} {proto} dport {port} notrack\n"
            ));
        }
    }
    format!(
        "table inet {table}\ndelete table inet {table}\ntable inet {table} {{\n  \
         chain prerouting {{\n    type filter hook prerouting priority raw; policy accept;\n\
         {incoming}  }}\n  \
         chain output {{\n    type filter hook output priority raw; policy accept;\n\
         {outgoing}  }}\n}}\n"
    )
}

/// An nft script deleting `table` whether or not it exists.
fn delete_table(table: &str) -> String {
    format!("table inet {table}\ndelete table inet {table}\n")
}

fn nft(script: &str, what: &str) -> Result<(), DnsError> {
    let fail = |detail: String| DnsError::Nft {
        what: what.to_owned(),
        detail,
    };
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("running nft: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| fail(format!("writing to nft: {e}")))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| fail(format!("waiting for nft: {e}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(fail(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ))
    }
}

/// Runs netlink requests on a thread of their own with its own runtime, so that callers
/// may be inside (or outside) any tokio runtime.
fn on_netlink_thread<F, Fut>(work: F) -> Result<(), DnsError>
where
    F: FnOnce(Handle) -> Fut + Send,
    Fut: std::future::Future<Output = Result<(), DnsError>>,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let fail = |e: std::io::Error| netlink("opening a netlink socket".into(), &e);
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                    .map_err(fail)?;
                let (connection, handle, _) = {
                    let _entered = runtime.enter();
                    rtnetlink::new_connection().map_err(fail)?
                };
                runtime.spawn(connection);
                runtime.block_on(work(handle))
            })
            .join()
            .unwrap_or_else(|_| {
                Err(DnsError::Netlink {
                    what: "netlink thread".into(),
                    detail: "panicked".into(),
                })
            })
    })
}

async fn link_by_name(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, DnsError> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(netlink(format!("looking up interface {name}"), &e)),
    }
}

/// The bridge's index, creating it when missing; brought up either way.
async fn ensure_bridge(handle: &Handle, name: &str) -> Result<u32, DnsError> {
    if link_by_name(handle, name).await?.is_none() {
        match handle
            .link()
            .add(LinkBridge::new(name).build())
            .execute()
            .await
        {
            Err(e) if errno(&e) != Some(EEXIST) => {
                return Err(netlink(format!("creating bridge {name}"), &e));
            }
            _ => {}
        }
    }
    let index = link_by_name(handle, name)
        .await?
        .ok_or_else(|| DnsError::Netlink {
            what: format!("creating bridge {name}"),
            detail: "it vanished".into(),
        })?
        .header
        .index;
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|e| netlink(format!("bringing {name} up"), &e))?;
    Ok(index)
}

/// Adds `ip` as a host address (/32 or /128) to link `index`; present already is fine.
async fn ensure_address(handle: &Handle, index: u32, ip: IpAddr) -> Result<(), DnsError> {
    let prefix = if ip.is_ipv4() { 32 } else { 128 };
    let mut request = handle.address().add(index, ip, prefix);
    if ip.is_ipv6() {
        // Usable at once: duplicate address detection would keep it tentative.
        request
            .message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    match request.execute().await {
        Err(e) if errno(&e) != Some(EEXIST) => {
            Err(netlink(format!("adding {ip} to interface #{index}"), &e))
        }
        _ => Ok(()),
    }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| -c.get()),
        _ => None,
    }
}

fn netlink(what: String, detail: &dyn std::fmt::Display) -> DnsError {
    DnsError::Netlink {
        what,
        detail: detail.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_covers_both_protocols_and_directions() {
        let ips: Vec<IpAddr> = vec!["169.254.20.10".parse().unwrap(), "fd00::a".parse().unwrap()];
        let script = notrack_ruleset("capstan-dns", &ips, 53);
        assert!(script.starts_with("table inet capstan-dns\ndelete table inet capstan-dns\n"));
        for rule in [
            "ip daddr 169.254.20.10 udp dport 53 notrack",
            "ip daddr 169.254.20.10 tcp dport 53 notrack",
            "ip saddr 169.254.20.10 udp sport 53 notrack",
            "ip6 saddr fd00::a tcp sport 53 notrack",
        ] {
            assert!(script.contains(rule), "{rule} missing in\n{script}");
        }
        assert_eq!(script.matches("priority raw").count(), 2);
    }

    #[test]
    fn names_are_validated() {
        let bad_if = DnsConfig {
            interface_name: "a-name-that-is-too-long".into(),
            ..DnsConfig::default()
        };
        assert!(validated_names(&bad_if).is_err());
        let bad_table = DnsConfig {
            nftables_table: "x; flush ruleset".into(),
            ..DnsConfig::default()
        };
        assert!(validated_names(&bad_table).is_err());
        assert!(validated_names(&DnsConfig::default()).is_ok());
    }
}
