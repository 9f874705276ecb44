//! The service proxy against the kernel, with real traffic: two pod namespaces on a bridge
//! serving HTTP (and UDP), a client namespace routed through the node, one Proxier table.
//! A guard table drops anything still addressed to the test's service range after NAT, so
//! no stray packet leaves the machine.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use netproxy::model::IpFamily;
use netproxy::{
    ClusterState, NftBackend, NftCommand, NodeContext, Proxier, ProxyConfig, ProxyError,
    ProxyMetrics,
};
use serde_json::{json, Value};
use tests::cleanup::Cleanup;
use tests::names::unique_short;
use tests::netns::{delete_link, NetNs};
use tests::podnet::{enable_forwarding, Httpd};

/// The real backend, recording every script it applies.
#[derive(Clone)]
struct Recording {
    nft: NftCommand,
    scripts: Arc<Mutex<Vec<String>>>,
}

impl NftBackend for Recording {
    fn apply(&mut self, script: &str) -> Result<(), ProxyError> {
        self.scripts.lock().unwrap().push(script.to_owned());
        self.nft.apply(script)
    }

    fn list_table(&mut self, family: IpFamily, table: &str) -> Result<Option<Value>, ProxyError> {
        self.nft.list_table(family, table)
    }
}

fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("{args:?}"))?;
    ensure!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A namespace plugged into the node with a veth; `bridge` = attach the host end to it.
fn plug(
    ns: &NetNs,
    host_end: &str,
    bridge: Option<&str>,
    addr: &str,
    gateway: &str,
    cleanup: &mut Cleanup,
) -> Result<()> {
    let peer = format!("{host_end}p");
    sh(&[
        "ip", "link", "add", host_end, "type", "veth", "peer", "name", &peer,
    ])?;
    let name = host_end.to_owned();
    cleanup.defer(format!("veth {name}"), move || delete_link(&name));
    sh(&["ip", "link", "set", &peer, "netns", ns.name()])?;
    if let Some(br) = bridge {
        sh(&["ip", "link", "set", host_end, "master", br])?;
        // As the CNI bridge plugin's hairpinMode: with br_netfilter, a pod's packet DNATed
        // back to itself leaves through the port it came in on.
        sh(&[
            "ip",
            "link",
            "set",
            host_end,
            "type",
            "bridge_slave",
            "hairpin",
            "on",
        ])?;
    }
    sh(&["ip", "link", "set", host_end, "up"])?;
    ns.exec_ok(&["ip", "link", "set", "lo", "up"])?;
    ns.exec_ok(&["ip", "link", "set", &peer, "name", "eth0"])?;
    ns.exec_ok(&["ip", "addr", "add", addr, "dev", "eth0"])?;
    ns.exec_ok(&["ip", "link", "set", "eth0", "up"])?;
    ns.exec_ok(&["ip", "route", "add", "default", "via", gateway])?;
    Ok(())
}

/// A UDP server in `ns` answering every datagram with `reply`.
fn udp_echo(ns: &NetNs, port: u16, reply: &str) -> Result<Child> {
    let code = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',{port}))\nwhile True:\n  d,a=s.recvfrom(100)\n  s.sendto(b'{reply}',a)\n"
    );
    Command::new("ip")
        .args(["netns", "exec", ns.name(), "python3", "-c", &code])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the UDP server")
}

fn udp_ask(addr: SocketAddr) -> Result<String> {
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.set_read_timeout(Some(Duration::from_millis(300)))?;
    let mut buf = [0u8; 100];
    for _ in 0..10 {
        sock.send_to(b"?", addr)?;
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            return Ok(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    anyhow::bail!("no UDP answer from {addr}")
}

/// The marker served at `addr:port`, fetched from `ns` or the node.
fn fetch(ns: Option<&NetNs>, addr: &str, port: u16) -> Result<String> {
    let url = format!("http://{addr}:{port}/marker");
    let curl = ["curl", "-sS", "-m", "2", "--noproxy", "*", url.as_str()];
    let out = match ns {
        Some(ns) => ns.exec(&curl)?,
        None => Command::new(curl[0]).args(&curl[1..]).output()?,
    };
    ensure!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Markers seen over up to `tries` fetches, stopping once `want` distinct ones appeared.
fn spread(
    ns: Option<&NetNs>,
    addr: &str,
    port: u16,
    want: usize,
    tries: usize,
) -> Result<Vec<String>> {
    let mut seen: Vec<String> = Vec::new();
    for _ in 0..tries {
        let marker = fetch(ns, addr, port)?;
        if !seen.contains(&marker) {
            seen.push(marker);
        }
        if seen.len() >= want {
            break;
        }
    }
    seen.sort();
    Ok(seen)
}

fn service(
    name: &str,
    ip: &str,
    proto: &str,
    port: u16,
    target: u16,
    node_port: Option<u16>,
) -> Arc<Service> {
    let mut p = json!({"name": "p", "protocol": proto, "port": port, "targetPort": target});
    if let Some(np) = node_port {
        p["nodePort"] = json!(np);
    }
    let kind = if node_port.is_some() {
        "NodePort"
    } else {
        "ClusterIP"
    };
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"namespace": "np-test", "name": name},
            "spec": {"type": kind, "clusterIP": ip, "clusterIPs": [ip], "ports": [p]}
        }))
        .unwrap(),
    )
}

fn slice(service: &str, proto: &str, port: u16, ips: &[&str]) -> Arc<EndpointSlice> {
    let eps: Vec<Value> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}, "nodeName": "node-a"}))
        .collect();
    Arc::new(serde_json::from_value(json!({
        "metadata": {"namespace": "np-test", "name": format!("{service}-1"), "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4", "ports": [{"name": "p", "protocol": proto, "port": port}], "endpoints": eps
    })).unwrap())
}

fn refused_quickly(addr: &str, port: u16) -> Result<()> {
    let started = Instant::now();
    let sock: SocketAddr = format!("{addr}:{port}").parse()?;
    let err = TcpStream::connect_timeout(&sock, Duration::from_secs(3))
        .err()
        .context("connected to a service without endpoints")?;
    ensure!(err.kind() == std::io::ErrorKind::ConnectionRefused, "{err}");
    ensure!(
        started.elapsed() < Duration::from_secs(1),
        "refusal took {:?}",
        started.elapsed()
    );
    Ok(())
}

#[test]
fn services_carry_real_traffic_incrementally_and_survive_adoption() -> Result<()> {
    enable_forwarding()?;
    let mut cleanup = Cleanup::new();
    let a: u8 = 64 + rand_byte() % 60;
    let b: u8 = rand_byte();
    let (pod_net, client_net, svc_net) = (
        format!("10.{a}.{b}"),
        format!("10.{}.{b}", a + 64),
        format!("198.18.{b}"),
    );
    let table = unique_short("npx");
    let guard = unique_short("npg");
    for t in [table.clone(), guard.clone()] {
        cleanup.defer(format!("table {t}"), move || {
            for fam in ["ip", "ip6", "inet"] {
                let _ = Command::new("nft")
                    .args(["delete", "table", fam, &t])
                    .stderr(Stdio::null())
                    .status();
            }
        });
    }
    sh(&["nft", &format!("add table inet {guard}; add chain inet {guard} guardout {{ type filter hook output priority 0 ; }}; add chain inet {guard} guardfwd {{ type filter hook forward priority 0 ; }}; add rule inet {guard} guardout ip daddr {svc_net}.0/24 drop; add rule inet {guard} guardfwd ip daddr {svc_net}.0/24 drop")])?;

    // Two pods on a bridge, a client routed through the node.
    let bridge = unique_short("npb");
    sh(&["ip", "link", "add", &bridge, "type", "bridge"])?;
    let br = bridge.clone();
    cleanup.defer("bridge", move || delete_link(&br));
    sh(&[
        "ip",
        "addr",
        "add",
        &format!("{pod_net}.1/24"),
        "dev",
        &bridge,
    ])?;
    sh(&["ip", "link", "set", &bridge, "up"])?;
    sh(&[
        "ip",
        "route",
        "add",
        &format!("{svc_net}.0/24"),
        "dev",
        &bridge,
    ])?;
    let pods = [NetNs::new("npa")?, NetNs::new("npb")?];
    let client = NetNs::new("npc")?;
    for (i, pod) in pods.iter().enumerate() {
        plug(
            pod,
            &unique_short("npv"),
            Some(&bridge),
            &format!("{pod_net}.{}/24", i + 2),
            &format!("{pod_net}.1"),
            &mut cleanup,
        )?;
    }
    let client_veth = unique_short("npv");
    plug(
        &client,
        &client_veth,
        None,
        &format!("{client_net}.2/24"),
        &format!("{client_net}.1"),
        &mut cleanup,
    )?;
    sh(&[
        "ip",
        "addr",
        "add",
        &format!("{client_net}.1/24"),
        "dev",
        &client_veth,
    ])?;
    let httpd = [Httpd::start(&pods[0])?, Httpd::start(&pods[1])?];
    let mut udp = [
        udp_echo(&pods[0], 5353, "pod-a")?,
        udp_echo(&pods[1], 5353, "pod-b")?,
    ];
    let (ip_a, ip_b) = (format!("{pod_net}.2"), format!("{pod_net}.3"));
    let node_ip = format!("{client_net}.1");
    let (web, dns, empty, hair) = (
        format!("{svc_net}.10"),
        format!("{svc_net}.53"),
        format!("{svc_net}.99"),
        format!("{svc_net}.77"),
    );
    let node_port = 30000 + u16::from(b) * 8 + u16::from(a % 8);

    let config = ProxyConfig {
        cluster_cidr: format!("10.{a}.0.0/16,10.{}.0.0/16", a + 64),
        table_name: table.clone(),
        ..Default::default()
    };
    let node = NodeContext {
        name: "node-a".into(),
        ips: vec![node_ip.parse()?],
        zone: None,
    };
    let scripts = Arc::new(Mutex::new(Vec::new()));
    let backend = Recording {
        nft: NftCommand::new()?,
        scripts: scripts.clone(),
    };
    let metrics = || ProxyMetrics::register(&mut Default::default());
    let mut proxier = Proxier::new(&config, node.clone(), Box::new(backend.clone()), metrics())?;
    let services = vec![
        service("web", &web, "TCP", 80, 80, Some(node_port)),
        service("dns", &dns, "UDP", 53, 5353, None),
        service("empty", &empty, "TCP", 80, 80, None),
        service("hair", &hair, "TCP", 8080, 80, None),
    ];
    let mut state = ClusterState {
        services,
        slices: vec![
            slice("web", "TCP", 80, &[&ip_a, &ip_b]),
            slice("dns", "UDP", 5353, &[&ip_a]),
            slice("hair", "TCP", 80, &[&ip_a]),
        ],
    };
    let report = proxier.sync(&state, false)?;
    ensure!(report.applied && report.rejected.is_empty(), "{report:?}");

    let both = vec![httpd[0].marker.clone(), httpd[1].marker.clone()];
    let mut both_sorted = both.clone();
    both_sorted.sort();
    ensure!(
        spread(None, &web, 80, 2, 30)? == both_sorted,
        "host → ClusterIP spreads over both pods"
    );
    ensure!(
        spread(Some(&client), &web, 80, 2, 30)? == both_sorted,
        "netns → ClusterIP spreads over both pods"
    );
    ensure!(
        udp_ask(format!("{dns}:53").parse()?)? == "pod-a",
        "UDP ClusterIP"
    );
    refused_quickly(&empty, 80)?;
    refused_quickly(&web, 81)?; // unused port of a ClusterIP
    ensure!(
        fetch(Some(&client), &node_ip, node_port).is_ok(),
        "NodePort via the node IP"
    );
    ensure!(
        fetch(Some(&pods[0]), &hair, 8080)? == httpd[0].marker,
        "hairpin: a pod reaches itself through its service"
    );

    // Endpoint removal: only pod A serves; only web changes in the kernel.
    let before = scripts.lock().unwrap().len();
    state.slices[0] = slice("web", "TCP", 80, &[&ip_a]);
    let report = proxier.sync(&state, false)?;
    ensure!(report.changed_services == 1, "{report:?}");
    ensure!(scripts.lock().unwrap().len() == before + 1);
    ensure!(
        spread(None, &web, 80, 2, 8)? == vec![httpd[0].marker.clone()],
        "removed endpoint gets no traffic"
    );

    // UDP endpoint change reports the stale flow for conntrack cleanup.
    state.slices[1] = slice("dns", "UDP", 5353, &[&ip_b]);
    let report = proxier.sync(&state, false)?;
    let gone: IpAddr = ip_a.parse()?;
    ensure!(
        report
            .stale_udp
            .iter()
            .any(|s| s.endpoint == Some(gone) && s.port == 53),
        "{report:?}"
    );
    netproxy::conntrack::Conntrack::open()?.clear_udp_service(dns.parse()?, 53, Some(gone))?;
    ensure!(
        udp_ask(format!("{dns}:53").parse()?)? == "pod-b",
        "UDP follows the new endpoint"
    );

    // A kept-open connection, then a "restarted" proxier adopting the table: no flush.
    let mut conn =
        TcpStream::connect_timeout(&format!("{web}:80").parse()?, Duration::from_secs(2))?;
    drop(proxier);
    let mut adopted = Proxier::new(&config, node, Box::new(backend.clone()), metrics())?;
    adopted.adopt()?;
    let before = scripts.lock().unwrap().len();
    let report = adopted.sync(&state, false)?;
    for script in &scripts.lock().unwrap()[before..] {
        ensure!(
            !script.contains("flush") && !script.contains("delete"),
            "adoption rewrote the table:\n{script}"
        );
    }
    ensure!(report.full);
    conn.write_all(b"GET /marker HTTP/1.0\r\n\r\n")?;
    let mut answer = String::new();
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    conn.read_to_string(&mut answer)?;
    ensure!(
        answer.contains(&httpd[0].marker),
        "the connection survived adoption: {answer}"
    );
    ensure!(fetch(None, &web, 80)? == httpd[0].marker);

    adopted.cleanup()?;
    let tables = sh(&["nft", "list", "tables"])?;
    ensure!(!tables.contains(&table), "cleanup left {tables}");
    refused_or_dropped(&web)?;
    for child in &mut udp {
        let _ = child.kill();
        let _ = child.wait();
    }
    Ok(())
}

/// After cleanup the VIP is no longer served (the guard drops it).
fn refused_or_dropped(addr: &str) -> Result<()> {
    let sock: SocketAddr = format!("{addr}:80").parse()?;
    ensure!(
        TcpStream::connect_timeout(&sock, Duration::from_millis(500)).is_err(),
        "{addr} still served"
    );
    Ok(())
}

fn rand_byte() -> u8 {
    let mut buf = [0u8; 1];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf));
    buf[0]
}
