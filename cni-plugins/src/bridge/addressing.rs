//! From the IPAM result to what ADD applies and reports: gateways filled in, addresses tagged
//! with the container interface, default routes added, and the bridge's gateway addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::code;
use super::config::BridgeConf;
use crate::error::CniError;
use crate::types::{from_bits, to_bits, CniResult, IpConfig, IpNet, Route};

/// Index of the container interface in the result (after the bridge and the host veth).
pub const CONTAINER_INTERFACE: usize = 2;

/// Addressing of one attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Container addresses, as reported.
    pub ips: Vec<IpConfig>,
    /// Routes, as reported (gateways may be implicit).
    pub routes: Vec<Route>,
    /// Gateway addresses (with their subnet's prefix) for the bridge.
    pub bridge_addrs: Vec<IpNet>,
    /// The pod subnets (network addresses), for masquerading.
    pub subnets: Vec<IpNet>,
}

impl Plan {
    /// Plan from `ipam`'s result the way the reference bridge plugin does.
    pub fn new(conf: &BridgeConf, ipam: &CniResult) -> Result<Self, CniError> {
        if ipam.ips.is_empty() {
            return Err(CniError::new(
                code::IPAM_RESULT,
                format!("IPAM plugin {:?} returned no addresses", conf.ipam_type),
                "",
            ));
        }
        let mut plan = Self {
            ips: Vec::new(),
            routes: ipam.routes.clone(),
            bridge_addrs: Vec::new(),
            subnets: Vec::new(),
        };
        for ip in &ipam.ips {
            let mut ip = ip.clone();
            ip.interface = Some(CONTAINER_INTERFACE);
            ip.version = None;
            if ip.gateway.is_none() && conf.is_gateway {
                ip.gateway = Some(first_host(ip.address));
            }
            if ip.gateway == Some(ip.address.addr) {
                return Err(CniError::new(
                    code::IPAM_RESULT,
                    format!(
                        "IPAM assigned the gateway address {} to the container",
                        ip.address
                    ),
                    "",
                ));
            }
            let subnet = IpNet {
                addr: ip.address.network(),
                prefix: ip.address.prefix,
            };
            push_unique(&mut plan.subnets, subnet);
            if let (true, Some(gw)) = (conf.is_gateway, ip.gateway) {
                push_unique(
                    &mut plan.bridge_addrs,
                    IpNet {
                        addr: gw,
                        prefix: ip.address.prefix,
                    },
                );
            }
            plan.ips.push(ip);
        }
        if conf.is_default_gateway {
            plan.add_default_routes();
        }
        Ok(plan)
    }

    /// A default route via the gateway for each family that has none with a gateway.
    fn add_default_routes(&mut self) {
        for v6 in [false, true] {
            let Some(gw) = family_gateway(&self.ips, v6) else {
                continue;
            };
            let default = default_net(v6);
            if !self
                .routes
                .iter()
                .any(|r| r.dst == default && r.gw.is_some())
            {
                self.routes.push(Route {
                    dst: default,
                    gw: Some(gw),
                    mtu: None,
                    priority: None,
                });
            }
        }
    }

    /// Whether some address is of the family.
    pub fn has_family(&self, v6: bool) -> bool {
        self.ips.iter().any(|ip| ip.address.addr.is_ipv6() == v6)
    }
}

/// The routes to install in the container: each with its gateway resolved (the family's
/// gateway when the route names none) and duplicates dropped.
pub fn container_routes(ips: &[IpConfig], routes: &[Route]) -> Vec<Route> {
    let mut out: Vec<Route> = Vec::new();
    for route in routes {
        let mut route = route.clone();
        route.dst = IpNet {
            addr: route.dst.network(),
            prefix: route.dst.prefix,
        };
        if route.gw.is_none() {
            route.gw = family_gateway(ips, route.dst.addr.is_ipv6());
        }
        if !out.iter().any(|r| r.dst == route.dst && r.gw == route.gw) {
            out.push(route);
        }
    }
    out
}

fn family_gateway(ips: &[IpConfig], v6: bool) -> Option<IpAddr> {
    ips.iter()
        .filter(|ip| ip.address.addr.is_ipv6() == v6)
        .find_map(|ip| ip.gateway)
}

fn default_net(v6: bool) -> IpNet {
    let addr = if v6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    IpNet { addr, prefix: 0 }
}

/// The subnet's first host address, the conventional gateway.
fn first_host(net: IpNet) -> IpAddr {
    from_bits(net.addr, to_bits(net.network()).wrapping_add(1))
}

fn push_unique(list: &mut Vec<IpNet>, net: IpNet) {
    if !list.contains(&net) {
        list.push(net);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Dns;

    fn conf(gateway: bool, default_gateway: bool) -> BridgeConf {
        BridgeConf {
            network: "n".into(),
            bridge: "cni0".into(),
            is_gateway: gateway || default_gateway,
            is_default_gateway: default_gateway,
            ip_masq: false,
            hairpin_mode: false,
            promisc_mode: false,
            mtu: None,
            ipam_type: "host-local".into(),
            dns: Dns::default(),
        }
    }

    fn ipam(json: &str) -> CniResult {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn gateways_default_to_the_first_host_and_go_on_the_bridge() {
        let result = ipam(
            r#"{"ips":[{"version":"4","address":"10.1.2.7/24"},{"address":"fd00::5/64","gateway":"fd00::9"}],
                "routes":[{"dst":"0.0.0.0/0"}]}"#,
        );
        let plan = Plan::new(&conf(true, false), &result).unwrap();
        assert_eq!(plan.ips[0].gateway, Some("10.1.2.1".parse().unwrap()));
        assert_eq!(plan.ips[0].interface, Some(2));
        assert_eq!(plan.ips[0].version, None);
        let addrs: Vec<String> = plan.bridge_addrs.iter().map(ToString::to_string).collect();
        assert_eq!(addrs, ["10.1.2.1/24", "fd00::9/64"]);
        assert_eq!(plan.subnets[0].to_string(), "10.1.2.0/24");
        assert_eq!(
            plan.routes.len(),
            1,
            "no default routes without isDefaultGateway"
        );
        let routes = container_routes(&plan.ips, &plan.routes);
        assert_eq!(routes[0].gw, Some("10.1.2.1".parse().unwrap()));

        let plan = Plan::new(
            &conf(false, false),
            &ipam(r#"{"ips":[{"address":"10.1.2.7/24"}]}"#),
        )
        .unwrap();
        assert_eq!(plan.ips[0].gateway, None);
        assert!(plan.bridge_addrs.is_empty());
    }

    #[test]
    fn default_gateway_adds_one_default_route_per_family() {
        let result = ipam(
            r#"{"ips":[{"address":"10.1.2.7/24"},{"address":"fd00::5/64"}],
                "routes":[{"dst":"0.0.0.0/0","gw":"10.1.2.254"}]}"#,
        );
        let plan = Plan::new(&conf(false, true), &result).unwrap();
        let routes: Vec<String> = plan
            .routes
            .iter()
            .map(|r| format!("{} {:?}", r.dst, r.gw.map(|g| g.to_string())))
            .collect();
        assert_eq!(
            routes,
            ["0.0.0.0/0 Some(\"10.1.2.254\")", "::/0 Some(\"fd00::1\")"]
        );
    }

    #[test]
    fn unusable_results_are_rejected() {
        assert_eq!(
            Plan::new(&conf(true, false), &ipam("{}")).unwrap_err().code,
            code::IPAM_RESULT
        );
        let err = Plan::new(
            &conf(true, false),
            &ipam(r#"{"ips":[{"address":"10.0.0.1/24"}]}"#),
        )
        .unwrap_err();
        assert_eq!(err.code, code::IPAM_RESULT);
    }
}
