//! Service CIDRs and IP families: parsing, membership and address arithmetic (offsets within the range).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IP family as the Service API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpFamily {
    /// `IPv4`.
    V4,
    /// `IPv6`.
    V6,
}

impl IpFamily {
    /// `IPv4` or `IPv6`.
    pub fn as_str(self) -> &'static str {
        match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        }
    }

    /// The family an API string names.
    pub fn parse(s: &str) -> Option<IpFamily> {
        match s {
            "IPv4" => Some(IpFamily::V4),
            "IPv6" => Some(IpFamily::V6),
            _ => None,
        }
    }

    /// The family of an address.
    pub fn of(ip: IpAddr) -> IpFamily {
        match ip {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }
}

/// A CIDR block, e.g. `10.96.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

fn to_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_bits(family: IpFamily, bits: u128) -> Option<IpAddr> {
    match family {
        IpFamily::V4 => u32::try_from(bits)
            .ok()
            .map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        IpFamily::V6 => Some(IpAddr::V6(Ipv6Addr::from(bits))),
    }
}

impl Cidr {
    /// Parses `address/prefix`; the address is masked to the network.
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = text.split_once('/')?;
        let addr: IpAddr = addr.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        let width = Self::width(IpFamily::of(addr));
        if prefix > width {
            return None;
        }
        let host_bits = u32::from(width - prefix);
        let mask = if host_bits >= 128 {
            0
        } else {
            !0u128 << host_bits
        };
        let network = from_bits(IpFamily::of(addr), to_bits(addr) & mask)?;
        Some(Cidr { network, prefix })
    }

    fn width(family: IpFamily) -> u8 {
        match family {
            IpFamily::V4 => 32,
            IpFamily::V6 => 128,
        }
    }

    /// The family of the block.
    pub fn family(&self) -> IpFamily {
        IpFamily::of(self.network)
    }

    /// How many addresses the block spans (saturating for huge IPv6 blocks).
    pub fn size(&self) -> u128 {
        let host_bits = u32::from(Self::width(self.family()) - self.prefix);
        1u128.checked_shl(host_bits).unwrap_or(u128::MAX)
    }

    /// Whether `ip` lies in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.offset(ip).is_some()
    }

    /// The offset of `ip` from the network address, if inside.
    pub fn offset(&self, ip: IpAddr) -> Option<u128> {
        if IpFamily::of(ip) != self.family() {
            return None;
        }
        let delta = to_bits(ip).checked_sub(to_bits(self.network))?;
        (delta < self.size()).then_some(delta)
    }

    /// The address `offset` after the network address, if inside.
    pub fn nth(&self, offset: u128) -> Option<IpAddr> {
        if offset >= self.size() {
            return None;
        }
        from_bits(self.family(), to_bits(self.network) + offset)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_masks_and_indexes_both_families() {
        let v4 = Cidr::parse("10.96.3.7/16").expect("v4");
        assert_eq!(v4.to_string(), "10.96.0.0/16");
        assert_eq!(v4.size(), 65_536);
        assert_eq!(v4.nth(257), "10.96.1.1".parse().ok());
        assert_eq!(v4.offset("10.96.1.1".parse().expect("ip")), Some(257));
        assert!(!v4.contains("10.97.0.1".parse().expect("ip")));
        assert!(!v4.contains("fd00::1".parse().expect("ip")));
        assert_eq!(v4.nth(65_536), None);
        let v6 = Cidr::parse("fd00:10:96::/112").expect("v6");
        assert_eq!(v6.family(), IpFamily::V6);
        assert_eq!(v6.nth(10), "fd00:10:96::a".parse().ok());
        assert!(Cidr::parse("10.0.0.0/33").is_none() && Cidr::parse("nope/8").is_none());
        assert_eq!(Cidr::parse("::/0").map(|c| c.size()), Some(u128::MAX));
    }
}
