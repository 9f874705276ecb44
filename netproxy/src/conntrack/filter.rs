//! Which conntrack entries a cleanup deletes (pure, no kernel).

use std::net::IpAddr;

use super::wire::{Family, Flow};

/// IP protocol number of UDP.
const IPPROTO_UDP: u8 = 17;

/// A selection of UDP flows to delete, mirroring kube-proxy's conntrack cleanup filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowFilter {
    /// Flows a client sent to `vip:port`, optionally only those DNATed to `endpoint`.
    Service {
        /// The Service address (ClusterIP, external IP, load-balancer IP or node IP).
        vip: IpAddr,
        /// The Service (or node) port.
        port: u16,
        /// Only flows whose replies come from this endpoint.
        endpoint: Option<IpAddr>,
    },
    /// Flows DNATed to `endpoint`, whatever address the client used.
    Endpoint(IpAddr),
}

impl FlowFilter {
    /// The family whose table has to be dumped.
    pub fn family(&self) -> Family {
        match self {
            FlowFilter::Service { vip, .. } => Family::of(*vip),
            FlowFilter::Endpoint(endpoint) => Family::of(*endpoint),
        }
    }

    /// Whether `flow` is to be deleted.
    pub fn matches(&self, flow: &Flow) -> bool {
        if flow.protocol != IPPROTO_UDP {
            return false;
        }
        match *self {
            FlowFilter::Service {
                vip,
                port,
                endpoint,
            } => {
                flow.original.dst == vip
                    && flow.original.dst_port == port
                    && endpoint.is_none_or(|e| flow.reply.src == e)
            }
            // Only DNATed flows: direct traffic to the pod is not the proxy's to cut.
            FlowFilter::Endpoint(endpoint) => flow.dst_nat && flow.reply.src == endpoint,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::wire::FlowTuple;

    fn flow(protocol: u8, vip: &str, port: u16, endpoint: &str, dst_nat: bool) -> Flow {
        let client: IpAddr = "10.0.0.1".parse().unwrap();
        Flow {
            protocol,
            original: FlowTuple {
                src: client,
                dst: vip.parse().unwrap(),
                src_port: 40000,
                dst_port: port,
            },
            reply: FlowTuple {
                src: endpoint.parse().unwrap(),
                dst: client,
                src_port: 5353,
                dst_port: 40000,
            },
            dst_nat,
            zone: None,
        }
    }

    #[test]
    fn service_filter_matches_vip_port_and_udp_only() {
        let filter = FlowFilter::Service {
            vip: "10.96.0.10".parse().unwrap(),
            port: 53,
            endpoint: None,
        };
        assert!(filter.matches(&flow(17, "10.96.0.10", 53, "10.244.0.5", true)));
        assert!(
            !filter.matches(&flow(6, "10.96.0.10", 53, "10.244.0.5", true)),
            "TCP"
        );
        assert!(
            !filter.matches(&flow(17, "10.96.0.10", 54, "10.244.0.5", true)),
            "port"
        );
        assert!(
            !filter.matches(&flow(17, "10.96.0.11", 53, "10.244.0.5", true)),
            "vip"
        );
    }

    #[test]
    fn service_filter_with_endpoint_matches_only_that_backend() {
        let filter = FlowFilter::Service {
            vip: "fd00:96::a".parse().unwrap(),
            port: 53,
            endpoint: Some("fd00:244::5".parse().unwrap()),
        };
        assert_eq!(filter.family(), Family::V6);
        assert!(filter.matches(&flow(17, "fd00:96::a", 53, "fd00:244::5", true)));
        assert!(!filter.matches(&flow(17, "fd00:96::a", 53, "fd00:244::6", true)));
    }

    #[test]
    fn endpoint_filter_needs_dnat_to_that_endpoint() {
        let filter = FlowFilter::Endpoint("10.244.0.5".parse().unwrap());
        assert_eq!(filter.family(), Family::V4);
        assert!(filter.matches(&flow(17, "192.168.1.2", 30053, "10.244.0.5", true)));
        assert!(
            !filter.matches(&flow(17, "10.244.0.5", 5353, "10.244.0.5", false)),
            "direct"
        );
        assert!(!filter.matches(&flow(17, "192.168.1.2", 30053, "10.244.0.6", true)));
        assert!(!filter.matches(&flow(6, "192.168.1.2", 30053, "10.244.0.5", true)));
    }
}
