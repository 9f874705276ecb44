//! Address ranges and range sets: validation, host-local's defaults and the round-robin walk.

use std::fmt;
use std::net::IpAddr;

use serde::Deserialize;

use crate::error::CniError;
use crate::types::{from_bits, to_bits, IpNet};

/// A range as written in the configuration; kept as text so errors can name the bad field.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawRange {
    /// Subnet in CIDR form (required).
    #[serde(default)]
    pub subnet: Option<String>,
    /// First address handed out, inclusive.
    #[serde(default)]
    pub range_start: Option<String>,
    /// Last address handed out, inclusive.
    #[serde(default)]
    pub range_end: Option<String>,
    /// Gateway returned with addresses of this range.
    #[serde(default)]
    pub gateway: Option<String>,
}

impl RawRange {
    /// Whether any field is set (an empty string counts as unset, as in host-local).
    pub fn is_empty(&self) -> bool {
        [
            &self.subnet,
            &self.range_start,
            &self.range_end,
            &self.gateway,
        ]
        .iter()
        .all(|f| text(f).is_none())
    }
}

/// A validated range: addresses `start..=end` of `subnet`, handed out with `gateway`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The subnet (network address and prefix).
    pub subnet: IpNet,
    /// First address handed out.
    pub start: IpAddr,
    /// Last address handed out.
    pub end: IpAddr,
    /// Gateway (never handed out).
    pub gateway: IpAddr,
}

impl Range {
    /// Validate `raw` and fill in host-local's defaults; `field` names it in errors.
    pub fn from_raw(raw: &RawRange, field: &str) -> Result<Self, CniError> {
        let bad =
            |name: &str, msg: String| CniError::invalid_config(format!("{field}.{name}: {msg}"));
        let subnet_text = text(&raw.subnet)
            .ok_or_else(|| CniError::invalid_config(format!("{field}.subnet is required")))?;
        let subnet: IpNet = subnet_text.parse().map_err(|e| bad("subnet", e))?;
        if subnet.network() != subnet.addr {
            return Err(bad(
                "subnet",
                format!(
                    "{subnet} has host bits set (the network address is {}/{})",
                    subnet.network(),
                    subnet.prefix
                ),
            ));
        }
        // A /31 or /32 (/127, /128) has no address besides the network and the gateway.
        if subnet.prefix + 2 > subnet.max_prefix() {
            return Err(bad(
                "subnet",
                format!("{subnet} is too small to allocate from"),
            ));
        }
        let inside = |name: &str, value: &Option<String>| -> Result<Option<IpAddr>, CniError> {
            let Some(value) = text(value) else {
                return Ok(None);
            };
            let ip: IpAddr = value
                .parse()
                .map_err(|_| bad(name, format!("{value:?} is not an IP address")))?;
            if subnet.contains(ip) {
                Ok(Some(ip))
            } else {
                Err(bad(name, format!("{ip} is not in subnet {subnet}")))
            }
        };
        let gateway = inside("gateway", &raw.gateway)?;
        let start = inside("rangeStart", &raw.range_start)?;
        let end = inside("rangeEnd", &raw.range_end)?;
        if let (Some(s), Some(e)) = (start, end) {
            if to_bits(s) > to_bits(e) {
                return Err(bad("rangeStart", format!("{s} is after rangeEnd {e}")));
            }
        }
        // The network address and the IPv4 broadcast address are never handed out, even
        // when an explicit start or end includes them.
        let first = to_bits(subnet.network()) + 1;
        let last = to_bits(subnet.last()) - u128::from(subnet.addr.is_ipv4());
        let start_bits = start.map_or(first, to_bits).max(first);
        let end_bits = end.map_or(last, to_bits).min(last);
        if start_bits > end_bits {
            return Err(bad(
                "rangeStart",
                format!("the range holds no usable address of {subnet}"),
            ));
        }
        Ok(Self {
            subnet,
            start: from_bits(subnet.addr, start_bits),
            end: from_bits(subnet.addr, end_bits),
            gateway: gateway.unwrap_or(from_bits(subnet.addr, first)),
        })
    }

    /// Whether `ip` lies within `start..=end`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.start.is_ipv4()
            && (to_bits(self.start)..=to_bits(self.end)).contains(&to_bits(ip))
    }

    /// Whether the two ranges share an address.
    pub fn overlaps(&self, other: &Range) -> bool {
        self.start.is_ipv4() == other.start.is_ipv4()
            && to_bits(self.start) <= to_bits(other.end)
            && to_bits(other.start) <= to_bits(self.end)
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// A range set: one address per attachment comes from it, its ranges tried in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet {
    /// The ranges, all of one family and disjoint.
    pub ranges: Vec<Range>,
}

impl RangeSet {
    /// Validate a set (non-empty, one family, no overlaps); `field` names it in errors.
    pub fn from_raw(raws: &[RawRange], field: &str) -> Result<Self, CniError> {
        if raws.is_empty() {
            return Err(CniError::invalid_config(format!(
                "{field} is an empty range set"
            )));
        }
        let ranges = raws
            .iter()
            .enumerate()
            .map(|(i, raw)| Range::from_raw(raw, &format!("{field}[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, a) in ranges.iter().enumerate() {
            for b in &ranges[i + 1..] {
                if a.start.is_ipv4() != b.start.is_ipv4() {
                    return Err(CniError::invalid_config(format!(
                        "{field} mixes address families ({} and {})",
                        a.subnet, b.subnet
                    )));
                }
                if a.overlaps(b) {
                    return Err(CniError::invalid_config(format!(
                        "{field}: ranges {a} and {b} overlap"
                    )));
                }
            }
        }
        Ok(Self { ranges })
    }

    /// The range holding `ip` within its start..end bounds.
    pub fn range_for(&self, ip: IpAddr) -> Option<&Range> {
        self.ranges.iter().find(|r| r.contains(ip))
    }

    /// Whether any range of the two sets overlap.
    pub fn overlaps(&self, other: &RangeSet) -> bool {
        self.ranges
            .iter()
            .any(|a| other.ranges.iter().any(|b| a.overlaps(b)))
    }

    /// Every candidate address once, in host-local's round-robin order: from the address
    /// after `last` (when it is in the set, else from the first range's start), wrapping
    /// through the ranges and skipping gateways.
    pub fn walk(&self, last: Option<IpAddr>) -> Walk<'_> {
        let first = last
            .and_then(|ip| {
                let i = self.ranges.iter().position(|r| r.contains(ip))?;
                Some(self.successor((i, to_bits(ip))))
            })
            .or_else(|| self.ranges.first().map(|r| (0, to_bits(r.start))));
        Walk {
            set: self,
            next: first,
            first,
        }
    }

    fn successor(&self, (i, bits): (usize, u128)) -> (usize, u128) {
        match self.ranges.get(i) {
            Some(r) if bits < to_bits(r.end) => (i, bits + 1),
            _ => {
                let j = (i + 1) % self.ranges.len().max(1);
                (j, self.ranges.get(j).map_or(0, |r| to_bits(r.start)))
            }
        }
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Iterator of [`RangeSet::walk`]: candidate addresses with their range.
#[derive(Debug)]
pub struct Walk<'a> {
    set: &'a RangeSet,
    next: Option<(usize, u128)>,
    first: Option<(usize, u128)>,
}

impl<'a> Iterator for Walk<'a> {
    type Item = (IpAddr, &'a Range);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let pos = self.next?;
            let following = self.set.successor(pos);
            self.next = (Some(following) != self.first).then_some(following);
            let range = self.set.ranges.get(pos.0)?;
            let ip = from_bits(range.start, pos.1);
            if ip != range.gateway {
                return Some((ip, range));
            }
        }
    }
}

/// A set, non-empty string field.
fn text(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(subnet: &str, start: &str, end: &str, gateway: &str) -> RawRange {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        RawRange {
            subnet: opt(subnet),
            range_start: opt(start),
            range_end: opt(end),
            gateway: opt(gateway),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_follow_host_local() {
        let r = Range::from_raw(&raw("10.1.0.0/16", "", "", ""), "r").unwrap();
        assert_eq!(r.to_string(), "10.1.0.1-10.1.255.254");
        assert_eq!(r.gateway, ip("10.1.0.1"));
        let r6 = Range::from_raw(&raw("fd00:1::/64", "", "", ""), "r").unwrap();
        assert_eq!(r6.to_string(), "fd00:1::1-fd00:1::ffff:ffff:ffff:ffff");
        assert_eq!(r6.gateway, ip("fd00:1::1"));
        // Explicit bounds that include the network or broadcast address are narrowed.
        let r = Range::from_raw(&raw("10.0.0.0/24", "10.0.0.0", "10.0.0.255", ""), "r").unwrap();
        assert_eq!(r.to_string(), "10.0.0.1-10.0.0.254");
    }

    #[test]
    fn bad_ranges_name_the_field() {
        let cases = [
            (raw("", "", "", ""), "r.subnet is required"),
            (raw("bogus", "", "", ""), "r.subnet"),
            (raw("10.0.0.5/24", "", "", ""), "host bits"),
            (raw("10.0.0.0/31", "", "", ""), "too small"),
            (
                raw("10.0.0.0/24", "10.0.1.1", "", ""),
                "r.rangeStart: 10.0.1.1 is not in",
            ),
            (raw("10.0.0.0/24", "", "fd00::1", ""), "r.rangeEnd"),
            (raw("10.0.0.0/24", "", "", "10.0.1.1"), "r.gateway"),
            (
                raw("10.0.0.0/24", "x", "", ""),
                "r.rangeStart: \"x\" is not",
            ),
            (
                raw("10.0.0.0/24", "10.0.0.50", "10.0.0.40", ""),
                "after rangeEnd",
            ),
            (
                raw("10.0.0.0/24", "10.0.0.0", "10.0.0.0", ""),
                "no usable address",
            ),
        ];
        for (raw, want) in cases {
            let err = Range::from_raw(&raw, "r").unwrap_err();
            assert_eq!(err.code, 7, "{err}");
            assert!(err.msg.contains(want), "{err} lacks {want:?}");
        }
    }

    #[test]
    fn sets_refuse_mixed_families_and_overlaps() {
        let mixed = [raw("10.0.0.0/24", "", "", ""), raw("fd00::/64", "", "", "")];
        assert!(RangeSet::from_raw(&mixed, "s")
            .unwrap_err()
            .msg
            .contains("families"));
        let overlap = [
            raw("10.0.0.0/24", "", "", ""),
            raw("10.0.0.0/25", "", "", ""),
        ];
        assert!(RangeSet::from_raw(&overlap, "s")
            .unwrap_err()
            .msg
            .contains("overlap"));
        assert!(RangeSet::from_raw(&[], "s")
            .unwrap_err()
            .msg
            .contains("empty"));
    }

    #[test]
    fn walk_wraps_through_ranges_and_skips_gateways() {
        let set = RangeSet::from_raw(
            &[
                raw("10.0.0.0/24", "10.0.0.1", "10.0.0.3", ""),
                raw("10.0.1.0/24", "10.0.1.5", "10.0.1.6", ""),
            ],
            "s",
        )
        .unwrap();
        let order = |last: Option<&str>| {
            set.walk(last.map(ip))
                .map(|(a, _)| a.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(order(None), "10.0.0.2 10.0.0.3 10.0.1.5 10.0.1.6");
        assert_eq!(
            order(Some("10.0.0.3")),
            "10.0.1.5 10.0.1.6 10.0.0.2 10.0.0.3"
        );
        assert_eq!(
            order(Some("10.0.1.6")),
            "10.0.0.2 10.0.0.3 10.0.1.5 10.0.1.6"
        );
        // A last address outside the set restarts at the beginning.
        assert_eq!(order(Some("192.168.0.1")), order(None));
        assert_eq!(set.to_string(), "10.0.0.1-10.0.0.3,10.0.1.5-10.0.1.6");
    }
}
