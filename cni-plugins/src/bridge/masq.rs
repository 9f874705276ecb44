//! Masquerading of pod traffic that leaves its subnets, in Capstan's own nftables table: one
//! postrouting chain per network holding one rule per address family, commented with the
//! network name. A marker file under /run (cleared by a reboot, like the ruleset) lists the
//! subnets installed, so ADDs after the first run no `nft` at all; installing flushes and
//! refills the chain in one transaction, so a rule is never duplicated.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rustix::fs::{flock, FlockOperation};
use sha2::{Digest, Sha256};

use super::code;
use crate::error::CniError;
use crate::netlink::Netlink;
use crate::types::IpNet;

/// The nftables table (family `inet`) holding the masquerade chains.
pub const TABLE: &str = "capstan-bridge";

/// Where markers and the lock live.
pub const STATE_DIR: &str = "/run/capstan-cni/bridge";

/// The chain of `network` in [`TABLE`].
pub fn chain_name(network: &str) -> String {
    let digest = Sha256::digest(network.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("masq-{hex}")
}

/// An flock on the state directory: ADDs hold it shared from attaching their port until the
/// rule is in place; a last DEL takes it exclusively to remove a chain, so it never removes
/// one that a concurrent ADD relies on.
pub struct Lock(File);

impl Lock {
    /// Take the lock shared.
    pub fn shared() -> Result<Self, CniError> {
        let lock = Self::open()?;
        lock.set(FlockOperation::LockShared)?;
        Ok(lock)
    }

    fn exclusive() -> Result<Self, CniError> {
        let lock = Self::open()?;
        lock.set(FlockOperation::LockExclusive)?;
        Ok(lock)
    }

    fn open() -> Result<Self, CniError> {
        let path = Path::new(STATE_DIR).join("lock");
        fs::create_dir_all(STATE_DIR)
            .and_then(|()| File::options().create(true).append(true).open(&path))
            .map(Self)
            .map_err(|e| state_error(&path, e))
    }

    fn set(&self, op: FlockOperation) -> Result<(), CniError> {
        flock(&self.0, op).map_err(|e| state_error(&Path::new(STATE_DIR).join("lock"), e.into()))
    }
}

/// Make sure traffic from `subnets` of `network` is masqueraded; `lock` is held shared and
/// upgraded only when `nft` must run.
pub fn ensure(lock: &Lock, network: &str, subnets: &[IpNet]) -> Result<(), CniError> {
    let marker = marker_path(network);
    if covers(&read_marker(&marker), subnets) {
        return Ok(());
    }
    lock.set(FlockOperation::LockExclusive)?;
    let mut known = read_marker(&marker);
    if covers(&known, subnets) {
        return Ok(());
    }
    for subnet in subnets {
        if !known.contains(subnet) {
            known.push(*subnet);
        }
    }
    nft(&install_script(network, &known))?;
    write_marker(&marker, &known)
}

/// Remove `network`'s chain when `bridge` has no ports left (after the last DEL).
pub fn release_if_unused(nl: &Netlink, network: &str, bridge: &str) -> Result<(), CniError> {
    let marker = marker_path(network);
    if !marker.exists() {
        return Ok(());
    }
    let _lock = Lock::exclusive()?;
    if !marker.exists() {
        return Ok(());
    }
    if let Some(bridge) = nl.link_by_name(bridge)? {
        if !nl.ports_of(bridge.index)?.is_empty() {
            return Ok(());
        }
    }
    remove_locked(network, &marker)
}

/// Remove `network`'s chain if this plugin installed it (GC with no attachment left).
pub fn remove(network: &str) -> Result<(), CniError> {
    let marker = marker_path(network);
    if !marker.exists() {
        return Ok(());
    }
    let _lock = Lock::exclusive()?;
    if marker.exists() {
        remove_locked(network, &marker)?;
    }
    Ok(())
}

fn remove_locked(network: &str, marker: &Path) -> Result<(), CniError> {
    nft(&remove_script(network))?;
    match fs::remove_file(marker) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(state_error(marker, e)),
        _ => Ok(()),
    }
}

/// The transaction (re)installing `network`'s chain with rules for `subnets`.
pub fn install_script(network: &str, subnets: &[IpNet]) -> String {
    let chain = chain_name(network);
    let comment = comment(network);
    let mut script = format!(
        "add table inet {TABLE}\n\
         add chain inet {TABLE} {chain} {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
         flush chain inet {TABLE} {chain}\n"
    );
    for (v6, proto, multicast) in [(false, "ip", "224.0.0.0/4"), (true, "ip6", "ff00::/8")] {
        let nets: Vec<String> = outermost(subnets, v6)
            .iter()
            .map(ToString::to_string)
            .collect();
        if nets.is_empty() {
            continue;
        }
        let sources = nets.join(", ");
        script.push_str(&format!(
            "add rule inet {TABLE} {chain} {proto} saddr {{ {sources} }} \
             {proto} daddr != {{ {sources}, {multicast} }} masquerade comment \"{comment}\"\n"
        ));
    }
    script
}

/// The transaction removing `network`'s chain, whether or not it exists.
fn remove_script(network: &str) -> String {
    let chain = chain_name(network);
    format!(
        "add table inet {TABLE}\n\
         add chain inet {TABLE} {chain} {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
         flush chain inet {TABLE} {chain}\n\
         delete chain inet {TABLE} {chain}\n"
    )
}

/// The rules' comment: the network name, restricted to characters nft quotes safely.
pub fn comment(network: &str) -> String {
    let name: String = network
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    format!("capstan-bridge {name}")
}

/// Subnets of one family not inside another listed subnet (nft rejects overlapping
/// intervals in one set).
fn outermost(subnets: &[IpNet], v6: bool) -> Vec<IpNet> {
    let family: Vec<IpNet> = subnets
        .iter()
        .copied()
        .filter(|s| s.addr.is_ipv6() == v6)
        .collect();
    family
        .iter()
        .enumerate()
        .filter(|(i, s)| {
            !family.iter().enumerate().any(|(j, o)| {
                j != *i
                    && o.contains(s.addr)
                    && (o.prefix < s.prefix || (o.prefix == s.prefix && j < *i))
            })
        })
        .map(|(_, s)| *s)
        .collect()
}

fn covers(known: &[IpNet], subnets: &[IpNet]) -> bool {
    subnets.iter().all(|s| known.contains(s))
}

fn marker_path(network: &str) -> PathBuf {
    Path::new(STATE_DIR).join(chain_name(network))
}

fn read_marker(path: &Path) -> Vec<IpNet> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

fn write_marker(path: &Path, subnets: &[IpNet]) -> Result<(), CniError> {
    let text: String = subnets.iter().map(|s| format!("{s}\n")).collect();
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text)
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(|e| state_error(path, e))
}

/// Run one `nft -f -` transaction.
fn nft(script: &str) -> Result<(), CniError> {
    let fail = |msg: &str, details: String| {
        CniError::new(code::MASQUERADE, format!("{msg} (nft)"), details)
    };
    let mut child = Command::new(nft_path())
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail("cannot run nft", e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| fail("cannot feed nft", e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| fail("waiting for nft", e.to_string()))?;
    if !out.status.success() {
        return Err(fail(
            "updating the masquerade rules failed",
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    Ok(())
}

/// `nft` from PATH, else from the usual sbin directories (runtimes may pass a minimal PATH).
fn nft_path() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join("nft"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("nft"))
}

fn state_error(path: &Path, e: std::io::Error) -> CniError {
    CniError::new(
        code::MASQUERADE,
        format!("masquerade state {}", path.display()),
        e.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn scripts_hold_one_rule_per_family() {
        let script = install_script(
            "net \"1\"",
            &nets(&["10.1.0.0/24", "fd00::/64", "10.1.0.0/16"]),
        );
        let rules: Vec<&str> = script
            .lines()
            .filter(|l| l.starts_with("add rule"))
            .collect();
        assert_eq!(rules.len(), 2, "{script}");
        assert!(rules[0].contains("ip saddr { 10.1.0.0/16 }"), "{script}");
        assert!(
            rules[0].contains("!= { 10.1.0.0/16, 224.0.0.0/4 }"),
            "{script}"
        );
        assert!(rules[1].contains("ip6 saddr { fd00::/64 }"), "{script}");
        assert!(
            script.contains("comment \"capstan-bridge net__1_\""),
            "{script}"
        );
        assert!(
            script.contains("flush chain"),
            "refills instead of appending"
        );
        assert_eq!(chain_name("a"), chain_name("a"));
        assert_ne!(chain_name("a"), chain_name("b"));
    }

    #[test]
    fn duplicate_subnets_collapse() {
        assert_eq!(
            outermost(&nets(&["10.0.0.0/8", "10.0.0.0/8"]), false).len(),
            1
        );
        assert!(covers(
            &nets(&["10.0.0.0/8", "fd00::/64"]),
            &nets(&["fd00::/64"])
        ));
        assert!(!covers(&nets(&["10.0.0.0/8"]), &nets(&["10.1.0.0/16"])));
    }
}
