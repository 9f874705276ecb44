//! End-to-end in cluster mode: the agent's node services against the API test server (whose
//! EndpointSlice controller turns Ready pods into endpoints, as kube-controller-manager
//! does). Cluster DNS: pods resolve Services through the node-local address, the host too,
//! names follow the API, and `capstan dns --cleanup` removes the address and rules.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use tests::agent::{http_get, is_ready, Agent, Runtime, ServiceLines};
use tests::apiserver::ApiServer;
use tests::cluster::{apply, exec, node_ready, tail, wait_pod};
use tests::names::{free_port, unique_short};

const WEB: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: default
  labels: {app: web}
spec:
  nodeName: NODE
  terminationGracePeriodSeconds: 1
  hostname: web-0
  subdomain: web-headless
  containers:
  - name: web
    image: IMAGE
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 8080 -h /www"]
    ports: [{containerPort: 8080, name: http}]
    readinessProbe:
      httpGet: {path: /index.html, port: 8080}
      periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: web-headless, namespace: default}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 8080}]
"#;

/// `dig` against the node-local server: the answer lines (`+short`) and the status.
fn dig(server: &str, name: &str, kind: &str) -> Result<(String, Vec<String>)> {
    let out = Command::new("dig")
        .args([&format!("@{server}"), name, kind, "+tries=1", "+time=2"])
        .output()
        .context("running dig")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(out.status.success(), "dig {name} {kind} failed:\n{text}");
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or("")
        .to_owned();
    let answers = text
        .split(";; ANSWER SECTION:\n")
        .nth(1)
        .map(|section| {
            section
                .lines()
                .take_while(|line| !line.is_empty())
                .filter_map(|line| line.split_whitespace().last().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Ok((status, answers))
}

/// Poll `dig` until `check` accepts (status, answers).
fn dig_until(
    agent: &Agent,
    server: &str,
    (name, kind): (&str, &str),
    what: &str,
    check: impl Fn(&str, &[String]) -> bool,
) -> Result<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = (String::new(), Vec::new());
    while Instant::now() < deadline {
        last = dig(server, name, kind)?;
        if check(&last.0, &last.1) {
            return Ok(last.1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "{name} {kind} never {what}; last: {last:?}\nagent log:\n{}",
        tail(&agent.log(), 40)
    )
}

fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", name])
        .output()
        .is_ok_and(|out| out.status.success())
}

fn nft_table_exists(table: &str) -> bool {
    Command::new("nft")
        .args(["list", "table", "inet", table])
        .output()
        .is_ok_and(|out| out.status.success())
}

#[test]
fn pods_and_the_host_resolve_services_through_the_node_local_dns() -> Result<()> {
    let server = ApiServer::start()?;
    let address = "169.254.20.21";
    let interface = unique_short("cdns");
    let table = unique_short("cdns");
    let metrics_port = free_port()?;
    let services = ServiceLines {
        proxy: vec![
            "enabled: false".into(),
            format!("metricsBindAddress: 127.0.0.1:{metrics_port}"),
        ],
        dns: vec![
            format!("localAddress: {address}"),
            format!("interfaceName: {interface}"),
            format!("nftablesTable: {table}"),
            "healthBindAddress: \"\"".into(),
            // Nothing outside the cluster zone is asked here; a closed port keeps it local.
            "upstreams: [\"127.0.0.1:9\"]".into(),
        ],
    };
    let agent = Agent::join_with_services(Runtime::Builtin, &server, &[], services)?;
    node_ready(&server, &agent)?;
    apply(&server, &agent, WEB, &[])?;
    let pod = wait_pod(&server, &agent, "web", "Ready", is_ready)?;
    let pod_ip = pod["status"]["podIP"]
        .as_str()
        .context("pod IP")?
        .to_owned();
    let cluster_ip = server
        .get("services", "default", "web")
        .and_then(|svc| svc["spec"]["clusterIP"].as_str().map(str::to_owned))
        .context("the Service's ClusterIP")?;

    // The host asks the node-local address.
    let name = "web.default.svc.cluster.local";
    let answers = dig_until(&agent, address, (name, "A"), "answered", |status, a| {
        status == "NOERROR" && !a.is_empty()
    })?;
    ensure!(answers == [cluster_ip.clone()], "{answers:?}");
    let headless = dig_until(
        &agent,
        address,
        ("web-0.web-headless.default.svc.cluster.local", "A"),
        "listed the ready pod",
        |_, a| !a.is_empty(),
    )?;
    ensure!(headless == [pod_ip.clone()], "{headless:?}");
    let srv = dig(address, "_http._tcp.web.default.svc.cluster.local", "SRV")?;
    ensure!(
        srv.1 == ["web.default.svc.cluster.local."],
        "SRV answer: {srv:?}"
    );

    // The pod's resolver points at the node-local address and finds the Service by name.
    let resolv = exec(&agent, "web", &["cat", "/etc/resolv.conf"])?;
    ensure!(
        resolv.contains(&format!("nameserver {address}"))
            && resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "resolv.conf:\n{resolv}"
    );
    let looked_up = exec(&agent, "web", &["nslookup", name])?;
    ensure!(looked_up.contains(&cluster_ip), "nslookup:\n{looked_up}");

    // Names follow the API: a deleted Service is gone from the zone.
    server.kubectl(&["delete", "service", "web", "-n", "default"])?;
    dig_until(
        &agent,
        address,
        (name, "A"),
        "became NXDOMAIN",
        |status, _| status == "NXDOMAIN",
    )?;

    // The DNS families are on the agent's metrics listener.
    let metrics = http_get("127.0.0.1", metrics_port, "/metrics")?;
    ensure!(
        metrics.contains("coredns_dns_requests_total"),
        "metrics:\n{}",
        tail(&metrics, 20)
    );

    // Fail-static: stopping the agent leaves the address answering nothing but in place;
    // `capstan dns --cleanup` removes address and rules.
    drop(server);
    let mut agent = agent;
    agent.kill();
    ensure!(link_exists(&interface) && nft_table_exists(&table));
    agent.clean_up_node_services()?;
    ensure!(!link_exists(&interface), "{interface} is still there");
    ensure!(!nft_table_exists(&table), "table {table} is still there");
    Ok(())
}
