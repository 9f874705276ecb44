//! The proxy's validated view of Services and EndpointSlices: everything the planner uses,
//! checked once, so an invalid object is rejected whole instead of breaking a script.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::names::Label;

/// Label naming the Service an EndpointSlice belongs to.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label selecting which proxy serves a Service.
const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// Label marking headless Services (their slices are ignored too).
const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Annotation turning on topology-aware routing (older spelling of PreferClose).
const TOPOLOGY_MODE_ANNOTATION: &str = "service.kubernetes.io/topology-mode";
/// More ports than this on one Service is refused (a hostile object, not a real workload).
const MAX_PORTS: usize = 256;
/// More endpoints than this in one slice is refused (the API allows 1000).
const MAX_SLICE_ENDPOINTS: usize = 1000;
/// kube-proxy's default ClientIP affinity timeout (3 hours).
const DEFAULT_AFFINITY_SECONDS: u32 = 10800;

/// The node the proxy runs on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeContext {
    /// Node name (matches `endpoints[].nodeName`).
    pub name: String,
    /// The node's IPs (NodePorts listen here with `nodePortAddresses: [primary]`).
    pub ips: Vec<IpAddr>,
    /// The node's `topology.kubernetes.io/zone`.
    pub zone: Option<String>,
}

/// One consistent view of the cluster, shared immutable objects (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    /// All Services.
    pub services: Vec<Arc<Service>>,
    /// All EndpointSlices.
    pub slices: Vec<Arc<EndpointSlice>>,
}

/// Namespace and name of a Service.
pub type ServiceKey = (String, String);

/// An object skipped as invalid, with the reason (for a warning Event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// `Service` or `EndpointSlice`.
    pub kind: &'static str,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Why it was skipped.
    pub reason: String,
}

/// An address family: one nftables table each (`ip`, `ip6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpFamily {
    /// IPv4, table family `ip`.
    V4,
    /// IPv6, table family `ip6`.
    V6,
}

impl IpFamily {
    /// Both families.
    pub const ALL: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];

    /// The family of `ip`.
    pub fn of(ip: &IpAddr) -> Self {
        if ip.is_ipv4() {
            Self::V4
        } else {
            Self::V6
        }
    }

    /// The nftables table family keyword.
    pub fn nft(self) -> &'static str {
        match self {
            Self::V4 => "ip",
            Self::V6 => "ip6",
        }
    }
}

/// A Service port protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Proto {
    fn parse(text: Option<&str>) -> Option<Self> {
        match text.unwrap_or("TCP") {
            "TCP" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            "SCTP" => Some(Self::Sctp),
            _ => None,
        }
    }

    /// The nft protocol keyword.
    pub fn nft(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

/// One Service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// The port's name ("" when the Service has a single unnamed port).
    pub name: String,
    /// Its protocol.
    pub proto: Proto,
    /// The service port.
    pub port: u16,
    /// The NodePort, if allocated.
    pub node_port: Option<u16>,
}

/// A Service as the planner needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceInfo {
    /// Namespace and name, as in the API.
    pub key: ServiceKey,
    /// The namespace as a label (for chain names).
    pub namespace: Label,
    /// The name as a label (for chain names).
    pub name: Label,
    /// ClusterIPs (one per family).
    pub cluster_ips: Vec<IpAddr>,
    /// `spec.externalIPs`.
    pub external_ips: Vec<IpAddr>,
    /// Load-balancer ingress IPs (those not in `ipMode: Proxy`).
    pub lb_ips: Vec<IpAddr>,
    /// `spec.loadBalancerSourceRanges`; empty = everyone.
    pub source_ranges: Vec<IpNet>,
    /// Ports.
    pub ports: Vec<PortInfo>,
    /// ClientIP affinity timeout in seconds, when enabled.
    pub affinity: Option<u32>,
    /// `externalTrafficPolicy: Local` (only meaningful with external addresses or NodePorts).
    pub external_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// `healthCheckNodePort`, if allocated.
    pub health_check_node_port: Option<u16>,
    /// Topology-aware routing requested (trafficDistribution PreferClose or the annotation).
    pub prefer_close: bool,
}

/// What a Service is to the proxy.
pub enum ServiceClass {
    /// Programmed.
    Proxied(Box<ServiceInfo>),
    /// Legitimately not the proxy's business (headless, ExternalName, another proxy's).
    Ignored,
}

fn port_u16(value: i32, what: &str) -> Result<u16, String> {
    u16::try_from(value)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{what} {value} is not in 1..=65535"))
}

fn parse_ip(text: &str, what: &str) -> Result<IpAddr, String> {
    text.parse()
        .map_err(|_| format!("{what} {text:?} is not an IP address"))
}

impl ServiceInfo {
    /// Validate a Service; `Err` carries the reason it is rejected.
    pub fn classify(svc: &Service, proxy_name: Option<&str>) -> Result<ServiceClass, String> {
        let meta = &svc.metadata;
        let wanted = meta
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_PROXY_NAME_LABEL))
            .map(String::as_str);
        if wanted != proxy_name {
            return Ok(ServiceClass::Ignored);
        }
        let Some(spec) = &svc.spec else {
            return Ok(ServiceClass::Ignored);
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            return Ok(ServiceClass::Ignored);
        }
        let raw_ips: Vec<&str> = match (&spec.cluster_ips, &spec.cluster_ip) {
            (Some(ips), _) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
            (_, Some(ip)) => vec![ip.as_str()],
            _ => Vec::new(),
        };
        if raw_ips.is_empty() || raw_ips.iter().any(|ip| *ip == "None" || ip.is_empty()) {
            return Ok(ServiceClass::Ignored);
        }
        let ns_text = meta.namespace.clone().unwrap_or_default();
        let name_text = meta.name.clone().unwrap_or_default();
        let namespace = Label::new(&ns_text)
            .ok_or_else(|| format!("namespace {ns_text:?} is not a DNS label"))?;
        let name = Label::new(&name_text)
            .ok_or_else(|| format!("name {name_text:?} is not a DNS label"))?;
        let cluster_ips = raw_ips
            .iter()
            .map(|ip| parse_ip(ip, "clusterIP"))
            .collect::<Result<Vec<_>, _>>()?;
        if cluster_ips.len() > 2
            || (cluster_ips.len() == 2
                && IpFamily::of(&cluster_ips[0]) == IpFamily::of(&cluster_ips[1]))
        {
            return Err("clusterIPs must be at most one address per family".to_owned());
        }
        let external_ips = spec
            .external_ips
            .iter()
            .flatten()
            .map(|ip| parse_ip(ip, "externalIP"))
            .collect::<Result<Vec<_>, _>>()?;
        let lb_ips = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter(|ing| ing.ip_mode.as_deref() != Some("Proxy"))
            .filter_map(|ing| ing.ip.as_deref())
            .map(|ip| parse_ip(ip, "load balancer ingress IP"))
            .collect::<Result<Vec<_>, _>>()?;
        let source_ranges = spec
            .load_balancer_source_ranges
            .iter()
            .flatten()
            .map(|r| {
                r.trim()
                    .parse::<IpNet>()
                    .map(|n| n.trunc())
                    .map_err(|_| format!("loadBalancerSourceRange {r:?} is not a CIDR"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let raw_ports = spec.ports.as_deref().unwrap_or_default();
        if raw_ports.len() > MAX_PORTS {
            return Err(format!("{} ports (at most {MAX_PORTS})", raw_ports.len()));
        }
        let mut ports: Vec<PortInfo> = Vec::with_capacity(raw_ports.len());
        for p in raw_ports {
            let name = p.name.clone().unwrap_or_default();
            if !name.is_empty() && Label::new(&name).is_none() {
                return Err(format!("port name {name:?} is not a DNS label"));
            }
            let proto = Proto::parse(p.protocol.as_deref())
                .ok_or_else(|| format!("unknown protocol {:?}", p.protocol))?;
            let info = PortInfo {
                name,
                proto,
                port: port_u16(p.port, "port")?,
                node_port: p.node_port.map(|n| port_u16(n, "nodePort")).transpose()?,
            };
            if ports
                .iter()
                .any(|q| q.name == info.name || (q.proto, q.port) == (info.proto, info.port))
            {
                return Err(format!(
                    "duplicate port {:?} {}/{}",
                    info.name,
                    info.proto.nft(),
                    info.port
                ));
            }
            ports.push(info);
        }
        let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .filter(|t| (1..=86400).contains(t))
                .unwrap_or(DEFAULT_AFFINITY_SECONDS)
        });
        let topology_mode = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(TOPOLOGY_MODE_ANNOTATION))
            .map(String::as_str);
        Ok(ServiceClass::Proxied(Box::new(ServiceInfo {
            key: (ns_text, name_text),
            namespace,
            name,
            cluster_ips,
            external_ips,
            lb_ips,
            source_ranges,
            ports,
            affinity,
            external_local: spec.external_traffic_policy.as_deref() == Some("Local"),
            internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
            health_check_node_port: spec
                .health_check_node_port
                .map(|p| port_u16(p, "healthCheckNodePort"))
                .transpose()?,
            prefer_close: spec.traffic_distribution.as_deref() == Some("PreferClose")
                || matches!(topology_mode, Some("Auto" | "auto")),
        })))
    }
}

/// One endpoint address of a slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    /// Its (first) address.
    pub ip: IpAddr,
    /// `conditions.ready` (unset = true).
    pub ready: bool,
    /// `conditions.serving` (unset = ready).
    pub serving: bool,
    /// `conditions.terminating` (unset = false).
    pub terminating: bool,
    /// On this node.
    pub local: bool,
    /// `hints.forZones` names, `None` without hints.
    pub zone_hints: Option<Vec<String>>,
}

/// An EndpointSlice as the planner needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceInfo {
    /// The Service it belongs to.
    pub service: ServiceKey,
    /// Its address family.
    pub family: IpFamily,
    /// Ports: name, protocol, number.
    pub ports: Vec<(String, Proto, u16)>,
    /// Endpoints (duplicates dropped).
    pub endpoints: Vec<EndpointInfo>,
}

impl SliceInfo {
    /// Validate a slice; `Ok(None)` for slices the proxy ignores (FQDN, no Service label).
    pub fn parse(slice: &EndpointSlice, node_name: &str) -> Result<Option<SliceInfo>, String> {
        let meta = &slice.metadata;
        let labels = meta.labels.as_ref();
        let Some(service) = labels.and_then(|l| l.get(SERVICE_NAME_LABEL)) else {
            return Ok(None);
        };
        if labels.is_some_and(|l| l.contains_key(HEADLESS_LABEL)) {
            return Ok(None);
        }
        let family = match slice.address_type.as_str() {
            "IPv4" => IpFamily::V4,
            "IPv6" => IpFamily::V6,
            _ => return Ok(None),
        };
        if slice.endpoints.len() > MAX_SLICE_ENDPOINTS {
            return Err(format!(
                "{} endpoints (at most {MAX_SLICE_ENDPOINTS})",
                slice.endpoints.len()
            ));
        }
        let mut ports = Vec::new();
        for p in slice.ports.iter().flatten() {
            let proto = Proto::parse(p.protocol.as_deref())
                .ok_or_else(|| format!("unknown protocol {:?}", p.protocol))?;
            let Some(port) = p.port else { continue };
            ports.push((
                p.name.clone().unwrap_or_default(),
                proto,
                port_u16(port, "port")?,
            ));
        }
        let mut endpoints: BTreeMap<IpAddr, EndpointInfo> = BTreeMap::new();
        for ep in &slice.endpoints {
            let Some(first) = ep.addresses.first() else {
                continue;
            };
            let ip = parse_ip(first, "endpoint address")?;
            if IpFamily::of(&ip) != family {
                return Err(format!(
                    "address {ip} does not match addressType {}",
                    slice.address_type
                ));
            }
            let cond = ep.conditions.as_ref();
            let ready = cond.and_then(|c| c.ready).unwrap_or(true);
            let zone_hints = ep
                .hints
                .as_ref()
                .and_then(|h| h.for_zones.as_ref())
                .map(|zones| zones.iter().map(|z| z.name.clone()).collect());
            // A duplicate address keeps its first entry (the slice controller never makes them).
            endpoints.entry(ip).or_insert(EndpointInfo {
                ip,
                ready,
                serving: cond.and_then(|c| c.serving).unwrap_or(ready),
                terminating: cond.and_then(|c| c.terminating).unwrap_or(false),
                local: !node_name.is_empty() && ep.node_name.as_deref() == Some(node_name),
                zone_hints,
            });
        }
        Ok(Some(SliceInfo {
            service: (meta.namespace.clone().unwrap_or_default(), service.clone()),
            family,
            ports,
            endpoints: endpoints.into_values().collect(),
        }))
    }
}
