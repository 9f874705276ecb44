//! Localhost host ports: the kernel only routes a packet from 127.0.0.1 (DNATed to a pod)
//! out of an interface with `route_localnet` set, so ADD sets it on the interface that
//! routes to the pod, as the reference portmap does. The table's guard chain drops what
//! that would otherwise let in (packets from outside addressed to 127.0.0.0/8).

use std::net::Ipv4Addr;

use super::codes;
use crate::error::CniError;

/// `RTF_UP` in /proc/net/route flags.
const RTF_UP: u32 = 0x1;
/// `RTF_REJECT`: unreachable routes lead nowhere.
const RTF_REJECT: u32 = 0x200;

/// Set `route_localnet` on the interface the main table routes `addr` through; nothing when
/// no route is found (the reference plugin also skips then).
pub fn enable_for(addr: Ipv4Addr) -> Result<(), CniError> {
    let failed =
        |what: String, err: std::io::Error| CniError::new(codes::LOCALNET, what, err.to_string());
    let routes = std::fs::read_to_string("/proc/net/route")
        .map_err(|e| failed("reading /proc/net/route".to_owned(), e))?;
    let Some(iface) = route_interface(&routes, addr) else {
        return Ok(());
    };
    let path = format!("/proc/sys/net/ipv4/conf/{iface}/route_localnet");
    if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(&path, "1")
        .map_err(|e| failed(format!("setting {path} for localhost host ports"), e))
}

/// The interface of the most specific up route to `addr` in /proc/net/route's format
/// (addresses and masks as native-endian hex of the network-order value).
fn route_interface(table: &str, addr: Ipv4Addr) -> Option<String> {
    let target = u32::from(addr);
    let parse = |hex: &str| u32::from_str_radix(hex, 16).ok();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (iface, dest, flags, metric, mask) = (
                f.first()?,
                parse(f.get(1)?)?,
                parse(f.get(3)?)?,
                f.get(6)?,
                parse(f.get(7)?)?,
            );
            let (dest, mask) = (
                u32::from(Ipv4Addr::from(dest.to_ne_bytes())),
                u32::from(Ipv4Addr::from(mask.to_ne_bytes())),
            );
            let usable = flags & RTF_UP != 0 && flags & RTF_REJECT == 0;
            let sane = !iface.contains('/') && !matches!(*iface, "." | "..");
            (usable && sane && target & mask == dest & mask).then(|| {
                (
                    mask.count_ones(),
                    std::cmp::Reverse(metric.parse::<u32>().unwrap_or(0)),
                    *iface,
                )
            })
        })
        .max()
        .map(|(_, _, iface)| iface.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(a: [u8; 4]) -> String {
        format!("{:08X}", u32::from_ne_bytes(a))
    }

    #[test]
    fn the_most_specific_route_wins() {
        let table =
            format!(
            "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n\
             eth0\t{}\t{}\t0003\t0\t0\t0\t{}\t0\t0\t0\n\
             cni0\t{}\t{}\t0001\t0\t0\t0\t{}\t0\t0\t0\n\
             dead\t{}\t{}\t0201\t0\t0\t0\t{}\t0\t0\t0\n",
            hex([0, 0, 0, 0]), hex([192, 168, 1, 1]), hex([0, 0, 0, 0]),
            hex([10, 22, 0, 0]), hex([0, 0, 0, 0]), hex([255, 255, 0, 0]),
            hex([10, 22, 5, 0]), hex([0, 0, 0, 0]), hex([255, 255, 255, 0]),
        );
        let at = |a: [u8; 4]| route_interface(&table, Ipv4Addr::from(a));
        assert_eq!(at([10, 22, 5, 9]).as_deref(), Some("cni0"));
        assert_eq!(at([8, 8, 8, 8]).as_deref(), Some("eth0"));
        assert_eq!(route_interface("header\n", Ipv4Addr::LOCALHOST), None);
    }
}
