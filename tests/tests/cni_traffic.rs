//! The CNI traffic suite: pods (network namespaces) attached to a bridge by a plugin chain,
//! checked with real traffic. Every combination of Capstan's and the reference plugins must
//! pass the same suite.

use anyhow::Result;
use tests::podnet::{
    enable_forwarding, reaches, unique_host_port, Httpd, Impl, Outside, Plugins, Pod, PodNetwork,
};

fn traffic_suite(plugins: Plugins) -> Result<()> {
    enable_forwarding()?;
    let net = PodNetwork::new(plugins)?;
    let port = unique_host_port();
    let a = Pod::attach(&net, Some(port))?;
    let b = Pod::attach(&net, None)?;
    assert_ne!(a.ip(false)?, b.ip(false)?, "two pods got one address");

    for v6 in [false, true] {
        let family = if v6 { "IPv6" } else { "IPv4" };
        assert!(reaches(Some(&a.ns), &b.ip(v6)?)?, "pod↔pod over {family}");
        assert!(reaches(Some(&b.ns), &a.ip(v6)?)?, "pod↔pod over {family}");
        assert!(
            reaches(Some(&a.ns), &a.gateway(v6)?)?,
            "pod→host over {family}"
        );
        assert!(reaches(None, &a.ip(v6)?)?, "host→pod over {family}");
    }

    let outside = Outside::new()?;
    assert!(
        reaches(Some(&a.ns), &outside.addr)?,
        "pod→outside the bridge (masquerade)"
    );

    let httpd = Httpd::start(&a.ns)?;
    let node = a.gateway(false)?;
    assert!(
        httpd.served_at(None, &node, port)?,
        "host port from the host"
    );
    assert!(
        httpd.served_at(Some(&b.ns), &node, port)?,
        "host port from another pod"
    );
    assert!(
        httpd.served_at(Some(&a.ns), &node, port)?,
        "a pod reaching itself via its host port (hairpin)"
    );
    let node6 = a.gateway(true)?;
    assert!(
        httpd.served_at(Some(&b.ns), &node6, port)?,
        "host port over IPv6"
    );

    drop(httpd);
    drop(a);
    drop(b);
    let left = allocations(&net);
    assert!(left.is_empty(), "allocations left after DEL: {left:?}");
    Ok(())
}

/// IP allocation files left in the IPAM store.
fn allocations(net: &PodNetwork) -> Vec<String> {
    std::fs::read_dir(net.allocations_dir())
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
        .collect()
}

#[test]
fn reference_bridge_and_host_local_with_capstan_portmap() -> Result<()> {
    traffic_suite(Plugins {
        bridge: Impl::Reference,
        ipam: Impl::Reference,
        portmap: Some(Impl::Capstan),
    })
}

#[test]
fn capstan_bridge_and_capstan_ipam() -> Result<()> {
    traffic_suite(Plugins {
        bridge: Impl::Capstan,
        ipam: Impl::Capstan,
        portmap: Some(Impl::Capstan),
    })
}

#[test]
fn reference_bridge_with_capstan_ipam() -> Result<()> {
    traffic_suite(Plugins {
        bridge: Impl::Reference,
        ipam: Impl::Capstan,
        portmap: Some(Impl::Capstan),
    })
}

#[test]
fn capstan_bridge_with_reference_host_local() -> Result<()> {
    traffic_suite(Plugins {
        bridge: Impl::Capstan,
        ipam: Impl::Reference,
        portmap: Some(Impl::Capstan),
    })
}

#[test]
fn the_suite_holds_for_the_reference_plugins_alone() -> Result<()> {
    traffic_suite(Plugins {
        bridge: Impl::Reference,
        ipam: Impl::Reference,
        portmap: Some(Impl::Reference),
    })
}

#[test]
fn without_masquerade_the_outside_host_cannot_answer() -> Result<()> {
    // The control for the suite's masquerade check, for both bridges.
    enable_forwarding()?;
    for bridge in [Impl::Reference, Impl::Capstan] {
        let mut net = PodNetwork::new(Plugins {
            bridge,
            ipam: Impl::Reference,
            portmap: None,
        })?;
        net.masquerade = false;
        let pod = Pod::attach(&net, None)?;
        let outside = Outside::new()?;
        assert!(
            reaches(Some(&pod.ns), &outside.node_addr)?,
            "{bridge:?}: the node side of the outside link"
        );
        assert!(
            !pod.ns.can_ping(&outside.addr)?,
            "{bridge:?}: outside answered an unmasqueraded pod"
        );
    }
    Ok(())
}
