//! Pod DNS (`dns.Configurer.GetPodDNS`): dnsPolicy, the node's resolv.conf, the cluster
//! DNS servers and search path, `dnsConfig` merged in, and the resolver's limits.

use std::path::Path;

use k8s_cri::v1::DnsConfig;
use k8s_openapi::api::core::v1::{Pod, PodDNSConfig};

/// Largest resolv.conf the kubelet reads (`maxResolvConfLength`).
const MAX_RESOLV_CONF_BYTES: u64 = 10 << 20;
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCH_PATHS: usize = 32;
const MAX_SEARCH_CHARS: usize = 2048;
const MAX_DOMAIN_LEN: usize = 253;

/// Node DNS settings (KubeletConfiguration `clusterDNS`, `clusterDomain`, `resolvConf`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsSettings {
    /// Cluster DNS server IPs; empty: ClusterFirst pods fall back to the host's resolver.
    pub cluster_dns: Vec<String>,
    /// The cluster domain, e.g. `cluster.local`.
    pub cluster_domain: String,
    /// The parsed host resolv.conf; `None` when `resolvConf` is set to "" (no host DNS).
    pub host: Option<ResolvConf>,
}

/// The parts of a resolv.conf pods inherit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines, in order.
    pub nameservers: Vec<String>,
    /// The last `search` line, trailing dots removed and `.` dropped.
    pub searches: Vec<String>,
    /// `options`, merged across lines (a later `name:value` replaces an earlier one).
    pub options: Vec<String>,
}

/// A resolv.conf that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ResolvConfError {
    /// Reading the file failed.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A `nameserver` line without an address.
    #[error("resolv.conf line {0}: nameserver list is empty")]
    EmptyNameserver(usize),
}

impl ResolvConf {
    /// Parses resolv.conf text as the kubelet's `parseResolvConf` does.
    pub fn parse(text: &str) -> Result<ResolvConf, ResolvConfError> {
        let mut conf = ResolvConf::default();
        for (number, line) in text.split('\n').enumerate() {
            let line = line.trim();
            if line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            match fields.next() {
                Some("nameserver") => match fields.next() {
                    Some(server) => conf.nameservers.push(server.to_owned()),
                    None => return Err(ResolvConfError::EmptyNameserver(number + 1)),
                },
                Some("search") => {
                    conf.searches = fields
                        .filter(|s| *s != ".")
                        .map(|s| s.strip_suffix('.').unwrap_or(s).to_owned())
                        .collect();
                }
                Some("options") => {
                    for option in fields {
                        merge_option(&mut conf.options, option.to_owned());
                    }
                }
                _ => {}
            }
        }
        Ok(conf)
    }

    /// Reads and parses a resolv.conf (at most 10 MiB, like the kubelet).
    pub fn load(path: &Path) -> Result<ResolvConf, ResolvConfError> {
        use std::io::Read;
        let read_err = |source| ResolvConfError::Read {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let mut bytes = Vec::new();
        file.take(MAX_RESOLV_CONF_BYTES)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        ResolvConf::parse(&String::from_utf8_lossy(&bytes))
    }
}

/// Replaces an option of the same name (the part before `:`) in place, or appends it.
fn merge_option(options: &mut Vec<String>, option: String) {
    let name = |o: &str| o.split(':').next().unwrap_or_default().to_owned();
    let wanted = name(&option);
    match options.iter_mut().find(|o| name(o) == wanted) {
        Some(slot) => *slot = option,
        None => options.push(option),
    }
}

/// The pod's resolver configuration for its dnsPolicy.
pub fn pod_dns_config(pod: &Pod, dns: &DnsSettings, host_ips: &[String]) -> DnsConfig {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let host = dns.host.clone().unwrap_or_default();
    let mut config = DnsConfig {
        servers: host.nameservers,
        searches: host.searches,
        options: host.options,
    };
    // Unknown policies are treated as ClusterFirst, as the kubelet does after logging.
    let cluster = match policy {
        "None" => {
            config = DnsConfig::default();
            false
        }
        "Default" => false,
        "ClusterFirst" => !host_network,
        _ => true,
    };
    let use_cluster = cluster && !dns.cluster_dns.is_empty();
    if use_cluster {
        config.servers = dns.cluster_dns.clone();
        config.searches = cluster_searches(pod, &dns.cluster_domain, config.searches);
        config.options = vec!["ndots:5".to_owned()];
    } else if policy != "None" && dns.host.is_none() {
        // No host resolv.conf: point at the node itself, as "no nameserver" means in libc.
        config.servers = host_ips
            .iter()
            .map(|ip| if ip.contains(':') { "::1" } else { "127.0.0.1" }.to_owned())
            .collect();
        if config.servers.is_empty() {
            config.servers.push("127.0.0.1".to_owned());
        }
        config.searches = vec![".".to_owned()];
    }
    if let Some(extra) = spec.and_then(|s| s.dns_config.as_ref()) {
        merge_pod_dns_config(&mut config, extra);
    }
    config.servers.truncate(MAX_NAMESERVERS);
    config.searches = fit_search_limits(std::mem::take(&mut config.searches));
    config
}

fn cluster_searches(pod: &Pod, domain: &str, host_searches: Vec<String>) -> Vec<String> {
    if domain.is_empty() {
        return host_searches;
    }
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let mut searches = vec![
        format!("{namespace}.svc.{domain}"),
        format!("svc.{domain}"),
        domain.to_owned(),
    ];
    searches.extend(host_searches);
    dedup(searches)
}

fn merge_pod_dns_config(config: &mut DnsConfig, extra: &PodDNSConfig) {
    let servers = std::mem::take(&mut config.servers);
    config.servers = dedup(
        servers
            .into_iter()
            .chain(extra.nameservers.iter().flatten().cloned()),
    );
    let searches = std::mem::take(&mut config.searches);
    config.searches = dedup(
        searches
            .into_iter()
            .chain(extra.searches.iter().flatten().cloned()),
    );
    for option in extra.options.iter().flatten() {
        let Some(name) = option.name.as_deref().filter(|n| !n.is_empty()) else {
            continue;
        };
        let merged = match option.value.as_deref().filter(|v| !v.is_empty()) {
            Some(value) => format!("{name}:{value}"),
            None => name.to_owned(),
        };
        merge_option(&mut config.options, merged);
    }
}

/// `omitDuplicates`: first occurrence wins.
fn dedup(items: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    items
        .into_iter()
        .filter(|i| seen.insert(i.clone()))
        .collect()
}

/// `formDNSSearchFitsLimits`: at most 32 domains, none over 253 characters, the line at
/// most 2048 characters (dropping from the end).
fn fit_search_limits(mut searches: Vec<String>) -> Vec<String> {
    searches.truncate(MAX_SEARCH_PATHS);
    searches.retain(|s| s.len() <= MAX_DOMAIN_LEN);
    let line_len =
        |s: &[String]| s.iter().map(String::len).sum::<usize>() + s.len().saturating_sub(1);
    while line_len(&searches) > MAX_SEARCH_CHARS {
        searches.pop();
    }
    searches
}

#[cfg(test)]
mod tests;
