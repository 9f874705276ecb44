//! The agent config's `dns:` section and the upstream list it resolves to.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::DnsError;

/// Which pod A records the zone answers (CoreDNS kubernetes plugin `pods` option).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PodRecords {
    /// No `pod.<zone>` records at all.
    Disabled,
    /// Any dashed IP under any namespace answers with that IP (kube-dns behaviour).
    #[default]
    Insecure,
    /// Only IPs of pods that exist in the named namespace answer.
    Verified,
}

/// How queries are sent upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum UpstreamProtocol {
    /// UDP, retried over TCP when the answer is truncated.
    #[default]
    Udp,
    /// TCP only.
    Tcp,
}

/// The agent config's `dns:` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Whether the agent runs the DNS server at all.
    pub enabled: bool,
    /// Node-local address the server answers on (added to `interface_name`).
    pub local_address: IpAddr,
    /// Name of the dedicated (empty bridge) interface holding the local addresses.
    pub interface_name: String,
    /// Also answer on the kube-dns ClusterIP, added to the same interface.
    pub serve_cluster_ip: Option<IpAddr>,
    /// UDP and TCP port.
    pub port: u16,
    /// The cluster zone (kubelet `clusterDomain`).
    pub cluster_domain: String,
    /// Upstream servers (`ip` or `ip:port`); empty = nameservers from `resolv_conf`.
    pub upstreams: Vec<String>,
    /// resolv.conf read when `upstreams` is empty.
    pub resolv_conf: PathBuf,
    /// Transport used towards upstreams.
    pub upstream_protocol: UpstreamProtocol,
    /// Maximum number of cached upstream answers.
    pub cache_size: usize,
    /// TTL of cluster-zone records, in seconds.
    pub ttl: u32,
    /// Pod record mode.
    pub pods: PodRecords,
    /// How long past expiry a cached answer may be served when upstreams fail (RFC 8767).
    #[serde(deserialize_with = "duration")]
    pub serve_stale: Duration,
    /// nftables table holding the NOTRACK rules for the local addresses.
    pub nftables_table: String,
    /// `host:port` of the `/health` endpoint; empty disables it.
    pub health_bind_address: String,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            local_address: IpAddr::V4(Ipv4Addr::new(169, 254, 20, 10)),
            interface_name: "capstan-dns".to_owned(),
            serve_cluster_ip: None,
            port: 53,
            cluster_domain: "cluster.local".to_owned(),
            upstreams: Vec::new(),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            upstream_protocol: UpstreamProtocol::Udp,
            cache_size: 10_000,
            ttl: 5,
            pods: PodRecords::Insecure,
            serve_stale: Duration::from_secs(3600),
            nftables_table: "capstan-dns".to_owned(),
            health_bind_address: "127.0.0.1:8081".to_owned(),
        }
    }
}

impl DnsConfig {
    /// The addresses the server listens on: the local address and the optional ClusterIP.
    pub fn listen_addresses(&self) -> Vec<SocketAddr> {
        std::iter::once(self.local_address)
            .chain(self.serve_cluster_ip)
            .map(|ip| SocketAddr::new(ip, self.port))
            .collect()
    }

    /// The upstream servers: `upstreams`, or else the nameservers in `resolv_conf`.
    pub fn resolve_upstreams(&self) -> Result<Vec<SocketAddr>, DnsError> {
        if !self.upstreams.is_empty() {
            return self.upstreams.iter().map(|s| parse_upstream(s)).collect();
        }
        let text =
            std::fs::read_to_string(&self.resolv_conf).map_err(|source| DnsError::ResolvConf {
                path: self.resolv_conf.clone(),
                source,
            })?;
        let servers = resolv_conf_nameservers(&text);
        // Our own listen addresses in resolv.conf would make every forward a loop.
        let own = self.listen_addresses();
        Ok(servers.into_iter().filter(|s| !own.contains(s)).collect())
    }
}

/// Parses `ip`, `ip:port` or `[v6]:port` into a socket address (port 53 by default).
pub fn parse_upstream(text: &str) -> Result<SocketAddr, DnsError> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    text.parse::<SocketAddr>()
        .map_err(|_| DnsError::BadUpstream(text.to_owned()))
}

/// The `nameserver` lines of a resolv.conf, in order.
pub fn resolv_conf_nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        // Zone ids (fe80::1%eth0) are not supported by SocketAddr parsing; skip those.
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Deserializes a Go-style duration (`"90s"`, `"5m"`, `"1h30m"`) or a number of seconds.
fn duration<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(u64),
        Text(String),
    }
    match Raw::deserialize(de)? {
        Raw::Seconds(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => parse_duration(&t).ok_or_else(|| {
            serde::de::Error::custom(format!("invalid duration {t:?} (use e.g. 30s, 5m, 1h)"))
        }),
    }
}

/// Parses a Go-style duration made of `<n>h`, `<n>m`, `<n>s` and `<n>ms` parts.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(total);
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "h" => Duration::from_secs(value.checked_mul(3600)?),
            "m" => Duration::from_secs(value.checked_mul(60)?),
            "s" => Duration::from_secs(value),
            "ms" => Duration::from_millis(value),
            _ => return None,
        };
        total = total.checked_add(part)?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_from_empty_section() {
        let config: DnsConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config, DnsConfig::default());
        assert_eq!(config.ttl, 5);
        assert_eq!(config.pods, PodRecords::Insecure);
        assert_eq!(
            config.listen_addresses(),
            vec!["169.254.20.10:53".parse().unwrap()]
        );
    }

    #[test]
    fn camel_case_fields_and_durations() {
        let config: DnsConfig = serde_json::from_str(
            r#"{"clusterDomain":"example.org","pods":"verified","serveStale":"1h30m",
                "upstreamProtocol":"tcp","serveClusterIp":"10.96.0.10","upstreams":["1.1.1.1","[::1]:5353"]}"#,
        )
        .unwrap();
        assert_eq!(config.cluster_domain, "example.org");
        assert_eq!(config.pods, PodRecords::Verified);
        assert_eq!(config.serve_stale, Duration::from_secs(5400));
        assert_eq!(config.upstream_protocol, UpstreamProtocol::Tcp);
        assert_eq!(config.listen_addresses().len(), 2);
        assert_eq!(
            config.resolve_upstreams().unwrap(),
            vec!["1.1.1.1:53".parse().unwrap(), "[::1]:5353".parse().unwrap()]
        );
    }

    #[test]
    fn unknown_fields_rejected() {
        assert!(serde_json::from_str::<DnsConfig>(r#"{"ttll":5}"#).is_err());
        assert!(serde_json::from_str::<DnsConfig>(r#"{"serveStale":"5x"}"#).is_err());
    }

    #[test]
    fn resolv_conf_parsing_skips_own_addresses() {
        let dir = std::env::temp_dir().join(format!("dns-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("resolv.conf");
        std::fs::write(
            &path,
            "# c\nsearch a b\nnameserver 169.254.20.10\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\noptions ndots:5\n",
        )
        .unwrap();
        let config = DnsConfig {
            resolv_conf: path,
            ..DnsConfig::default()
        };
        assert_eq!(
            config.resolve_upstreams().unwrap(),
            vec!["10.0.0.2:53".parse().unwrap()]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("1d"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("h"), None);
    }
}
