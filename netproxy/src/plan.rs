//! Pure planning: one Service (and its slices' endpoints) → the chains, map/set elements and
//! affinity sets it contributes to one family's table. No I/O; unit-tested without root.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::{EndpointInfo, IpFamily, PortInfo, Proto, ServiceInfo, SliceInfo};
use crate::names::{addr_token, short_hash};

/// Chain every no-endpoint reject goes to.
pub const REJECT_CHAIN: &str = "reject-chain";
/// Chain that sets the masquerade mark bit.
pub const MARK_CHAIN: &str = "mark-for-masquerade";

/// The table's maps and sets that services add elements to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Coll {
    /// `daddr . l4proto . dport : verdict` for ClusterIPs, externalIPs and LB IPs.
    ServiceIps,
    /// `l4proto . dport : verdict` for NodePorts on the nodeport addresses.
    ServiceNodeports,
    /// `daddr . l4proto . dport : verdict` rejecting or dropping service IPs without endpoints.
    NoEndpointServices,
    /// `l4proto . dport : verdict` rejecting or dropping NodePorts without endpoints.
    NoEndpointNodeports,
    /// `daddr . l4proto . dport : verdict` of LB IPs with source ranges.
    FirewallIps,
    /// Set of all ClusterIPs (traffic to their unused ports is rejected).
    ClusterIps,
    /// Set of local addresses that accept NodePorts.
    NodeportIps,
}

impl Coll {
    /// Every collection, in declaration order.
    pub const ALL: [Coll; 7] = [
        Coll::ServiceIps,
        Coll::ServiceNodeports,
        Coll::NoEndpointServices,
        Coll::NoEndpointNodeports,
        Coll::FirewallIps,
        Coll::ClusterIps,
        Coll::NodeportIps,
    ];

    /// Its name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Coll::ServiceIps => "service-ips",
            Coll::ServiceNodeports => "service-nodeports",
            Coll::NoEndpointServices => "no-endpoint-services",
            Coll::NoEndpointNodeports => "no-endpoint-nodeports",
            Coll::FirewallIps => "firewall-ips",
            Coll::ClusterIps => "cluster-ips",
            Coll::NodeportIps => "nodeport-ips",
        }
    }

    /// The collection with this table name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Whether it is a verdict map (else a plain set).
    pub fn is_map(self) -> bool {
        !matches!(self, Coll::ClusterIps | Coll::NodeportIps)
    }

    /// Its nft key type in `family`.
    pub fn key_type(self, family: IpFamily) -> &'static str {
        let addr = match family {
            IpFamily::V4 => "ipv4_addr",
            IpFamily::V6 => "ipv6_addr",
        };
        match (self, family) {
            (Coll::ServiceNodeports | Coll::NoEndpointNodeports, _) => "inet_proto . inet_service",
            (Coll::ClusterIps | Coll::NodeportIps, _) => addr,
            (_, IpFamily::V4) => "ipv4_addr . inet_proto . inet_service",
            (_, IpFamily::V6) => "ipv6_addr . inet_proto . inet_service",
        }
    }
}

/// One map or set element: key text and verdict text ("" for set elements).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Element {
    /// The collection.
    pub coll: Coll,
    /// The key as nft prints it (`10.96.0.1 . tcp . 80`).
    pub key: String,
    /// The verdict (`goto svc-...`, `drop`), "" for sets.
    pub value: String,
}

/// A UDP service port's addresses and endpoints, to find conntrack entries gone stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpPort {
    /// Service addresses (ClusterIP, externalIPs, LB IPs).
    pub vips: Vec<IpAddr>,
    /// The service port.
    pub port: u16,
    /// Endpoint addresses traffic can reach.
    pub endpoints: BTreeSet<IpAddr>,
}

/// Everything one Service contributes to one family's table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServicePlan {
    /// Regular chains: name and rules.
    pub chains: Vec<(String, Vec<String>)>,
    /// Map and set elements.
    pub elements: Vec<Element>,
    /// ClientIP affinity sets: name and timeout in seconds.
    pub affinity_sets: Vec<(String, u32)>,
    /// UDP ports (for stale conntrack cleanup).
    pub udp: Vec<UdpPort>,
    /// Local ready endpoints, for externalTrafficPolicy Local with a healthCheckNodePort.
    pub local_endpoints: Option<usize>,
    /// internalTrafficPolicy Local but no local endpoint.
    pub no_local_internal: bool,
    /// externalTrafficPolicy Local with external addresses but no local endpoint.
    pub no_local_external: bool,
}

/// Node-wide inputs of planning for one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanContext {
    /// The family being planned.
    pub family: IpFamily,
    /// clusterCIDRs of this family.
    pub cluster_cidrs: Vec<IpNet>,
    /// Masquerade all service traffic.
    pub masquerade_all: bool,
    /// The node's zone (topology-aware routing).
    pub zone: Option<String>,
    /// NodePorts are served in this family (some nodeport address of it exists).
    pub nodeports: bool,
}

/// An endpoint with the target port this service port resolves to on it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target<'a> {
    ep: &'a EndpointInfo,
    port: u16,
}

/// The endpoints of `port` in `slices` (this family): named ports resolve per slice.
fn targets<'a>(port: &PortInfo, family: IpFamily, slices: &[&'a SliceInfo]) -> Vec<Target<'a>> {
    let mut out: Vec<Target<'a>> = Vec::new();
    for slice in slices.iter().filter(|s| s.family == family) {
        let Some(&(_, _, number)) = slice
            .ports
            .iter()
            .find(|(name, proto, _)| *name == port.name && *proto == port.proto)
        else {
            continue;
        };
        for ep in &slice.endpoints {
            // The same address in two slices (during a move) counts once.
            if !out.iter().any(|t| t.ep.ip == ep.ip && t.port == number) {
                out.push(Target { ep, port: number });
            }
        }
    }
    out.sort_by_key(|t| (t.ep.ip, t.port));
    out
}

/// kube-proxy's rule: ready endpoints, or if none, those serving while terminating.
fn usable<'a>(all: &[Target<'a>], keep: impl Fn(&EndpointInfo) -> bool) -> Vec<Target<'a>> {
    let ready: Vec<Target<'a>> = all
        .iter()
        .filter(|t| keep(t.ep) && t.ep.ready)
        .cloned()
        .collect();
    if !ready.is_empty() {
        return ready;
    }
    all.iter()
        .filter(|t| keep(t.ep) && t.ep.serving && t.ep.terminating)
        .cloned()
        .collect()
}

/// Topology-aware routing (kube-proxy's topology.go): keep the endpoints hinted for this
/// node's zone, but only if every ready endpoint carries hints and some match the zone.
fn by_zone<'a>(cluster: Vec<Target<'a>>, zone: Option<&str>) -> Vec<Target<'a>> {
    let Some(zone) = zone else { return cluster };
    let all_hinted = cluster
        .iter()
        .filter(|t| t.ep.ready)
        .all(|t| t.ep.zone_hints.as_ref().is_some_and(|z| !z.is_empty()));
    let in_zone = |t: &Target<'_>| {
        t.ep.zone_hints
            .as_ref()
            .is_some_and(|z| z.iter().any(|n| n == zone))
    };
    if !all_hinted || !cluster.iter().any(in_zone) {
        return cluster;
    }
    cluster.into_iter().filter(|t| in_zone(t)).collect()
}

fn addr(family: IpFamily) -> &'static str {
    family.nft()
}

fn ip_set(ips: &[IpNet]) -> String {
    let items: Vec<String> = ips.iter().map(ToString::to_string).collect();
    format!("{{ {} }}", items.join(", "))
}

/// Names of one service port's chains.
struct PortNames {
    id: String,
    suffix: String,
}

impl PortNames {
    fn new(svc: &ServiceInfo, port: &PortInfo, family: IpFamily) -> Self {
        let id = format!(
            "{}/{}/{}/{}/{}/{}",
            svc.key.0,
            svc.key.1,
            port.name,
            port.proto.nft(),
            port.port,
            family.nft()
        );
        let suffix = format!(
            "{}-{}-{}-{}",
            svc.namespace,
            svc.name,
            port.proto.nft(),
            port.port
        );
        Self { id, suffix }
    }

    fn chain(&self, prefix: &str) -> String {
        format!(
            "{prefix}-{}-{}",
            short_hash(&[&self.id, prefix]),
            self.suffix
        )
    }

    fn endpoint(&self, t: &Target<'_>) -> (String, String) {
        let hash = short_hash(&[&self.id, &t.ep.ip.to_string(), &t.port.to_string()]);
        (
            format!(
                "ep-{hash}-{}-{}-{}",
                self.suffix,
                addr_token(t.ep.ip),
                t.port
            ),
            format!("aff-{hash}"),
        )
    }
}

/// Rules of a chain dispatching to `targets` (affinity lookups first, then random choice).
fn dispatch(
    names: &PortNames,
    family: IpFamily,
    targets: &[Target<'_>],
    affinity: bool,
    rules: &mut Vec<String>,
) {
    let chains: Vec<(String, String)> = targets.iter().map(|t| names.endpoint(t)).collect();
    if affinity {
        for (ep, aff) in &chains {
            rules.push(format!("{} saddr @{aff} goto {ep}", addr(family)));
        }
    }
    match chains.as_slice() {
        [] => {}
        [(ep, _)] => rules.push(format!("goto {ep}")),
        many => {
            let arms: Vec<String> = many
                .iter()
                .enumerate()
                .map(|(i, (ep, _))| format!("{i} : goto {ep}"))
                .collect();
            rules.push(format!(
                "numgen random mod {} vmap {{ {} }}",
                many.len(),
                arms.join(", ")
            ));
        }
    }
}

fn endpoint_chain(
    family: IpFamily,
    proto: Proto,
    t: &Target<'_>,
    aff: Option<&str>,
) -> Vec<String> {
    let fam = addr(family);
    let mut rules = vec![format!("{fam} saddr {} jump {MARK_CHAIN}", t.ep.ip)];
    if let Some(set) = aff {
        rules.push(format!("update @{set} {{ {fam} saddr }}"));
    }
    let dest = match t.ep.ip {
        IpAddr::V4(ip) => format!("{ip}:{}", t.port),
        IpAddr::V6(ip) => format!("[{ip}]:{}", t.port),
    };
    rules.push(format!("meta l4proto {} dnat to {dest}", proto.nft()));
    rules
}

/// Plan `svc` for `ctx.family` with its slices (any family; others are skipped).
pub fn plan_service(ctx: &PlanContext, svc: &ServiceInfo, slices: &[&SliceInfo]) -> ServicePlan {
    let family = ctx.family;
    let fam = addr(family);
    let mine = |ips: &[IpAddr]| -> Vec<IpAddr> {
        ips.iter()
            .copied()
            .filter(|ip| IpFamily::of(ip) == family)
            .collect()
    };
    let cluster_ips = mine(&svc.cluster_ips);
    let mut external = mine(&svc.external_ips);
    let lb_ips = mine(&svc.lb_ips);
    external.extend(lb_ips.iter().copied());
    let mut plan = ServicePlan::default();
    if cluster_ips.is_empty() {
        return plan;
    }
    for ip in &cluster_ips {
        plan.elements.push(Element {
            coll: Coll::ClusterIps,
            key: ip.to_string(),
            value: String::new(),
        });
    }
    let mut local_ready: BTreeSet<IpAddr> = BTreeSet::new();
    for port in &svc.ports {
        let names = PortNames::new(svc, port, family);
        let all = targets(port, family, slices);
        let cluster = by_zone(
            usable(&all, |_| true),
            ctx.zone.as_deref().filter(|_| svc.prefer_close),
        );
        let local = usable(&all, |ep| ep.local);
        local_ready.extend(local.iter().filter(|t| t.ep.ready).map(|t| t.ep.ip));
        let has_external = !external.is_empty() || (ctx.nodeports && port.node_port.is_some());
        let internal_targets = if svc.internal_local { &local } else { &cluster };
        let external_targets = if svc.external_local { &local } else { &cluster };
        let any = !cluster.is_empty() || !local.is_empty();
        plan.no_local_internal |= svc.internal_local && local.is_empty();
        plan.no_local_external |= svc.external_local && has_external && local.is_empty();
        let svc_chain = names.chain("svc");
        let svl_chain = names.chain("svl");
        let ext_chain = names.chain("ext");
        let affinity = svc.affinity.is_some();
        let kp = format!("{} . {}", port.proto.nft(), port.port);
        let reject = |targets: &Vec<Target<'_>>| -> Option<String> {
            if !targets.is_empty() {
                None
            } else if any {
                Some("drop".to_owned())
            } else {
                Some(format!("goto {REJECT_CHAIN}"))
            }
        };

        // Endpoint chains for every endpoint some dispatch chain can reach.
        let mut used: Vec<&Target<'_>> = Vec::new();
        // The cluster chain serves internal traffic (Cluster policy) and external traffic
        // (Cluster policy, or pods and the node itself under Local policy).
        let uses_cluster = !cluster.is_empty() && (!svc.internal_local || has_external);
        let uses_local =
            (svc.internal_local || (has_external && svc.external_local)) && !local.is_empty();
        if uses_cluster {
            used.extend(cluster.iter());
        }
        if uses_local {
            used.extend(local.iter());
        }
        used.sort_by_key(|t| (t.ep.ip, t.port));
        used.dedup_by_key(|t| (t.ep.ip, t.port));
        for t in &used {
            let (ep, aff) = names.endpoint(t);
            if let Some(timeout) = svc.affinity {
                plan.affinity_sets.push((aff.clone(), timeout));
            }
            plan.chains.push((
                ep,
                endpoint_chain(family, port.proto, t, affinity.then_some(aff.as_str())),
            ));
        }
        if uses_cluster {
            let mut rules = Vec::new();
            for ip in &cluster_ips {
                let guard = format!("{fam} daddr {ip} {} dport {}", port.proto.nft(), port.port);
                if ctx.masquerade_all {
                    rules.push(format!("{guard} jump {MARK_CHAIN}"));
                } else if !ctx.cluster_cidrs.is_empty() {
                    rules.push(format!(
                        "{guard} {fam} saddr != {} jump {MARK_CHAIN}",
                        ip_set(&ctx.cluster_cidrs)
                    ));
                }
            }
            dispatch(&names, family, &cluster, affinity, &mut rules);
            plan.chains.push((svc_chain.clone(), rules));
        }
        if uses_local {
            let mut rules = Vec::new();
            dispatch(&names, family, &local, affinity, &mut rules);
            plan.chains.push((svl_chain.clone(), rules));
        }
        let internal_chain = if svc.internal_local {
            &svl_chain
        } else {
            &svc_chain
        };
        for ip in &cluster_ips {
            let key = format!("{ip} . {kp}");
            match reject(internal_targets) {
                None => plan.elements.push(Element {
                    coll: Coll::ServiceIps,
                    key,
                    value: format!("goto {internal_chain}"),
                }),
                Some(v) => plan.elements.push(Element {
                    coll: Coll::NoEndpointServices,
                    key,
                    value: v,
                }),
            }
        }
        if has_external {
            if !external_targets.is_empty() {
                let mut rules = Vec::new();
                if svc.external_local {
                    // Pods and the node itself reaching an external address get cluster-wide
                    // endpoints (kube-proxy's short-circuit); only outside clients stay local.
                    if !ctx.cluster_cidrs.is_empty() && uses_cluster {
                        rules.push(format!(
                            "{fam} saddr {} goto {svc_chain}",
                            ip_set(&ctx.cluster_cidrs)
                        ));
                    }
                    if uses_cluster {
                        rules.push(format!("fib saddr type local jump {MARK_CHAIN}"));
                        rules.push(format!("fib saddr type local goto {svc_chain}"));
                    }
                    rules.push(format!("goto {svl_chain}"));
                } else {
                    rules.push(format!("jump {MARK_CHAIN}"));
                    rules.push(format!("goto {svc_chain}"));
                }
                plan.chains.push((ext_chain.clone(), rules));
            }
            for ip in &external {
                let key = format!("{ip} . {kp}");
                match reject(external_targets) {
                    None => plan.elements.push(Element {
                        coll: Coll::ServiceIps,
                        key,
                        value: format!("goto {ext_chain}"),
                    }),
                    Some(v) => plan.elements.push(Element {
                        coll: Coll::NoEndpointServices,
                        key,
                        value: v,
                    }),
                }
            }
            if let (true, Some(np)) = (ctx.nodeports, port.node_port) {
                let key = format!("{} . {np}", port.proto.nft());
                match reject(external_targets) {
                    None => plan.elements.push(Element {
                        coll: Coll::ServiceNodeports,
                        key,
                        value: format!("goto {ext_chain}"),
                    }),
                    Some(v) => plan.elements.push(Element {
                        coll: Coll::NoEndpointNodeports,
                        key,
                        value: v,
                    }),
                }
            }
            if !svc.source_ranges.is_empty() && !lb_ips.is_empty() {
                let ranges: Vec<IpNet> = svc
                    .source_ranges
                    .iter()
                    .copied()
                    .filter(|r| {
                        matches!(
                            (r, family),
                            (IpNet::V4(_), IpFamily::V4) | (IpNet::V6(_), IpFamily::V6)
                        )
                    })
                    .collect();
                let fw_chain = names.chain("fw");
                let mut rules = Vec::new();
                if !ranges.is_empty() {
                    rules.push(format!("{fam} saddr {} return", ip_set(&ranges)));
                }
                rules.push("drop".to_owned());
                plan.chains.push((fw_chain.clone(), rules));
                for ip in &lb_ips {
                    plan.elements.push(Element {
                        coll: Coll::FirewallIps,
                        key: format!("{ip} . {kp}"),
                        value: format!("goto {fw_chain}"),
                    });
                }
            }
        }
        if port.proto == Proto::Udp {
            let mut vips = cluster_ips.clone();
            vips.extend(external.iter().copied());
            plan.udp.push(UdpPort {
                vips,
                port: port.port,
                endpoints: used.iter().map(|t| t.ep.ip).collect(),
            });
        }
    }
    if svc.external_local && svc.health_check_node_port.is_some() {
        plan.local_endpoints = Some(local_ready.len());
    }
    plan
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
