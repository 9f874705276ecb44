//! Kubernetes objects → the records of the cluster zone (DNS-Based Service Discovery spec).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::names::{dashed, reverse, valid_label};
use super::Rec;
use crate::config::PodRecords;

/// The label tying an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Mutable record table while building; keys are lowercase names without the trailing dot.
pub(super) struct Builder<'a> {
    zone: &'a str,
    pub(super) records: HashMap<Box<str>, Vec<Rec>>,
    pub(super) namespaces: HashMap<Box<str>, ()>,
}

impl<'a> Builder<'a> {
    /// An empty table for `zone`.
    pub(super) fn new(zone: &'a str, capacity: usize) -> Self {
        Self {
            zone,
            records: HashMap::with_capacity(capacity),
            namespaces: HashMap::new(),
        }
    }

    fn add(&mut self, key: String, rec: Rec) {
        self.records
            .entry(key.into_boxed_str())
            .or_default()
            .push(rec);
    }

    fn ensure(&mut self, key: String) {
        self.records.entry(key.into_boxed_str()).or_default();
    }

    /// Adds one Service with the ready endpoints of its slices (headless) or its ClusterIPs.
    pub(super) fn service(&mut self, svc: &Service, slices: &[&EndpointSlice]) {
        let (Some(name), Some(ns)) = (
            svc.metadata.name.as_deref(),
            svc.metadata.namespace.as_deref(),
        ) else {
            return;
        };
        if !valid_label(name) || !valid_label(ns) {
            return;
        }
        let Some(spec) = svc.spec.as_ref() else {
            return;
        };
        let name = name.to_ascii_lowercase();
        let ns = ns.to_ascii_lowercase();
        self.namespaces.insert(ns.clone().into_boxed_str(), ());
        let svc_key = format!("{name}.{ns}.svc.{}", self.zone);
        let target: Arc<str> = Arc::from(svc_key.as_str());

        if spec.type_.as_deref() == Some("ExternalName") {
            if let Some(ext) = spec.external_name.as_deref() {
                let ext = ext.trim_end_matches('.').to_ascii_lowercase();
                if !ext.is_empty() && ext.split('.').all(valid_label) {
                    self.add(svc_key, Rec::Cname(Arc::from(ext)));
                }
            }
            return;
        }

        let cluster_ips: Vec<IpAddr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .filter_map(|ip| ip.parse().ok())
            .collect();
        let headless = spec.cluster_ip.as_deref() == Some("None") || cluster_ips.is_empty();
        if !headless {
            for ip in &cluster_ips {
                self.add(svc_key.clone(), Rec::Addr(*ip));
                self.add(reverse(*ip), Rec::Ptr(target.clone()));
            }
            for port in spec.ports.iter().flatten() {
                let (Some(pname), Ok(number)) = (port.name.as_deref(), u16::try_from(port.port))
                else {
                    continue;
                };
                if let Some(key) = srv_key(pname, port.protocol.as_deref(), &svc_key) {
                    self.add(
                        key,
                        Rec::Srv {
                            port: number,
                            target: target.clone(),
                        },
                    );
                }
            }
            self.ensure(svc_key);
            return;
        }

        let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
        for slice in slices {
            if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
                continue;
            }
            for ep in &slice.endpoints {
                let ready = ep.conditions.as_ref().and_then(|c| c.ready) != Some(false);
                if !ready && !publish_not_ready {
                    continue;
                }
                let hostname = ep
                    .hostname
                    .as_deref()
                    .filter(|h| valid_label(h))
                    .map(str::to_ascii_lowercase);
                for ip in ep.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
                    let label = hostname.clone().unwrap_or_else(|| dashed(ip));
                    let ep_key = format!("{label}.{svc_key}");
                    let ep_target: Arc<str> = Arc::from(ep_key.as_str());
                    self.add(svc_key.clone(), Rec::Addr(ip));
                    self.add(ep_key, Rec::Addr(ip));
                    self.add(reverse(ip), Rec::Ptr(ep_target.clone()));
                    for port in slice.ports.iter().flatten() {
                        let (Some(pname), Some(Ok(number))) =
                            (port.name.as_deref(), port.port.map(u16::try_from))
                        else {
                            continue;
                        };
                        if let Some(key) = srv_key(pname, port.protocol.as_deref(), &svc_key) {
                            self.add(
                                key,
                                Rec::Srv {
                                    port: number,
                                    target: ep_target.clone(),
                                },
                            );
                        }
                    }
                }
            }
        }
        // A headless Service without ready endpoints still exists (NODATA, not NXDOMAIN).
        self.ensure(svc_key);
    }

    /// Adds the verified pod record of one pod (`a-b-c-d.<ns>.pod.<zone>`).
    pub(super) fn pod(&mut self, pod: &Pod, mode: PodRecords) {
        let Some(ns) = pod
            .metadata
            .namespace
            .as_deref()
            .filter(|ns| valid_label(ns))
        else {
            return;
        };
        let ns = ns.to_ascii_lowercase();
        self.namespaces.insert(ns.clone().into_boxed_str(), ());
        // Host-network pods carry the node's address, which is not theirs to name.
        let host_network = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        if mode != PodRecords::Verified || host_network {
            return;
        }
        let Some(status) = pod.status.as_ref() else {
            return;
        };
        let ips = status
            .pod_ips
            .iter()
            .flatten()
            .map(|p| p.ip.as_str())
            .chain(status.pod_ip.as_deref());
        for ip in ips.filter_map(|ip| ip.parse::<IpAddr>().ok()) {
            self.add(
                format!("{}.{ns}.pod.{}", dashed(ip), self.zone),
                Rec::Addr(ip),
            );
        }
    }
}

/// `_<port>._<proto>.<svc key>` for a named port, `None` for names that are no label.
fn srv_key(port_name: &str, protocol: Option<&str>, svc_key: &str) -> Option<String> {
    let proto = protocol.unwrap_or("TCP").to_ascii_lowercase();
    (valid_label(port_name) && valid_label(&proto))
        .then(|| format!("_{}._{proto}.{svc_key}", port_name.to_ascii_lowercase()))
}

/// Groups EndpointSlices by (namespace, service name).
pub(super) fn slices_by_service(
    slices: &[Arc<EndpointSlice>],
) -> HashMap<(&str, &str), Vec<&EndpointSlice>> {
    let mut map: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for slice in slices {
        let ns = slice.metadata.namespace.as_deref();
        let svc = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .map(String::as_str);
        if let (Some(ns), Some(svc)) = (ns, svc) {
            map.entry((ns, svc)).or_default().push(slice);
        }
    }
    map
}
