//! Name helpers: label checks, dashed-IP labels and reverse (arpa) names, all lowercase
//! dotted strings without the trailing dot (the index's key form).

use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::Name;

/// Whether `label` can be one DNS label of an index key (no dots, 1..=63 bytes, ASCII).
pub fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The index key of a wire name: lowercase labels joined by dots, `None` when a label could
/// never be in the index (so the lookup can stop early without allocating escapes).
pub fn key_of(name: &Name) -> Option<String> {
    let mut key = String::with_capacity(name.len());
    for label in name.iter() {
        if !key.is_empty() {
            key.push('.');
        }
        for &b in label {
            if !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return None;
            }
            key.push(char::from(b.to_ascii_lowercase()));
        }
    }
    Some(key)
}

/// The label form of an IP used for pods and unnamed endpoints: `10-1-2-3`, `fd00--1`.
pub fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// Parses a dashed-IP label back into the address.
pub fn undash(label: &str) -> Option<IpAddr> {
    if label.contains("--") || label.matches('-').count() > 3 {
        return label
            .replace('-', ":")
            .parse::<Ipv6Addr>()
            .ok()
            .map(IpAddr::V6);
    }
    label
        .replace('-', ".")
        .parse::<Ipv4Addr>()
        .ok()
        .map(IpAddr::V4)
}

/// The reverse-lookup key of an address (`4.3.2.1.in-addr.arpa`, nibbles `.ip6.arpa`).
pub fn reverse(ip: IpAddr) -> String {
    let mut out = String::with_capacity(72);
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            let _ = write!(out, "{d}.{c}.{b}.{a}.in-addr.arpa");
        }
        IpAddr::V6(v6) => {
            for byte in v6.octets().iter().rev() {
                let _ = write!(out, "{:x}.{:x}.", byte & 0xf, byte >> 4);
            }
            out.push_str("ip6.arpa");
        }
    }
    out
}

/// Whether `key` is a reverse-lookup name.
pub fn is_reverse(key: &str) -> bool {
    key.ends_with("in-addr.arpa") || key.ends_with("ip6.arpa")
}

/// `key` without its first label, `None` at the root.
pub fn parent(key: &str) -> Option<&str> {
    key.split_once('.').map(|(_, rest)| rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_lowercase_and_reject_odd_bytes() {
        let name = Name::from_ascii("My-Svc.NS.svc.Cluster.Local.").unwrap();
        assert_eq!(key_of(&name).unwrap(), "my-svc.ns.svc.cluster.local");
        let odd = Name::from_labels(vec![b"a.b".to_vec(), b"c".to_vec()]).unwrap();
        assert_eq!(key_of(&odd), None);
        assert_eq!(key_of(&Name::root()).unwrap(), "");
    }

    #[test]
    fn dashed_round_trip() {
        for ip in ["10.1.2.3", "fd00::1", "2001:db8:0:1:2:3:4:5"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(undash(&dashed(ip)), Some(ip));
        }
        assert_eq!(dashed("fd00::1".parse().unwrap()), "fd00--1");
        assert_eq!(undash("10-1-2"), None);
        assert_eq!(undash("300-1-2-3"), None);
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse("10.96.0.1".parse().unwrap()),
            "1.0.96.10.in-addr.arpa"
        );
        let v6 = reverse("2001:db8::567:89ab".parse().unwrap());
        assert_eq!(
            v6,
            "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
        assert!(is_reverse(&v6));
    }

    #[test]
    fn labels() {
        assert!(valid_label("my-svc"));
        assert!(!valid_label(""));
        assert!(!valid_label("a.b"));
        assert!(!valid_label(&"a".repeat(64)));
        assert_eq!(parent("a.b.c"), Some("b.c"));
        assert_eq!(parent("c"), None);
    }
}
