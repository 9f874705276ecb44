use serde_json::json;

use super::super::test_support::{node, pod_with_spec};
use super::*;

fn dns_for(spec: serde_json::Value, settings: &DnsSettings) -> DnsConfig {
    let mut spec = spec;
    spec["containers"] = json!([{"name": "c"}]);
    pod_dns_config(
        &pod_with_spec(spec),
        settings,
        &["192.168.1.10".to_owned(), "fd00::1".to_owned()],
    )
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn resolv_conf_parsing() {
    let text = "# comment\nnameserver 1.1.1.1\n  nameserver 8.8.8.8 extra\nsearch a.example. . b.example\n\
                search c.example d.example.\noptions ndots:2 timeout:1\noptions ndots:3 rotate\ndomain x\n";
    let conf = ResolvConf::parse(text).unwrap_or_default();
    assert_eq!(conf.nameservers, strings(&["1.1.1.1", "8.8.8.8"]));
    assert_eq!(conf.searches, strings(&["c.example", "d.example"]));
    assert_eq!(conf.options, strings(&["ndots:3", "timeout:1", "rotate"]));
    assert!(matches!(
        ResolvConf::parse("nameserver\n"),
        Err(ResolvConfError::EmptyNameserver(1))
    ));
    assert_eq!(
        ResolvConf::parse("").unwrap_or_default(),
        ResolvConf::default()
    );
}

#[test]
fn resolv_conf_load_reads_the_file() {
    let dir = tempfile::tempdir();
    let Ok(dir) = dir else { panic!("tempdir") };
    let path = dir.path().join("resolv.conf");
    assert!(std::fs::write(&path, "nameserver 9.9.9.9\n").is_ok());
    assert_eq!(
        ResolvConf::load(&path)
            .map(|c| c.nameservers)
            .unwrap_or_default(),
        strings(&["9.9.9.9"])
    );
    assert!(matches!(
        ResolvConf::load(&dir.path().join("missing")),
        Err(ResolvConfError::Read { .. })
    ));
}

#[test]
fn cluster_first_uses_cluster_dns_and_search_path() {
    let d = dns_for(json!({}), &node().dns);
    assert_eq!(d.servers, strings(&["10.96.0.10"]));
    assert_eq!(
        d.searches,
        strings(&[
            "default.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local",
            "corp.example"
        ])
    );
    assert_eq!(d.options, strings(&["ndots:5"]));
    assert_eq!(
        dns_for(json!({"dnsPolicy": "ClusterFirst"}), &node().dns),
        d
    );
}

#[test]
fn cluster_first_without_cluster_dns_falls_back_to_the_host() {
    let mut settings = node().dns;
    settings.cluster_dns.clear();
    let d = dns_for(json!({"dnsPolicy": "ClusterFirst"}), &settings);
    assert_eq!(d.servers, strings(&["192.168.1.1"]));
    assert_eq!(d.searches, strings(&["corp.example"]));
    assert_eq!(d.options, strings(&["edns0"]));
}

#[test]
fn default_and_host_network_policies() {
    let host =
        |d: &DnsConfig| d.servers == strings(&["192.168.1.1"]) && d.options == strings(&["edns0"]);
    assert!(host(&dns_for(json!({"dnsPolicy": "Default"}), &node().dns)));
    assert!(host(&dns_for(json!({"hostNetwork": true}), &node().dns)));
    let d = dns_for(
        json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"}),
        &node().dns,
    );
    assert_eq!(d.servers, strings(&["10.96.0.10"]));
    let d = dns_for(json!({"dnsPolicy": "ClusterFirstWithHostNet"}), &node().dns);
    assert_eq!(d.servers, strings(&["10.96.0.10"]));
}

#[test]
fn no_host_resolv_conf_means_localhost() {
    let mut settings = node().dns;
    settings.host = None;
    let d = dns_for(json!({"dnsPolicy": "Default"}), &settings);
    assert_eq!(d.servers, strings(&["127.0.0.1", "::1"]));
    assert_eq!(d.searches, strings(&["."]));
}

#[test]
fn none_policy_takes_only_dns_config_and_merges_options() {
    let d = dns_for(
        json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.1.1.1", "1.1.1.1"],
            "searches": ["a.example"], "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}, {"name": ""}]}}),
        &node().dns,
    );
    assert_eq!(d.servers, strings(&["1.1.1.1"]));
    assert_eq!(d.searches, strings(&["a.example"]));
    assert_eq!(d.options, strings(&["ndots:2", "edns0"]));
    let d = dns_for(
        json!({"dnsConfig": {"options": [{"name": "ndots", "value": "1"}], "nameservers": ["9.9.9.9"]}}),
        &node().dns,
    );
    assert_eq!(d.options, strings(&["ndots:1"]));
    assert_eq!(d.servers, strings(&["10.96.0.10", "9.9.9.9"]));
}

#[test]
fn resolver_limits_are_enforced() {
    let many: Vec<String> = (0..40).map(|i| format!("d{i}.example")).collect();
    let long = "x".repeat(254);
    let d = dns_for(
        json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.0.0.1", "1.0.0.2", "1.0.0.3", "1.0.0.4"],
            "searches": [long.clone()]}}),
        &node().dns,
    );
    assert_eq!(d.servers.len(), 3);
    assert!(d.searches.is_empty());
    let d = dns_for(
        json!({"dnsPolicy": "None", "dnsConfig": {"searches": many}}),
        &node().dns,
    );
    assert_eq!(d.searches.len(), 32);
    let wide: Vec<String> = (0..20)
        .map(|i| format!("{i:03}{}", "y".repeat(200)))
        .collect();
    let d = dns_for(
        json!({"dnsPolicy": "None", "dnsConfig": {"searches": wide}}),
        &node().dns,
    );
    assert!(d.searches.join(" ").len() <= 2048);
    assert_eq!(d.searches.len(), 10);
}
