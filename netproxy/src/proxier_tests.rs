use std::sync::Arc;

use prometheus_client::registry::Registry;
use serde_json::json;

use super::*;
use crate::config::ProxyConfig;
use crate::nft::NftCommand;
use crate::testutil::{service, slice, Recorder};

fn proxier(recorder: &Recorder) -> Proxier {
    let config = ProxyConfig {
        cluster_cidr: "10.244.0.0/16".into(),
        table_name: "np-unit".into(),
        ..Default::default()
    };
    let node = NodeContext {
        name: "node-a".into(),
        ips: vec!["192.168.5.1".parse().unwrap()],
        zone: None,
    };
    let metrics = ProxyMetrics::register(&mut Registry::default());
    Proxier::new(&config, node, Box::new(recorder.clone()), metrics).unwrap()
}

fn state(n_eps: usize) -> ClusterState {
    let eps: Vec<String> = (0..n_eps).map(|i| format!("10.244.1.{}", i + 2)).collect();
    let eps: Vec<(&str, bool, &str)> = eps.iter().map(|ip| (ip.as_str(), true, "node-a")).collect();
    ClusterState {
        services: vec![
            service(
                "default",
                "web",
                "10.96.0.10",
                &[("http", "TCP", 80, Some(30080))],
                json!({"type": "NodePort"}),
            ),
            service(
                "default",
                "dns",
                "10.96.0.53",
                &[("dns", "UDP", 53, None)],
                json!({}),
            ),
        ],
        slices: vec![
            slice("default", "web", "web-1", &[("http", "TCP", 8080)], &eps),
            slice(
                "default",
                "dns",
                "dns-1",
                &[("dns", "UDP", 53)],
                &[("10.244.9.9", true, "node-b")],
            ),
        ],
    }
}

#[test]
fn first_sync_declares_then_syncs_touch_only_changes() {
    let rec = Recorder::default();
    let mut p = proxier(&rec);
    let first = p.sync(&state(2), false).unwrap();
    assert!(first.full && first.applied);
    assert_eq!(first.changed_services, 2);
    let script = rec.last();
    assert!(script.contains("add table ip np-unit\n"));
    assert!(script.contains(
        "add chain ip np-unit nat-prerouting { type nat hook prerouting priority dstnat ; }"
    ));
    assert!(script.contains("add element ip np-unit nodeport-ips { 192.168.5.1 }"));
    assert!(script.contains("add table ip6 np-unit\n"));
    // A new UDP service with endpoints: entries cached while it had none are stale.
    assert!(first.stale_udp.contains(&StaleUdp {
        vip: "10.96.0.53".parse().unwrap(),
        port: 53,
        endpoint: None
    }));

    // Same objects again: nothing to do, nothing re-planned.
    let count = rec.scripts.lock().unwrap().len();
    let st = state(2);
    let again = ClusterState {
        services: st.services.clone(),
        slices: st.slices.clone(),
    };
    let replanned = p.sync(&again, false).unwrap();
    assert_eq!(replanned.changed_services, 2, "new objects are re-planned");
    assert!(
        !replanned.applied,
        "but the plans are equal, so nothing is applied"
    );
    let same = p.sync(&again, false).unwrap();
    assert_eq!(same.changed_services, 0);
    assert!(!same.applied);
    assert_eq!(
        rec.scripts.lock().unwrap().len(),
        count,
        "equal plans apply nothing"
    );

    // One more endpoint for web: only web's chains and elements change.
    let mut next = again.clone();
    next.slices[0] = state(3).slices[0].clone();
    let report = p.sync(&next, false).unwrap();
    assert_eq!(report.changed_services, 1);
    let script = rec.last();
    assert!(!script.contains("add table"), "{script}");
    assert!(!script.contains("dns"), "{script}");
    assert!(script.contains("numgen random mod 3"), "{script}");
    assert!(script.contains("dnat to 10.244.1.4:8080"));
    assert!(
        !script.contains("element"),
        "the service-ips entry is unchanged: {script}"
    );
}

#[test]
fn removed_services_lose_elements_before_their_chains() {
    let rec = Recorder::default();
    let mut p = proxier(&rec);
    let st = state(2);
    p.sync(&st, false).unwrap();
    let gone = ClusterState {
        services: vec![st.services[0].clone()],
        slices: vec![st.slices[0].clone()],
    };
    let report = p.sync(&gone, false).unwrap();
    let script = rec.last();
    let del_elem = script
        .find("delete element ip np-unit service-ips { 10.96.0.53 . udp . 53 }")
        .expect(&script);
    let del_chain = script.find("delete chain ip np-unit svc-").expect(&script);
    let flush = script.find("flush chain ip np-unit svc-").unwrap();
    assert!(del_elem < flush && flush < del_chain, "{script}");
    assert!(script.contains("delete element ip np-unit cluster-ips { 10.96.0.53 }"));
    assert_eq!(
        report.stale_udp,
        vec![StaleUdp {
            vip: "10.96.0.53".parse().unwrap(),
            port: 53,
            endpoint: Some("10.244.9.9".parse().unwrap())
        }]
    );
}

#[test]
fn invalid_objects_are_reported_and_the_rest_keeps_working() {
    let rec = Recorder::default();
    let mut p = proxier(&rec);
    let mut st = state(1);
    st.services.push(service(
        "default",
        "bad",
        "10.96.0.99",
        &[("", "TCP", 0, None)],
        json!({}),
    ));
    st.slices.push(slice(
        "default",
        "web",
        "web-evil",
        &[("http", "TCP", 8080)],
        &[("fd00::1", true, "node-a"), ("10.0.0.1", true, "x")],
    ));
    let report = p.sync(&st, false).unwrap();
    let mut kinds: Vec<(&str, &str)> = report
        .rejected
        .iter()
        .map(|r| (r.kind, r.name.as_str()))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec![("EndpointSlice", "web-evil"), ("Service", "bad")]
    );
    assert!(rec.last().contains("10.96.0.10 . tcp . 80 : goto svc-"));
    assert!(!rec.last().contains("10.96.0.99"));
}

#[test]
fn conflicting_addresses_keep_the_first_owner() {
    let rec = Recorder::default();
    let mut p = proxier(&rec);
    let mut st = state(1);
    st.services.push(service(
        "other",
        "web",
        "10.96.0.10",
        &[("http", "TCP", 80, None)],
        json!({}),
    ));
    let report = p.sync(&st, false).unwrap();
    assert!(report
        .rejected
        .iter()
        .any(|r| r.namespace == "other" && r.reason.contains("already used by default/web")));
}

#[test]
fn a_failed_incremental_sync_rereads_the_kernel() {
    let rec = Recorder::default();
    let mut p = proxier(&rec);
    p.sync(&state(1), false).unwrap();
    *rec.fail_next.lock().unwrap() = true;
    let report = p.sync(&state(2), false).unwrap();
    assert!(report.full, "retried as a full sync");
    assert!(rec.last().contains("add table ip np-unit"));
}

#[test]
fn health_counts_are_reported_for_local_services() {
    let rec = Recorder::default();
    let mut p = proxier(&rec);
    let mut st = state(2);
    st.services[0] = service(
        "default",
        "web",
        "10.96.0.10",
        &[("http", "TCP", 80, Some(30080))],
        json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 32001}),
    );
    let report = p.sync(&st, false).unwrap();
    assert_eq!(
        report
            .local_endpoints
            .get(&("default".to_owned(), "web".to_owned())),
        Some(&2)
    );
    assert_eq!(report.local_endpoints.len(), 1);
}

/// The kernel accepts the generated scripts (`nft -c` checks without applying; needs root).
#[test]
fn generated_scripts_pass_the_kernel_check() {
    let Ok(nft) = NftCommand::new() else { return };
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    let rec = Recorder::default();
    let mut p = proxier(&rec);
    let mut st = state(3);
    st.services.push(service("default", "aff", "10.96.0.12", &[("", "SCTP", 80, None)], json!({"sessionAffinity": "ClientIP", "clusterIPs": ["10.96.0.12", "fd00:96::12"], "externalIPs": ["192.0.2.1", "2001:db8::1"], "externalTrafficPolicy": "Local", "loadBalancerSourceRanges": ["10.0.0.0/8", "2001:db8::/32"]})));
    let mut lb = (*st.services[2]).clone();
    lb.status = Some(
        serde_json::from_value(
            json!({"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}, {"ip": "2001:db8::9"}]}}),
        )
        .unwrap(),
    );
    st.services[2] = Arc::new(lb);
    st.slices.push(slice(
        "default",
        "aff",
        "aff-4",
        &[("", "SCTP", 80)],
        &[
            ("10.244.1.2", true, "node-a"),
            ("10.244.2.2", true, "node-b"),
        ],
    ));
    st.slices.push(slice(
        "default",
        "aff",
        "aff-6",
        &[("", "SCTP", 80)],
        &[("fd00:244::2", true, "node-a")],
    ));
    p.sync(&st, false).unwrap();
    let script = rec.last();
    assert!(script.contains("ip6 np-unit"));
    let mut check = nft.clone();
    check_script(&mut check, &script);
}

fn check_script(nft: &mut NftCommand, script: &str) {
    if let Err(err) = nft.check(script) {
        panic!("{err}\n{script}");
    }
}
