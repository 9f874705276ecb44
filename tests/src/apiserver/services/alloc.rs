//! Picking free cluster IPs and node ports the way kube-apiserver's bitmap allocators do: a random start
//! in the upper part of the range, scanning forward, so the lower part stays free for static requests.

use std::collections::HashSet;
use std::net::IpAddr;
use std::ops::RangeInclusive;

use super::cidr::Cidr;

/// Cluster IPs and node ports held by the other Services.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Taken {
    /// Allocated cluster IPs.
    pub ips: HashSet<IpAddr>,
    /// Allocated node ports (including health-check node ports).
    pub ports: HashSet<u16>,
}

/// Why a requested value cannot be allocated, worded like kube-apiserver's allocators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocError {
    /// The value is held by another Service.
    Allocated(&'static str),
    /// The value lies outside the configured range.
    NotInRange(String),
    /// Nothing is left.
    Full(String),
}

impl std::fmt::Display for AllocError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AllocError::Allocated(what) => write!(f, "provided {what} is already allocated"),
            AllocError::NotInRange(msg) | AllocError::Full(msg) => f.write_str(msg),
        }
    }
}

/// The size of the lower, statically reserved band: `size/step` clamped to `[min, max]` (0 for tiny ranges).
fn static_band(size: u128, min: u128, max: u128, step: u128) -> u128 {
    if size < min {
        0
    } else {
        (size / step).clamp(min, max)
    }
}

/// The first free offset scanning `[lo, hi)` from a random start, wrapping once.
fn scan(lo: u128, hi: u128, free: &impl Fn(u128) -> bool) -> Option<u128> {
    if lo >= hi {
        return None;
    }
    let start = lo + rand::random_range(0..hi - lo);
    (start..hi).chain(lo..start).find(|o| free(*o))
}

/// A free offset in `[lo, hi)`, preferring the part above `lo + band`.
fn pick(lo: u128, hi: u128, band: u128, free: impl Fn(u128) -> bool) -> Option<u128> {
    let split = (lo + band).min(hi);
    scan(split, hi, &free).or_else(|| scan(lo, split, &free))
}

/// Usable offsets of a service CIDR: not the network address, and not the IPv4 broadcast address.
fn usable(cidr: &Cidr) -> (u128, u128) {
    let size = cidr.size();
    let hi = match cidr.family() {
        super::cidr::IpFamily::V4 => size.saturating_sub(1),
        super::cidr::IpFamily::V6 => size,
    };
    (1, hi)
}

/// A random free cluster IP from `cidr`.
pub fn any_ip(cidr: &Cidr, taken: &Taken) -> Result<IpAddr, AllocError> {
    let (lo, hi) = usable(cidr);
    let band = static_band(hi.saturating_sub(lo), 16, 256, 16);
    pick(lo, hi, band, |o| {
        cidr.nth(o).is_some_and(|ip| !taken.ips.contains(&ip))
    })
    .and_then(|o| cidr.nth(o))
    .ok_or_else(|| AllocError::Full(format!("range is full: no IPs left in {cidr}")))
}

/// Claims a requested cluster IP.
pub fn this_ip(cidr: &Cidr, ip: IpAddr, taken: &Taken) -> Result<(), AllocError> {
    let (lo, hi) = usable(cidr);
    match cidr.offset(ip) {
        Some(o) if (lo..hi).contains(&o) => {
            if taken.ips.contains(&ip) {
                Err(AllocError::Allocated("IP"))
            } else {
                Ok(())
            }
        }
        _ => Err(AllocError::NotInRange(format!(
            "the provided IP ({ip}) is not in the valid range. The range of valid IPs is {cidr}"
        ))),
    }
}

fn range_text(range: &RangeInclusive<u16>) -> String {
    format!("{}-{}", range.start(), range.end())
}

/// A random free node port from `range`, avoiding `also` (ports this Service already claimed).
pub fn any_port(
    range: &RangeInclusive<u16>,
    taken: &Taken,
    also: &HashSet<u16>,
) -> Result<u16, AllocError> {
    let lo = u128::from(*range.start());
    let hi = u128::from(*range.end()) + 1;
    let band = static_band(hi.saturating_sub(lo), 16, 128, 32);
    let free =
        |o: u128| u16::try_from(o).is_ok_and(|p| !taken.ports.contains(&p) && !also.contains(&p));
    pick(lo, hi, band, free)
        .and_then(|o| u16::try_from(o).ok())
        .ok_or_else(|| {
            AllocError::Full(format!(
                "range is full: no node ports left in {}",
                range_text(range)
            ))
        })
}

/// Claims a requested node port.
pub fn this_port(range: &RangeInclusive<u16>, port: i64, taken: &Taken) -> Result<u16, AllocError> {
    match u16::try_from(port).ok().filter(|p| range.contains(p)) {
        Some(p) if taken.ports.contains(&p) => Err(AllocError::Allocated("port")),
        Some(p) => Ok(p),
        None => Err(AllocError::NotInRange(format!(
            "provided port is not in the valid range. The range of valid ports is {}",
            range_text(range)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s).expect("cidr")
    }

    #[test]
    fn dynamic_ips_come_from_the_upper_band_until_it_is_full() {
        let c = cidr("10.96.0.0/28");
        // 14 usable addresses: too few for a static band, so every one is handed out.
        let mut taken = Taken::default();
        for _ in 0..14 {
            let ip = any_ip(&c, &taken).expect("free ip");
            assert!(
                c.contains(ip) && ip.to_string() != "10.96.0.0" && ip.to_string() != "10.96.0.15"
            );
            assert!(taken.ips.insert(ip), "{ip} handed out twice");
        }
        assert!(matches!(any_ip(&c, &taken), Err(AllocError::Full(_))));
        let big = cidr("10.96.0.0/16");
        for _ in 0..50 {
            let ip = any_ip(&big, &Taken::default()).expect("free ip");
            assert!(
                big.offset(ip).is_some_and(|o| o > 256),
                "{ip} in the static band"
            );
        }
    }

    #[test]
    fn requested_ips_must_be_free_and_in_range() {
        let c = cidr("10.96.0.0/16");
        let mut taken = Taken::default();
        let ip: IpAddr = "10.96.0.10".parse().expect("ip");
        assert_eq!(this_ip(&c, ip, &taken), Ok(()));
        taken.ips.insert(ip);
        assert_eq!(
            this_ip(&c, ip, &taken).map_err(|e| e.to_string()),
            Err("provided IP is already allocated".into())
        );
        let outside: IpAddr = "10.97.0.10".parse().expect("ip");
        assert_eq!(
            this_ip(&c, outside, &taken).map_err(|e| e.to_string()),
            Err("the provided IP (10.97.0.10) is not in the valid range. The range of valid IPs is 10.96.0.0/16".into())
        );
        assert!(this_ip(&c, "10.96.255.255".parse().expect("ip"), &taken).is_err());
        let v6 = cidr("fd00:10:96::/112");
        assert_eq!(
            this_ip(&v6, "fd00:10:96::ffff".parse().expect("ip"), &taken),
            Ok(())
        );
    }

    #[test]
    fn node_ports_avoid_taken_ones_and_check_requests() {
        let range = 30000..=30019;
        let mut taken = Taken::default();
        let mut mine = HashSet::new();
        for _ in 0..19 {
            let p = any_port(&range, &taken, &mine).expect("free port");
            assert!(range.contains(&p));
            assert!(mine.insert(p));
        }
        taken.ports.extend(mine.iter().copied());
        let last = any_port(&range, &taken, &HashSet::new()).expect("the last port");
        taken.ports.insert(last);
        assert!(any_port(&range, &taken, &HashSet::new()).is_err());
        assert_eq!(
            this_port(&range, i64::from(last), &taken).map_err(|e| e.to_string()),
            Err("provided port is already allocated".into())
        );
        assert_eq!(
            this_port(&range, 80, &taken).map_err(|e| e.to_string()),
            Err(
                "provided port is not in the valid range. The range of valid ports is 30000-30019"
                    .into()
            )
        );
        let full = 30000..=32767;
        for _ in 0..50 {
            let p = any_port(&full, &Taken::default(), &HashSet::new()).expect("port");
            assert!(p >= 30000 + 86, "{p} in the static band");
        }
    }
}
