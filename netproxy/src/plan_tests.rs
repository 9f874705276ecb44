use serde_json::json;

use super::*;
use crate::model::{ServiceClass, ServiceInfo, SliceInfo};
use crate::testutil::{service, slice};

fn ctx() -> PlanContext {
    PlanContext {
        family: IpFamily::V4,
        cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        masquerade_all: false,
        zone: Some("z1".into()),
        nodeports: true,
    }
}

fn info(svc: &k8s_openapi::api::core::v1::Service) -> ServiceInfo {
    match ServiceInfo::classify(svc, None).unwrap() {
        ServiceClass::Proxied(info) => *info,
        ServiceClass::Ignored => panic!("ignored"),
    }
}

fn slices(
    list: &[std::sync::Arc<k8s_openapi::api::discovery::v1::EndpointSlice>],
) -> Vec<SliceInfo> {
    list.iter()
        .map(|s| SliceInfo::parse(s, "node-a").unwrap().unwrap())
        .collect()
}

fn plan(svc: &k8s_openapi::api::core::v1::Service, sl: &[SliceInfo]) -> ServicePlan {
    let refs: Vec<&SliceInfo> = sl.iter().collect();
    plan_service(&ctx(), &info(svc), &refs)
}

fn element(p: &ServicePlan, coll: Coll) -> Vec<(String, String)> {
    p.elements
        .iter()
        .filter(|e| e.coll == coll)
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect()
}

fn chain<'a>(p: &'a ServicePlan, prefix: &str) -> &'a Vec<String> {
    &p.chains
        .iter()
        .find(|(n, _)| n.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} chain"))
        .1
}

#[test]
fn cluster_ip_spreads_over_ready_endpoints_and_masquerades_outside_sources() {
    let svc = service(
        "default",
        "web",
        "10.96.0.10",
        &[("http", "TCP", 80, None)],
        json!({}),
    );
    let sl = slices(&[slice(
        "default",
        "web",
        "web-1",
        &[("http", "TCP", 8080)],
        &[
            ("10.244.1.2", true, "node-a"),
            ("10.244.2.3", true, "node-b"),
            ("10.244.2.4", false, "node-b"),
        ],
    )]);
    let p = plan(&svc, &sl);
    let ips = element(&p, Coll::ServiceIps);
    assert_eq!(ips.len(), 1);
    assert_eq!(ips[0].0, "10.96.0.10 . tcp . 80");
    assert!(
        ips[0].1.starts_with("goto svc-") && ips[0].1.ends_with("-default-web-tcp-80"),
        "{}",
        ips[0].1
    );
    assert_eq!(
        element(&p, Coll::ClusterIps),
        vec![("10.96.0.10".to_owned(), String::new())]
    );
    let svc_chain = chain(&p, "svc-");
    assert_eq!(
        svc_chain[0],
        "ip daddr 10.96.0.10 tcp dport 80 ip saddr != { 10.244.0.0/16 } jump mark-for-masquerade"
    );
    assert!(
        svc_chain[1].starts_with("numgen random mod 2 vmap { 0 : goto ep-"),
        "{}",
        svc_chain[1]
    );
    let eps: Vec<&(String, Vec<String>)> = p
        .chains
        .iter()
        .filter(|(n, _)| n.starts_with("ep-"))
        .collect();
    assert_eq!(eps.len(), 2, "the unready endpoint gets no chain");
    assert_eq!(
        eps[0].1,
        vec![
            "ip saddr 10.244.1.2 jump mark-for-masquerade".to_owned(),
            "meta l4proto tcp dnat to 10.244.1.2:8080".to_owned()
        ]
    );
    for (name, _) in &p.chains {
        assert!(
            name.len() < 256 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            "{name}"
        );
    }
    assert!(p.udp.is_empty());
}

#[test]
fn no_endpoints_rejects_and_internal_local_without_local_endpoints_drops() {
    let svc = service(
        "default",
        "web",
        "10.96.0.10",
        &[("", "TCP", 80, Some(30080))],
        json!({"type": "NodePort"}),
    );
    let p = plan(&svc, &[]);
    assert_eq!(
        element(&p, Coll::NoEndpointServices),
        vec![(
            "10.96.0.10 . tcp . 80".to_owned(),
            "goto reject-chain".to_owned()
        )]
    );
    assert_eq!(
        element(&p, Coll::NoEndpointNodeports),
        vec![("tcp . 30080".to_owned(), "goto reject-chain".to_owned())]
    );
    assert!(element(&p, Coll::ServiceIps).is_empty());
    assert!(p.chains.is_empty());

    let svc = service(
        "default",
        "web",
        "10.96.0.10",
        &[("", "TCP", 80, None)],
        json!({"internalTrafficPolicy": "Local"}),
    );
    let sl = slices(&[slice(
        "default",
        "web",
        "w",
        &[("", "TCP", 80)],
        &[("10.244.2.3", true, "node-b")],
    )]);
    let p = plan(&svc, &sl);
    assert_eq!(
        element(&p, Coll::NoEndpointServices),
        vec![("10.96.0.10 . tcp . 80".to_owned(), "drop".to_owned())]
    );
    assert!(p.no_local_internal);
}

#[test]
fn node_ports_and_external_ips_go_through_an_external_chain() {
    let svc = service(
        "ns1",
        "lb",
        "10.96.0.11",
        &[("dns", "UDP", 53, Some(30053))],
        json!({"type": "NodePort", "externalIPs": ["192.0.2.7"]}),
    );
    let sl = slices(&[slice(
        "ns1",
        "lb",
        "lb-1",
        &[("dns", "UDP", 5353)],
        &[("10.244.1.2", true, "node-a")],
    )]);
    let p = plan(&svc, &sl);
    let ext = chain(&p, "ext-");
    assert_eq!(ext[0], "jump mark-for-masquerade");
    assert!(ext[1].starts_with("goto svc-"));
    let nodeports = element(&p, Coll::ServiceNodeports);
    assert_eq!(nodeports[0].0, "udp . 30053");
    assert!(nodeports[0].1.starts_with("goto ext-"));
    let ips: Vec<String> = element(&p, Coll::ServiceIps)
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(ips, vec!["10.96.0.11 . udp . 53", "192.0.2.7 . udp . 53"]);
    assert_eq!(p.udp.len(), 1);
    assert_eq!(p.udp[0].vips.len(), 2);
    assert_eq!(p.udp[0].endpoints.len(), 1);
}

#[test]
fn external_local_uses_local_endpoints_and_drops_without_them() {
    let extra = json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 32000});
    let svc = service(
        "default",
        "web",
        "10.96.0.10",
        &[("", "TCP", 80, Some(30080))],
        extra.clone(),
    );
    let sl = slices(&[slice(
        "default",
        "web",
        "w",
        &[("", "TCP", 80)],
        &[
            ("10.244.1.2", true, "node-a"),
            ("10.244.2.3", true, "node-b"),
        ],
    )]);
    let p = plan(&svc, &sl);
    assert_eq!(p.local_endpoints, Some(1));
    let ext = chain(&p, "ext-");
    assert_eq!(ext.last().unwrap().split('-').next(), Some("goto svl"));
    assert!(ext
        .iter()
        .any(|r| r.starts_with("ip saddr { 10.244.0.0/16 } goto svc-")));
    assert_eq!(
        chain(&p, "svl-").len(),
        1,
        "one local endpoint: a plain goto"
    );

    let sl = slices(&[slice(
        "default",
        "web",
        "w",
        &[("", "TCP", 80)],
        &[("10.244.2.3", true, "node-b")],
    )]);
    let p = plan(&svc, &sl);
    assert_eq!(p.local_endpoints, Some(0));
    assert_eq!(
        element(&p, Coll::NoEndpointNodeports),
        vec![("tcp . 30080".to_owned(), "drop".to_owned())]
    );
    assert_eq!(
        element(&p, Coll::ServiceIps).len(),
        1,
        "the ClusterIP still works"
    );
    assert!(p.no_local_external);
}

#[test]
fn client_ip_affinity_uses_per_endpoint_timeout_sets() {
    let svc = service(
        "default",
        "web",
        "10.96.0.10",
        &[("", "TCP", 80, None)],
        json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}),
    );
    let sl = slices(&[slice(
        "default",
        "web",
        "w",
        &[("", "TCP", 80)],
        &[
            ("10.244.1.2", true, "node-a"),
            ("10.244.1.3", true, "node-a"),
        ],
    )]);
    let p = plan(&svc, &sl);
    assert_eq!(p.affinity_sets.len(), 2);
    assert!(p
        .affinity_sets
        .iter()
        .all(|(n, t)| n.starts_with("aff-") && *t == 60));
    let svc_chain = chain(&p, "svc-");
    assert!(svc_chain[1].starts_with(&format!("ip saddr @{} goto ep-", p.affinity_sets[0].0)));
    let ep = chain(&p, "ep-");
    assert!(ep[1].starts_with("update @aff-") && ep[1].ends_with("{ ip saddr }"));
}

#[test]
fn terminating_endpoints_serve_only_when_none_is_ready() {
    let svc = service(
        "default",
        "web",
        "10.96.0.10",
        &[("", "TCP", 80, None)],
        json!({}),
    );
    let mut s = (*slice(
        "default",
        "web",
        "w",
        &[("", "TCP", 80)],
        &[
            ("10.244.1.2", false, "node-a"),
            ("10.244.1.3", false, "node-a"),
        ],
    ))
    .clone();
    let conds = s.endpoints[0].conditions.as_mut().unwrap();
    conds.serving = Some(true);
    conds.terminating = Some(true);
    let p = plan(&svc, &slices(&[std::sync::Arc::new(s.clone())]));
    assert_eq!(
        p.chains
            .iter()
            .filter(|(n, _)| n.starts_with("ep-"))
            .count(),
        1
    );
    assert!(chain(&p, "ep-").last().unwrap().ends_with("10.244.1.2:80"));
    s.endpoints[1].conditions.as_mut().unwrap().ready = Some(true);
    let p = plan(&svc, &slices(&[std::sync::Arc::new(s)]));
    assert!(
        chain(&p, "ep-").last().unwrap().ends_with("10.244.1.3:80"),
        "the ready one wins"
    );
}

#[test]
fn named_target_ports_resolve_per_slice() {
    let svc = service(
        "default",
        "web",
        "10.96.0.10",
        &[("http", "TCP", 80, None)],
        json!({}),
    );
    let sl = slices(&[
        slice(
            "default",
            "web",
            "a",
            &[("http", "TCP", 8080)],
            &[("10.244.1.2", true, "node-a")],
        ),
        slice(
            "default",
            "web",
            "b",
            &[("http", "TCP", 9090)],
            &[("10.244.1.3", true, "node-a")],
        ),
        slice(
            "default",
            "web",
            "c",
            &[("other", "TCP", 1)],
            &[("10.244.1.4", true, "node-a")],
        ),
    ]);
    let p = plan(&svc, &sl);
    let dnats: Vec<&String> = p
        .chains
        .iter()
        .filter(|(n, _)| n.starts_with("ep-"))
        .map(|(_, r)| r.last().unwrap())
        .collect();
    assert_eq!(
        dnats,
        vec![
            "meta l4proto tcp dnat to 10.244.1.2:8080",
            "meta l4proto tcp dnat to 10.244.1.3:9090"
        ]
    );
}

#[test]
fn prefer_close_keeps_same_zone_endpoints_when_all_are_hinted() {
    let svc = service(
        "default",
        "web",
        "10.96.0.10",
        &[("", "TCP", 80, None)],
        json!({"trafficDistribution": "PreferClose"}),
    );
    let mut s = (*slice(
        "default",
        "web",
        "w",
        &[("", "TCP", 80)],
        &[
            ("10.244.1.2", true, "node-b"),
            ("10.244.1.3", true, "node-c"),
        ],
    ))
    .clone();
    let hint = |z: &str| serde_json::from_value(json!({"forZones": [{"name": z}]})).unwrap();
    s.endpoints[0].hints = Some(hint("z1"));
    let p = plan(&svc, &slices(&[std::sync::Arc::new(s.clone())]));
    assert_eq!(
        p.chains
            .iter()
            .filter(|(n, _)| n.starts_with("ep-"))
            .count(),
        2,
        "one endpoint lacks hints: no topology"
    );
    s.endpoints[1].hints = Some(hint("z2"));
    let p = plan(&svc, &slices(&[std::sync::Arc::new(s)]));
    let eps: Vec<&String> = p
        .chains
        .iter()
        .filter(|(n, _)| n.starts_with("ep-"))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(eps.len(), 1);
    assert!(eps[0].contains("10-244-1-2"));
}

#[test]
fn dual_stack_plans_each_family_separately() {
    let svc = service(
        "default",
        "web",
        "10.96.0.10",
        &[("", "TCP", 80, None)],
        json!({"clusterIPs": ["10.96.0.10", "fd00:96::10"], "ipFamilies": ["IPv4", "IPv6"]}),
    );
    let sl = slices(&[
        slice(
            "default",
            "web",
            "v4",
            &[("", "TCP", 80)],
            &[("10.244.1.2", true, "node-a")],
        ),
        slice(
            "default",
            "web",
            "v6",
            &[("", "TCP", 80)],
            &[("fd00:244::2", true, "node-a")],
        ),
    ]);
    let refs: Vec<&SliceInfo> = sl.iter().collect();
    let mut v6 = ctx();
    v6.family = IpFamily::V6;
    v6.cluster_cidrs = vec!["fd00:244::/56".parse().unwrap()];
    let p = plan_service(&v6, &info(&svc), &refs);
    assert_eq!(element(&p, Coll::ServiceIps)[0].0, "fd00:96::10 . tcp . 80");
    assert_eq!(
        chain(&p, "ep-").last().unwrap(),
        "meta l4proto tcp dnat to [fd00:244::2]:80"
    );
    assert!(chain(&p, "svc-")[0]
        .starts_with("ip6 daddr fd00:96::10 tcp dport 80 ip6 saddr != { fd00:244::/56 }"));
}

#[test]
fn load_balancer_source_ranges_filter_lb_ips() {
    let svc = service(
        "default",
        "web",
        "10.96.0.10",
        &[("", "TCP", 80, Some(30080))],
        json!({"type": "LoadBalancer", "loadBalancerSourceRanges": ["203.0.113.0/24"]}),
    );
    let mut svc = (*svc).clone();
    svc.status = Some(
        serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "198.51.100.9"}]}}))
            .unwrap(),
    );
    let sl = slices(&[slice(
        "default",
        "web",
        "w",
        &[("", "TCP", 80)],
        &[("10.244.1.2", true, "node-a")],
    )]);
    let p = plan(&svc, &sl);
    assert_eq!(
        chain(&p, "fw-"),
        &vec![
            "ip saddr { 203.0.113.0/24 } return".to_owned(),
            "drop".to_owned()
        ]
    );
    assert_eq!(
        element(&p, Coll::FirewallIps)[0].0,
        "198.51.100.9 . tcp . 80"
    );
}

#[test]
fn invalid_objects_are_refused_with_a_reason() {
    let bad_ports: Vec<(&str, &str, i32, Option<i32>)> = vec![("", "TCP", 0, None)];
    let svc = service("default", "web", "10.96.0.10", &bad_ports, json!({}));
    assert!(ServiceInfo::classify(&svc, None)
        .err()
        .unwrap()
        .contains("not in 1..=65535"));
    let svc = service(
        "default",
        "web",
        "10.96.0.10",
        &[("", "ICMP", 1, None)],
        json!({}),
    );
    assert!(ServiceInfo::classify(&svc, None)
        .err()
        .unwrap()
        .contains("protocol"));
    let svc = service(
        "default",
        "Web;drop",
        "10.96.0.10",
        &[("", "TCP", 1, None)],
        json!({}),
    );
    assert!(ServiceInfo::classify(&svc, None)
        .err()
        .unwrap()
        .contains("DNS label"));
    let svc = service(
        "default",
        "web",
        "10.96.0.1;",
        &[("", "TCP", 1, None)],
        json!({}),
    );
    assert!(ServiceInfo::classify(&svc, None)
        .err()
        .unwrap()
        .contains("not an IP"));
    let many: Vec<(String, i32)> = (1..=10_000).map(|i| (format!("p{i}"), i)).collect();
    let many: Vec<(&str, &str, i32, Option<i32>)> = many
        .iter()
        .map(|(n, p)| (n.as_str(), "TCP", *p, None))
        .collect();
    let svc = service("default", "web", "10.96.0.10", &many, json!({}));
    assert!(ServiceInfo::classify(&svc, None)
        .err()
        .unwrap()
        .contains("ports"));
    let svc = service(
        "default",
        "web",
        "10.96.0.10",
        &[("a", "TCP", 80, None), ("a", "TCP", 81, None)],
        json!({}),
    );
    assert!(ServiceInfo::classify(&svc, None)
        .err()
        .unwrap()
        .contains("duplicate"));
    let s = slice(
        "default",
        "web",
        "w",
        &[("", "TCP", 80)],
        &[("10.244.1.2", true, "n"), ("fd00::1", true, "n")],
    );
    assert!(SliceInfo::parse(&s, "n")
        .err()
        .unwrap()
        .contains("addressType"));
    let s = slice(
        "default",
        "web",
        "w",
        &[("", "TCP", 70000)],
        &[("10.244.1.2", true, "n")],
    );
    assert!(SliceInfo::parse(&s, "n").is_err());
    // Duplicate endpoints collapse into one.
    let s = slice(
        "default",
        "web",
        "w",
        &[("", "TCP", 80)],
        &[("10.244.1.2", true, "n"), ("10.244.1.2", true, "n")],
    );
    assert_eq!(
        SliceInfo::parse(&s, "n").unwrap().unwrap().endpoints.len(),
        1
    );
    // Headless and ExternalName Services and other proxies' Services are ignored, not refused.
    let svc = service(
        "default",
        "web",
        "None",
        &[("", "TCP", 80, None)],
        json!({}),
    );
    assert!(matches!(
        ServiceInfo::classify(&svc, None),
        Ok(ServiceClass::Ignored)
    ));
    let mut svc = (*service(
        "default",
        "web",
        "10.96.0.10",
        &[("", "TCP", 80, None)],
        json!({}),
    ))
    .clone();
    svc.metadata.labels = Some(
        [(
            "service.kubernetes.io/service-proxy-name".to_owned(),
            "other".to_owned(),
        )]
        .into(),
    );
    assert!(matches!(
        ServiceInfo::classify(&svc, None),
        Ok(ServiceClass::Ignored)
    ));
    assert!(matches!(
        ServiceInfo::classify(&svc, Some("other")),
        Ok(ServiceClass::Proxied(_))
    ));
}
