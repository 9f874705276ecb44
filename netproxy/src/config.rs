//! The agent config's `proxy:` section: the KubeProxyConfiguration fields Capstan applies,
//! plus its own table name, and the Go duration syntax those fields use.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

/// Longest nftables table name the kernel accepts (NFT_NAME_MAXLEN - 1).
const MAX_TABLE_NAME: usize = 255;

/// A setting that parsed but cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("proxy.{field}: {reason}")]
pub struct ConfigError {
    /// The camelCase path of the offending field.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// KubeProxyConfiguration fields that apply, from the agent config's `proxy:` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Whether the agent runs the service proxy at all.
    pub enabled: bool,
    /// `clusterCIDR`: comma-separated pod CIDRs (v4 and/or v6); "" = unknown.
    #[serde(rename = "clusterCIDR")]
    pub cluster_cidr: String,
    /// CIDRs whose local addresses accept NodePorts, or `["primary"]` for the node's IPs.
    pub node_port_addresses: Vec<String>,
    /// `nftables:` sync timing and masquerading.
    pub nftables: NftablesConfig,
    /// `conntrack:` accepted for compatibility; see [`ConntrackConfig`].
    pub conntrack: ConntrackConfig,
    /// `host:port` of the health server (`/healthz`, `/livez`); "" disables it.
    pub healthz_bind_address: String,
    /// `host:port` of kube-proxy's own metrics endpoint; "" disables it.
    pub metrics_bind_address: String,
    /// Name of Capstan's nftables table, in both the `ip` and `ip6` families.
    pub table_name: String,
    /// Serve only Services whose `service.kubernetes.io/service-proxy-name` label equals this;
    /// `None` serves only Services without that label (kube-proxy's rule).
    pub service_proxy_name: Option<String>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            cluster_cidr: String::new(),
            node_port_addresses: vec![PRIMARY.to_owned()],
            nftables: NftablesConfig::default(),
            conntrack: ConntrackConfig::default(),
            healthz_bind_address: "0.0.0.0:10256".to_owned(),
            metrics_bind_address: "127.0.0.1:10249".to_owned(),
            table_name: "capstan-proxy".to_owned(),
            service_proxy_name: None,
        }
    }
}

/// The `nodePortAddresses` value meaning "the node's own IPs".
pub const PRIMARY: &str = "primary";

/// Where NodePorts are accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodePortAddresses {
    /// The node's IPs (`NodeContext::ips`).
    Primary,
    /// Local addresses inside these CIDRs (127.0.0.0/8 included enables localhost NodePorts).
    Cidrs(Vec<IpNet>),
}

impl NodePortAddresses {
    /// The addresses of `local` that accept NodePorts (`node_ips` for `Primary`).
    pub fn select(&self, node_ips: &[IpAddr], local: &[IpAddr]) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = match self {
            Self::Primary => node_ips.to_vec(),
            Self::Cidrs(cidrs) => local
                .iter()
                .copied()
                .filter(|ip| cidrs.iter().any(|c| c.contains(ip)))
                .collect(),
        };
        out.sort();
        out.dedup();
        out
    }
}

impl ProxyConfig {
    /// Refuse settings that parse but cannot be used.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.cluster_cidrs()?;
        self.node_port_addresses()?;
        validate_table_name(&self.table_name)?;
        if self.nftables.masquerade_bit > 31 {
            return Err(ConfigError::new(
                "nftables.masqueradeBit",
                format!("{} is not in 0..=31", self.nftables.masquerade_bit),
            ));
        }
        if self.nftables.min_sync_period.0 > self.nftables.sync_period.0 {
            return Err(ConfigError::new(
                "nftables.minSyncPeriod",
                "must not be longer than syncPeriod",
            ));
        }
        if self.nftables.sync_period.0.is_zero() {
            return Err(ConfigError::new("nftables.syncPeriod", "must be positive"));
        }
        for (field, value) in [
            ("healthzBindAddress", &self.healthz_bind_address),
            ("metricsBindAddress", &self.metrics_bind_address),
        ] {
            if !value.is_empty() && value.parse::<SocketAddr>().is_err() {
                return Err(ConfigError::new(
                    field,
                    format!("{value:?} is not an ip:port address"),
                ));
            }
        }
        Ok(())
    }

    /// The parsed `clusterCIDR` list (empty when unset).
    pub fn cluster_cidrs(&self) -> Result<Vec<IpNet>, ConfigError> {
        self.cluster_cidr
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .map(|net| net.trunc())
                    .map_err(|e| ConfigError::new("clusterCIDR", format!("{s:?}: {e}")))
            })
            .collect()
    }

    /// The parsed `nodePortAddresses` (empty list = `primary`, as kube-proxy's default).
    pub fn node_port_addresses(&self) -> Result<NodePortAddresses, ConfigError> {
        let entries: Vec<&str> = self.node_port_addresses.iter().map(|s| s.trim()).collect();
        if entries.is_empty() || entries == [PRIMARY] {
            return Ok(NodePortAddresses::Primary);
        }
        entries
            .iter()
            .map(|s| {
                s.parse::<IpNet>().map(|n| n.trunc()).map_err(|e| {
                    ConfigError::new(
                        "nodePortAddresses",
                        format!("{s:?}: {e} (use CIDRs, or only \"primary\")"),
                    )
                })
            })
            .collect::<Result<_, _>>()
            .map(NodePortAddresses::Cidrs)
    }
}

fn validate_table_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_TABLE_NAME
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            "tableName",
            format!("{name:?} must start with a letter and hold only letters, digits, '-' and '_'"),
        ))
    }
}

/// KubeProxyConfiguration `nftables:`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct NftablesConfig {
    /// Interval of full syncs that re-read the kernel table and repair drift.
    pub sync_period: GoDuration,
    /// Shortest interval between two syncs (changes arriving faster are batched).
    pub min_sync_period: GoDuration,
    /// Bit of the packet mark that flags connections for masquerading.
    pub masquerade_bit: u32,
    /// SNAT every connection to a service, not only those that need it.
    pub masquerade_all: bool,
}

impl Default for NftablesConfig {
    fn default() -> Self {
        Self {
            sync_period: GoDuration(Duration::from_secs(30)),
            min_sync_period: GoDuration(Duration::from_secs(1)),
            masquerade_bit: 14,
            masquerade_all: false,
        }
    }
}

impl NftablesConfig {
    /// The packet mark value of `masqueradeBit`.
    pub fn masquerade_mark(&self) -> u32 {
        1u32.checked_shl(self.masquerade_bit).unwrap_or(0)
    }
}

/// KubeProxyConfiguration `conntrack:`: accepted so existing configs load, but not applied —
/// Capstan leaves the node's conntrack sysctls to the host's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ConntrackConfig {
    /// `nf_conntrack_max` per CPU core (not applied).
    pub max_per_core: Option<i32>,
    /// Floor of `nf_conntrack_max` (not applied).
    pub min: Option<i32>,
    /// `nf_conntrack_tcp_timeout_established` (not applied).
    pub tcp_established_timeout: Option<GoDuration>,
    /// `nf_conntrack_tcp_timeout_close_wait` (not applied).
    pub tcp_close_wait_timeout: Option<GoDuration>,
    /// `nf_conntrack_tcp_be_liberal` (not applied).
    pub tcp_be_liberal: Option<bool>,
    /// `nf_conntrack_udp_timeout` (not applied).
    pub udp_timeout: Option<GoDuration>,
    /// `nf_conntrack_udp_timeout_stream` (not applied).
    pub udp_stream_timeout: Option<GoDuration>,
}

/// A duration written in Go's `time.ParseDuration` syntax (`"1s"`, `"500ms"`, `"1m30s"`, `"1.5h"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct GoDuration(pub Duration);

/// Why a Go duration string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: {reason}")]
pub struct DurationError {
    text: String,
    reason: &'static str,
}

impl FromStr for GoDuration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_go_duration(text).map(GoDuration)
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses Go's duration syntax: a sequence of decimal numbers (fractions allowed) each with a
/// unit `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`; a bare `0` is zero. Negative durations are refused.
pub fn parse_go_duration(text: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        text: text.to_owned(),
        reason,
    };
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest.starts_with('-') {
        return Err(err("negative durations are not allowed"));
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(err("empty"));
    }
    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(err("missing unit")),
            _ => return Err(err("unknown unit")),
        };
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && frac.is_empty() {
            return Err(err("missing number"));
        }
        let digits_ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if !digits_ok(whole) || !digits_ok(frac) {
            return Err(err("malformed number"));
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| err("number too large"))?
        };
        // Fractions beyond nanosecond precision are truncated, as Go does.
        let mut frac_ns: u128 = 0;
        let mut scale = unit_ns;
        for digit in frac.bytes().take(20) {
            scale /= 10;
            frac_ns += u128::from(digit - b'0') * scale;
        }
        total_ns = whole
            .checked_mul(unit_ns)
            .and_then(|v| v.checked_add(frac_ns))
            .and_then(|v| v.checked_add(total_ns))
            .filter(|v| *v <= u128::from(u64::MAX))
            .ok_or_else(|| err("out of range"))?;
        rest = after;
    }
    let secs = u64::try_from(total_ns / 1_000_000_000).map_err(|_| err("out of range"))?;
    // The remainder is below 1e9, so it fits.
    let nanos = u32::try_from(total_ns % 1_000_000_000).map_err(|_| err("out of range"))?;
    Ok(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        let d = |s: &str| parse_go_duration(s).unwrap();
        assert_eq!(d("1s"), Duration::from_secs(1));
        assert_eq!(d("500ms"), Duration::from_millis(500));
        assert_eq!(d("1m30s"), Duration::from_secs(90));
        assert_eq!(d("1.5h"), Duration::from_secs(5400));
        assert_eq!(d(".5s"), Duration::from_millis(500));
        assert_eq!(d("2h45m0.5s"), Duration::new(9900, 500_000_000));
        assert_eq!(d("10us"), Duration::from_micros(10));
        assert_eq!(d("10µs"), Duration::from_micros(10));
        assert_eq!(d("7ns"), Duration::from_nanos(7));
        assert_eq!(d("0"), Duration::ZERO);
        assert_eq!(d("+3s"), Duration::from_secs(3));
    }

    #[test]
    fn bad_go_durations_are_refused() {
        for bad in [
            "",
            "1",
            "s",
            "-1s",
            "1x",
            "1.2.3s",
            ".s",
            "1 s",
            "5 minutes",
            "1sm",
            "0s1",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} parsed");
        }
        assert!(parse_go_duration("9999999999999999999h").is_err());
    }

    #[test]
    fn defaults_match_kube_proxy() {
        let config: ProxyConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config, ProxyConfig::default());
        assert!(config.enabled);
        assert_eq!(config.nftables.sync_period.0, Duration::from_secs(30));
        assert_eq!(config.nftables.min_sync_period.0, Duration::from_secs(1));
        assert_eq!(config.nftables.masquerade_mark(), 0x4000);
        assert_eq!(config.table_name, "capstan-proxy");
        assert_eq!(
            config.node_port_addresses().unwrap(),
            NodePortAddresses::Primary
        );
        config.validate().unwrap();
    }

    #[test]
    fn camel_case_fields_parse() {
        let config: ProxyConfig = serde_json::from_value(serde_json::json!({
            "clusterCIDR": "10.244.0.0/16, fd00:10:244::/56",
            "nodePortAddresses": ["127.0.0.0/8", "192.168.1.0/24"],
            "nftables": {"syncPeriod": "1m", "minSyncPeriod": "100ms", "masqueradeBit": 3, "masqueradeAll": true},
            "conntrack": {"udpTimeout": "30s", "maxPerCore": 0},
            "healthzBindAddress": "",
            "tableName": "test-proxy",
            "serviceProxyName": "capstan"
        }))
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.cluster_cidrs().unwrap().len(), 2);
        assert_eq!(
            config.nftables.min_sync_period.0,
            Duration::from_millis(100)
        );
        assert_eq!(config.nftables.masquerade_mark(), 8);
        assert_eq!(
            config.conntrack.udp_timeout,
            Some(GoDuration(Duration::from_secs(30)))
        );
        let NodePortAddresses::Cidrs(cidrs) = config.node_port_addresses().unwrap() else {
            panic!("expected CIDRs");
        };
        let local: Vec<IpAddr> = ["127.0.0.1", "192.168.1.5", "10.0.0.1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let picked = NodePortAddresses::Cidrs(cidrs).select(&[], &local);
        assert_eq!(picked.len(), 2);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        let err = serde_json::from_str::<ProxyConfig>(r#"{"clusterCidr": "10.0.0.0/8"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field"), "{err}");
        let err = serde_json::from_str::<ProxyConfig>(r#"{"nftables": {"syncPeriod": "30"}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing unit"), "{err}");

        let bad = |edit: fn(&mut ProxyConfig)| {
            let mut config = ProxyConfig::default();
            edit(&mut config);
            config.validate().unwrap_err()
        };
        assert_eq!(bad(|c| c.cluster_cidr = "nope".into()).field, "clusterCIDR");
        assert_eq!(
            bad(|c| c.node_port_addresses = vec!["primary".into(), "10.0.0.0/8".into()]).field,
            "nodePortAddresses"
        );
        assert_eq!(bad(|c| c.table_name = "a b;".into()).field, "tableName");
        assert_eq!(
            bad(|c| c.nftables.masquerade_bit = 32).field,
            "nftables.masqueradeBit"
        );
        assert_eq!(
            bad(|c| c.nftables.min_sync_period = GoDuration(Duration::from_secs(60))).field,
            "nftables.minSyncPeriod"
        );
        assert_eq!(
            bad(|c| c.metrics_bind_address = "localhost".into()).field,
            "metricsBindAddress"
        );
    }
}
