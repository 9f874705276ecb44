use super::*;

fn svc(spec: Value) -> Value {
    json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec})
}

fn dual() -> ServiceRanges {
    ServiceRanges::new(
        &["10.96.0.0/16".to_string(), "fd00:10:96::/112".to_string()],
        30000..=32767,
    )
    .expect("ranges")
}

fn create(ranges: &ServiceRanges, spec: Value, taken: &Taken) -> Result<Value, ApiError> {
    let mut s = svc(spec);
    admit_create(ranges, &mut s, taken).map(|()| s)
}

fn in_cidr(ip: &Value, cidr: &str) -> bool {
    let c = Cidr::parse(cidr).expect("cidr");
    ip.as_str()
        .and_then(|s| s.parse().ok())
        .is_some_and(|ip| c.contains(ip))
}

#[test]
fn cluster_ips_come_from_each_family_range() {
    let single = ServiceRanges::default();
    let s = create(&single, json!({"ports": [{"port": 80}]}), &Taken::default()).expect("created");
    assert!(in_cidr(&s["spec"]["clusterIP"], "10.96.0.0/16"), "{s}");
    assert_eq!(s["spec"]["clusterIPs"], json!([s["spec"]["clusterIP"]]));
    assert_eq!(s["spec"]["ipFamilies"], json!(["IPv4"]));
    assert_eq!(s["spec"]["ipFamilyPolicy"], "SingleStack");
    assert_eq!(s["status"], json!({"loadBalancer": {}}));
    let d = create(
        &dual(),
        json!({"ipFamilyPolicy": "PreferDualStack", "ports": [{"port": 80}]}),
        &Taken::default(),
    )
    .expect("dual");
    assert!(in_cidr(&d["spec"]["clusterIPs"][0], "10.96.0.0/16"), "{d}");
    assert!(
        in_cidr(&d["spec"]["clusterIPs"][1], "fd00:10:96::/112"),
        "{d}"
    );
    let headless = create(
        &dual(),
        json!({"clusterIP": "None", "selector": {"app": "db"}}),
        &Taken::default(),
    )
    .expect("headless");
    assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
    let external = create(
        &single,
        json!({"type": "ExternalName", "externalName": "example.com"}),
        &Taken::default(),
    )
    .expect("external name");
    assert!(external["spec"].get("clusterIP").is_none(), "{external}");
}

#[test]
fn requested_ips_must_be_free_and_in_range() {
    let ranges = ServiceRanges::default();
    let first = create(
        &ranges,
        json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}),
        &Taken::default(),
    )
    .expect("first");
    assert_eq!(first["spec"]["clusterIPs"], json!(["10.96.0.10"]));
    let held = taken([&first].into_iter());
    let err = create(
        &ranges,
        json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}),
        &held,
    )
    .expect_err("taken");
    assert_eq!((err.code, err.reason), (422, "Invalid"));
    assert_eq!(
        err.message,
        "Service \"web\" is invalid: spec.clusterIPs: Invalid value: []string{\"10.96.0.10\"}: failed to allocate IP 10.96.0.10: provided IP is already allocated"
    );
    assert_eq!(
        err.to_status()["details"]["causes"][0]["field"],
        "spec.clusterIPs"
    );
    let err = create(
        &ranges,
        json!({"clusterIP": "10.1.0.10", "ports": [{"port": 80}]}),
        &held,
    )
    .expect_err("outside");
    assert!(
        err.message.contains("is not in the valid range"),
        "{}",
        err.message
    );
}

#[test]
fn node_ports_are_allocated_shared_by_number_and_checked() {
    let ranges = ServiceRanges::default();
    let s = create(
        &ranges,
        json!({"type": "NodePort", "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
            {"name": "web", "port": 80, "nodePort": 30080}]}),
        &Taken::default(),
    )
    .expect("node port service");
    let ports = &s["spec"]["ports"];
    assert_eq!(ports[0]["nodePort"], ports[1]["nodePort"]);
    assert!(ports[0]["nodePort"]
        .as_i64()
        .is_some_and(|p| (30000..=32767).contains(&p)));
    assert_eq!(ports[2]["nodePort"], 30080);
    assert_eq!(s["spec"]["externalTrafficPolicy"], "Cluster");
    assert!(s["spec"].get("healthCheckNodePort").is_none());
    let held = taken([&s].into_iter());
    let err = create(
        &ranges,
        json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
        &held,
    )
    .expect_err("taken port");
    assert_eq!(
        err.message,
        "Service \"web\" is invalid: spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
    );
    let lb = create(
        &ranges,
        json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [{"port": 80}]}),
        &held,
    )
    .expect("load balancer");
    let hc = lb["spec"]["healthCheckNodePort"]
        .as_i64()
        .expect("health check port");
    assert_ne!(Some(hc), lb["spec"]["ports"][0]["nodePort"].as_i64());
    let clusterip = create(&ranges, json!({"ports": [{"port": 80}]}), &held).expect("clusterip");
    assert!(clusterip["spec"]["ports"][0].get("nodePort").is_none());
}

#[test]
fn validation_errors_carry_causes() {
    let err = create(
        &ServiceRanges::default(),
        json!({"type": "Bogus", "ports": [{"port": 0}, {"port": 80}]}),
        &Taken::default(),
    )
    .expect_err("invalid");
    assert_eq!(err.code, 422);
    let fields: Vec<Value> = err.to_status()["details"]["causes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|c| c["field"].clone())
        .collect();
    assert_eq!(
        fields,
        vec![
            json!("spec.type"),
            json!("spec.ports[0].name"),
            json!("spec.ports[0].port"),
            json!("spec.ports[0].targetPort"),
            json!("spec.ports[1].name")
        ]
    );
}

#[test]
fn updates_keep_allocations_and_follow_type_changes() {
    let ranges = ServiceRanges::default();
    let old = create(
        &ranges,
        json!({"ports": [{"name": "http", "port": 80}]}),
        &Taken::default(),
    )
    .expect("created");
    let ip = old["spec"]["clusterIP"].clone();
    let mut same = old.clone();
    same["spec"]["clusterIP"] = json!("");
    same["spec"].as_object_mut().map(|s| s.remove("clusterIPs"));
    admit_update(&ranges, &old, &mut same, &Taken::default()).expect("kept");
    assert_eq!(same["spec"]["clusterIP"], ip);
    let mut moved = old.clone();
    moved["spec"]["clusterIP"] = json!("10.96.0.99");
    moved["spec"]["clusterIPs"] = json!(["10.96.0.99"]);
    let err = admit_update(&ranges, &old, &mut moved, &Taken::default()).expect_err("immutable");
    assert_eq!(
        err.message,
        "Service \"web\" is invalid: spec.clusterIPs[0]: Invalid value: []string{\"10.96.0.99\"}: may not change once set"
    );
    let mut node_port = old.clone();
    node_port["spec"]["type"] = json!("NodePort");
    admit_update(&ranges, &old, &mut node_port, &Taken::default()).expect("to NodePort");
    let np = node_port["spec"]["ports"][0]["nodePort"].clone();
    assert!(np.as_i64().is_some(), "{node_port}");
    assert_eq!(node_port["spec"]["externalTrafficPolicy"], "Cluster");
    let mut renamed = node_port.clone();
    renamed["spec"]["ports"][0]
        .as_object_mut()
        .map(|p| p.remove("nodePort"));
    renamed["spec"]["ports"][0]["targetPort"] = json!(8080);
    admit_update(&ranges, &node_port, &mut renamed, &Taken::default()).expect("kept node port");
    assert_eq!(renamed["spec"]["ports"][0]["nodePort"], np);
    let mut back = node_port.clone();
    back["spec"]["type"] = json!("ClusterIP");
    admit_update(&ranges, &node_port, &mut back, &Taken::default()).expect("back to ClusterIP");
    assert!(back["spec"]["ports"][0].get("nodePort").is_none(), "{back}");
    assert!(
        back["spec"].get("externalTrafficPolicy").is_none(),
        "{back}"
    );
    assert_eq!(back["spec"]["clusterIP"], ip);
}

#[test]
fn ranges_accept_one_cidr_or_one_per_family() {
    assert!(ServiceRanges::new(&["10.96.0.0/16".into()], 30000..=32767).is_ok());
    assert!(dual().families() == vec![IpFamily::V4, IpFamily::V6]);
    assert!(ServiceRanges::new(
        &["10.96.0.0/16".into(), "10.97.0.0/16".into()],
        30000..=32767
    )
    .is_err());
    assert!(ServiceRanges::new(&["bogus".into()], 30000..=32767).is_err());
    assert!(ServiceRanges::new(&[], 30000..=32767).is_err());
}
