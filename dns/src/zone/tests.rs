//! Zone tests against the pure index, one per rule of the DNS-Based Service Discovery spec.

use super::*;
use serde_json::json;

fn svc(ns: &str, name: &str, spec: serde_json::Value) -> Arc<Service> {
    Arc::new(
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "spec": spec}))
            .unwrap(),
    )
}

fn slice(
    ns: &str,
    svc: &str,
    family: &str,
    endpoints: serde_json::Value,
    ports: serde_json::Value,
) -> Arc<EndpointSlice> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": format!("{svc}-x"), "namespace": ns,
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": family, "endpoints": endpoints, "ports": ports
        }))
        .unwrap(),
    )
}

fn pod(ns: &str, ip: &str) -> Arc<Pod> {
    Arc::new(
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": ns},
            "status": {"podIP": ip, "podIPs": [{"ip": ip}]}}))
        .unwrap(),
    )
}

fn state() -> ClusterState {
    ClusterState {
        services: vec![
            svc(
                "default",
                "kubernetes",
                json!({"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
                "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}),
            ),
            svc(
                "ns1",
                "dual",
                json!({"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20", "fd00::20"],
                "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"port": 80}]}),
            ),
            svc(
                "ns1",
                "headless",
                json!({"clusterIP": "None",
                "ports": [{"name": "http", "port": 80}]}),
            ),
            svc(
                "ns1",
                "notready",
                json!({"clusterIP": "None", "publishNotReadyAddresses": true}),
            ),
            svc("ns1", "empty", json!({"clusterIP": "None"})),
            svc(
                "ns1",
                "ext",
                json!({"type": "ExternalName", "externalName": "Example.COM."}),
            ),
        ],
        slices: vec![
            slice(
                "ns1",
                "headless",
                "IPv4",
                json!([
                    {"addresses": ["10.1.0.5"], "hostname": "web-0", "conditions": {"ready": true}},
                    {"addresses": ["10.1.0.6"]},
                    {"addresses": ["10.1.0.7"], "conditions": {"ready": false}},
                ]),
                json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
            ),
            slice(
                "ns1",
                "headless",
                "IPv6",
                json!([{"addresses": ["fd00::6"]}]),
                json!([]),
            ),
            slice(
                "ns1",
                "notready",
                "IPv4",
                json!([
                {"addresses": ["10.1.0.9"], "conditions": {"ready": false}}]),
                json!([]),
            ),
        ],
        pods: vec![pod("ns1", "10.1.0.5")],
    }
}

fn index(pods: PodRecords) -> ZoneIndex {
    let settings = ZoneSettings {
        domain: "Cluster.Local".into(),
        ttl: 5,
        pods,
    };
    ZoneIndex::build(&state(), &settings, 42)
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

/// The answer records' data rendered as text, sorted.
fn answers(lookup: Lookup) -> Vec<String> {
    match lookup {
        Lookup::Found { answers, .. } => {
            let mut v: Vec<String> = answers.iter().map(|r| r.data.to_string()).collect();
            v.sort();
            v
        }
        other => panic!("expected records, got {other:?}"),
    }
}

#[test]
fn dns_version_txt() {
    let zone = index(PodRecords::Insecure);
    let got = answers(zone.lookup(&name("dns-version.cluster.local."), RecordType::TXT));
    assert_eq!(got, vec!["1.1.0"]);
}

#[test]
fn cluster_ip_a_aaaa_case_insensitive() {
    let zone = index(PodRecords::Insecure);
    let q = name("KUBERNETES.default.SVC.cluster.local.");
    match zone.lookup(&q, RecordType::A) {
        Lookup::Found { answers, .. } => {
            assert_eq!(answers.len(), 1);
            assert_eq!(answers[0].ttl, 5);
            assert_eq!(answers[0].name, q, "owner keeps the query's case");
        }
        other => panic!("{other:?}"),
    }
    let dual = name("dual.ns1.svc.cluster.local.");
    assert_eq!(
        answers(zone.lookup(&dual, RecordType::A)),
        vec!["10.96.0.20"]
    );
    assert_eq!(
        answers(zone.lookup(&dual, RecordType::AAAA)),
        vec!["fd00::20"]
    );
    assert_eq!(
        zone.lookup(
            &name("kubernetes.default.svc.cluster.local."),
            RecordType::AAAA
        ),
        Lookup::NoData
    );
}

#[test]
fn cluster_ip_srv_targets_service_name() {
    let zone = index(PodRecords::Insecure);
    let q = name("_https._tcp.kubernetes.default.svc.cluster.local.");
    match zone.lookup(&q, RecordType::SRV) {
        Lookup::Found {
            answers,
            additionals,
        } => {
            assert_eq!(
                answers[0].data.to_string(),
                "0 100 443 kubernetes.default.svc.cluster.local."
            );
            assert_eq!(additionals[0].data.to_string(), "10.96.0.1");
        }
        other => panic!("{other:?}"),
    }
    let udp = name("_dns._udp.dual.ns1.svc.cluster.local.");
    assert_eq!(answers(zone.lookup(&udp, RecordType::SRV)).len(), 1);
    // Unnamed ports get no SRV record; the protocol label is an empty non-terminal.
    assert_eq!(
        zone.lookup(&name("_udp.dual.ns1.svc.cluster.local."), RecordType::SRV),
        Lookup::NoData
    );
    assert_eq!(
        zone.lookup(
            &name("_dns._tcp.dual.ns1.svc.cluster.local."),
            RecordType::SRV
        ),
        Lookup::NxDomain
    );
}

#[test]
fn headless_ready_endpoints_hostnames_and_srv() {
    let zone = index(PodRecords::Insecure);
    let svc = name("headless.ns1.svc.cluster.local.");
    assert_eq!(
        answers(zone.lookup(&svc, RecordType::A)),
        vec!["10.1.0.5", "10.1.0.6"]
    );
    assert_eq!(
        answers(zone.lookup(&svc, RecordType::AAAA)),
        vec!["fd00::6"]
    );
    assert_eq!(
        answers(zone.lookup(
            &name("web-0.headless.ns1.svc.cluster.local."),
            RecordType::A
        )),
        vec!["10.1.0.5"]
    );
    assert_eq!(
        answers(zone.lookup(
            &name("10-1-0-6.headless.ns1.svc.cluster.local."),
            RecordType::A
        )),
        vec!["10.1.0.6"]
    );
    assert_eq!(
        zone.lookup(
            &name("10-1-0-7.headless.ns1.svc.cluster.local."),
            RecordType::A
        ),
        Lookup::NxDomain,
        "not-ready endpoints are not published"
    );
    let srv = answers(zone.lookup(
        &name("_http._tcp.headless.ns1.svc.cluster.local."),
        RecordType::SRV,
    ));
    assert_eq!(
        srv,
        vec![
            "0 50 8080 10-1-0-6.headless.ns1.svc.cluster.local.",
            "0 50 8080 web-0.headless.ns1.svc.cluster.local.",
        ]
    );
}

#[test]
fn publish_not_ready_and_empty_headless() {
    let zone = index(PodRecords::Insecure);
    assert_eq!(
        answers(zone.lookup(&name("notready.ns1.svc.cluster.local."), RecordType::A)),
        vec!["10.1.0.9"]
    );
    assert_eq!(
        zone.lookup(&name("empty.ns1.svc.cluster.local."), RecordType::A),
        Lookup::NoData
    );
}

#[test]
fn ptr_for_service_and_endpoint_ips() {
    let zone = index(PodRecords::Insecure);
    let ptr = |ip: &str| {
        let q = name(&format!("{}.", reverse(ip.parse().unwrap())));
        zone.lookup(&q, RecordType::PTR)
    };
    assert_eq!(
        answers(ptr("10.96.0.1")),
        vec!["kubernetes.default.svc.cluster.local."]
    );
    assert_eq!(
        answers(ptr("fd00::20")),
        vec!["dual.ns1.svc.cluster.local."]
    );
    assert_eq!(
        answers(ptr("10.1.0.5")),
        vec!["web-0.headless.ns1.svc.cluster.local."]
    );
    assert_eq!(
        answers(ptr("fd00::6")),
        vec!["fd00--6.headless.ns1.svc.cluster.local."]
    );
    assert_eq!(
        ptr("192.0.2.1"),
        Lookup::NotOurs,
        "unknown reverse names are forwarded"
    );
}

#[test]
fn external_name_is_cname_for_every_type() {
    let zone = index(PodRecords::Insecure);
    let q = name("ext.ns1.svc.cluster.local.");
    assert_eq!(
        answers(zone.lookup(&q, RecordType::A)),
        vec!["example.com."]
    );
    assert_eq!(
        answers(zone.lookup(&q, RecordType::CNAME)),
        vec!["example.com."]
    );
}

#[test]
fn pods_insecure_verified_disabled() {
    let q = name("10-1-0-99.ns1.pod.cluster.local.");
    let known = name("10-1-0-5.ns1.pod.cluster.local.");
    let insecure = index(PodRecords::Insecure);
    assert_eq!(
        answers(insecure.lookup(&q, RecordType::A)),
        vec!["10.1.0.99"]
    );
    assert_eq!(
        answers(insecure.lookup(&name("fd00--1.other.pod.cluster.local."), RecordType::AAAA)),
        vec!["fd00::1"]
    );
    assert_eq!(
        insecure.lookup(&name("10-1-0.ns1.pod.cluster.local."), RecordType::A),
        Lookup::NxDomain
    );
    assert_eq!(
        insecure.lookup(&name("ns1.pod.cluster.local."), RecordType::A),
        Lookup::NoData
    );

    let verified = index(PodRecords::Verified);
    assert_eq!(verified.lookup(&q, RecordType::A), Lookup::NxDomain);
    assert_eq!(
        answers(verified.lookup(&known, RecordType::A)),
        vec!["10.1.0.5"]
    );
    assert_eq!(
        verified.lookup(&name("10-1-0-5.default.pod.cluster.local."), RecordType::A),
        Lookup::NxDomain,
        "verified: only pods in that namespace"
    );

    let disabled = index(PodRecords::Disabled);
    assert_eq!(disabled.lookup(&known, RecordType::A), Lookup::NxDomain);
    assert_eq!(
        disabled.lookup(&name("pod.cluster.local."), RecordType::A),
        Lookup::NxDomain
    );
}

#[test]
fn nodata_vs_nxdomain_and_apex() {
    let zone = index(PodRecords::Insecure);
    for ent in [
        "ns1.svc.cluster.local.",
        "svc.cluster.local.",
        "pod.cluster.local.",
    ] {
        assert_eq!(
            zone.lookup(&name(ent), RecordType::A),
            Lookup::NoData,
            "{ent}"
        );
    }
    assert_eq!(
        zone.lookup(&name("nope.ns1.svc.cluster.local."), RecordType::A),
        Lookup::NxDomain
    );
    assert_eq!(
        zone.lookup(&name("nope.cluster.local."), RecordType::A),
        Lookup::NxDomain
    );
    assert_eq!(
        zone.lookup(&name("*.ns1.svc.cluster.local."), RecordType::A),
        Lookup::NxDomain,
        "no wildcards"
    );
    let soa = answers(zone.lookup(&name("cluster.local."), RecordType::SOA));
    assert_eq!(
        soa,
        vec!["ns.dns.cluster.local. hostmaster.cluster.local. 42 7200 1800 86400 5"]
    );
    assert_eq!(
        zone.lookup(&name("cluster.local."), RecordType::A),
        Lookup::NoData
    );
    assert_eq!(
        zone.lookup(&name("example.com."), RecordType::A),
        Lookup::NotOurs
    );
    assert_eq!(
        zone.lookup(&name("evilcluster.local."), RecordType::A),
        Lookup::NotOurs
    );
}

#[test]
fn any_is_minimal_hinfo() {
    let zone = index(PodRecords::Insecure);
    let got = zone.lookup(
        &name("kubernetes.default.svc.cluster.local."),
        RecordType::ANY,
    );
    match got {
        Lookup::Found { answers, .. } => {
            assert_eq!(answers.len(), 1);
            assert_eq!(answers[0].record_type(), RecordType::HINFO);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        zone.lookup(&name("nope.cluster.local."), RecordType::ANY),
        Lookup::NxDomain
    );
}

#[test]
fn invalid_object_names_are_skipped() {
    let mut st = state();
    st.services
        .push(svc("ns1", "bad.name", json!({"clusterIP": "10.96.9.9"})));
    let zone = ZoneIndex::build(
        &st,
        &ZoneSettings {
            domain: "cluster.local".into(),
            ttl: 5,
            pods: PodRecords::Insecure,
        },
        1,
    );
    assert_eq!(
        zone.lookup(&name("bad.name.ns1.svc.cluster.local."), RecordType::A),
        Lookup::NxDomain
    );
}

#[test]
fn large_cluster_builds_quickly() {
    let mut st = ClusterState::default();
    for i in 0..10_000u32 {
        let ns = format!("ns{}", i % 100);
        let (a, b) = (i / 256, i % 256);
        if i % 2 == 0 {
            st.services.push(svc(
                &ns,
                &format!("s{i}"),
                json!({"clusterIP": format!("10.96.{a}.{b}"),
                "ports": [{"name": "http", "port": 80}]}),
            ));
        } else {
            st.services.push(svc(
                &ns,
                &format!("s{i}"),
                json!({"clusterIP": "None",
                "ports": [{"name": "http", "port": 80}]}),
            ));
            let eps: Vec<_> = (0..6)
                .map(|j| json!({"addresses": [format!("10.{}.{a}.{b}", 100 + j)]}))
                .collect();
            st.slices.push(slice(
                &ns,
                &format!("s{i}"),
                "IPv4",
                json!(eps),
                json!([{"name": "http", "port": 80}]),
            ));
        }
    }
    let settings = ZoneSettings {
        domain: "cluster.local".into(),
        ttl: 5,
        pods: PodRecords::Insecure,
    };
    let start = std::time::Instant::now();
    let zone = ZoneIndex::build(&st, &settings, 1);
    let took = start.elapsed();
    assert!(zone.len() > 60_000);
    // Generous for unoptimised test builds on shared cores; release builds take tens of ms.
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    assert_eq!(
        answers(zone.lookup(&name("s9999.ns99.svc.cluster.local."), RecordType::A)).len(),
        6
    );
}
