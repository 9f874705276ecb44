//! The server on 127.0.0.1:<free port>, queried with the real `dig`, forwarding to a real
//! `unbound` on loopback serving a local test zone. No root needed.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dns::{ClusterState, DnsConfig, DnsMetrics};
use serde_json::json;
use tokio::sync::watch;

/// A loopback port free for both UDP and TCP.
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn tempdir(tag: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("capstan-dns-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// unbound in the foreground with a local-data zone; killed on drop.
struct Unbound {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Unbound {
    fn start() -> Self {
        let port = free_port();
        let dir = tempdir("unbound");
        let conf = dir.join("unbound.conf");
        std::fs::write(
            &conf,
            format!(
                r#"server:
  interface: 127.0.0.1
  port: {port}
  do-daemonize: no
  do-ip6: no
  use-syslog: no
  logfile: ""
  chroot: ""
  username: ""
  pidfile: ""
  directory: "{dir}"
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
  local-zone: "test.example." static
  local-data: "www.test.example. 300 IN A 192.0.2.10"
  local-data: "brief.test.example. 1 IN A 192.0.2.11"
  local-zone: "refused.example." refuse
remote-control:
  control-enable: no
"#,
                dir = dir.display()
            ),
        )
        .unwrap();
        let child = Command::new("unbound")
            .args(["-d", "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("unbound (apt: unbound) must be installed");
        let unbound = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while dig(port, &["www.test.example", "A"]).is_empty() {
            assert!(Instant::now() < deadline, "unbound did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        unbound
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `dig +short` output lines (answers only).
fn dig(port: u16, args: &[&str]) -> Vec<String> {
    let text = dig_raw(port, &[&["+short"], args].concat());
    text.lines().map(str::to_owned).collect()
}

/// Full `dig` output.
fn dig_raw(port: u16, args: &[&str]) -> String {
    let out = Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string(), "+time=3", "+tries=1"])
        .args(args)
        .output()
        .expect("dig (apt: dnsutils) must be installed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn status(port: u16, args: &[&str]) -> String {
    let text = dig_raw(port, args);
    text.split("status: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or("no answer")
        .to_owned()
}

fn cluster() -> ClusterState {
    let svc = |ns: &str, name: &str, spec: serde_json::Value| {
        Arc::new(
            serde_json::from_value(
                json!({"metadata": {"name": name, "namespace": ns}, "spec": spec}),
            )
            .unwrap(),
        )
    };
    ClusterState {
        services: vec![
            svc(
                "default",
                "web",
                json!({"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20", "fd00::20"],
                       "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}),
            ),
            svc(
                "default",
                "db",
                json!({"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}),
            ),
            svc(
                "default",
                "ext",
                json!({"type": "ExternalName", "externalName": "www.test.example"}),
            ),
        ],
        slices: vec![Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "db-1", "namespace": "default",
                             "labels": {"kubernetes.io/service-name": "db"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.1.0.5"], "hostname": "db-0"},
                              {"addresses": ["10.1.0.6"]}],
                "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]
            }))
            .unwrap(),
        )],
        pods: Vec::new(),
    }
}

struct Running {
    port: u16,
    health: String,
    registry: prometheus_client::registry::Registry,
    _changes: watch::Sender<u64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), dns::DnsError>>,
}

async fn start(upstream: u16, synced: bool) -> Running {
    let port = free_port();
    let health_port = free_port();
    let health = format!("127.0.0.1:{health_port}");
    let config = DnsConfig {
        port,
        upstreams: vec![format!("127.0.0.1:{upstream}")],
        health_bind_address: health.clone(),
        serve_stale: Duration::from_secs(600),
        ..DnsConfig::default()
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = DnsMetrics::register(&mut registry);
    let (tx, rx) = watch::channel(0);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let sockets: Vec<SocketAddr> = vec![SocketAddr::from(([127, 0, 0, 1], port))];
    let snapshot = move || synced.then(cluster);
    let task = tokio::spawn(dns::serve(config, sockets, rx, snapshot, metrics, async {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = tokio::task::spawn_blocking(move || {
            status(port, &["dns-version.cluster.local", "TXT"])
        })
        .await
        .unwrap();
        if ready != "no answer" {
            break;
        }
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Running {
        port,
        health,
        registry,
        _changes: tx,
        stop: Some(stop),
        task,
    }
}

impl Running {
    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

/// Runs blocking `dig` calls off the runtime the server runs on.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_zone_forwarding_cache_and_stale() {
    let mut unbound = Unbound::start();
    let server = start(unbound.port, true).await;
    let port = server.port;
    blocking(move || {
        // The cluster zone, each record type.
        assert_eq!(
            dig(port, &["dns-version.cluster.local", "TXT"]),
            ["\"1.1.0\""]
        );
        assert_eq!(
            dig(port, &["web.default.svc.cluster.local"]),
            ["10.96.0.20"]
        );
        assert_eq!(
            dig(port, &["WEB.Default.svc.cluster.local", "AAAA"]),
            ["fd00::20"]
        );
        assert_eq!(
            dig(port, &["_http._tcp.web.default.svc.cluster.local", "SRV"]),
            ["0 100 80 web.default.svc.cluster.local."]
        );
        let mut db = dig(port, &["db.default.svc.cluster.local"]);
        db.sort();
        assert_eq!(db, ["10.1.0.5", "10.1.0.6"]);
        assert_eq!(
            dig(port, &["db-0.db.default.svc.cluster.local"]),
            ["10.1.0.5"]
        );
        let mut srv = dig(port, &["_pg._tcp.db.default.svc.cluster.local", "SRV"]);
        srv.sort();
        assert_eq!(
            srv,
            [
                "0 50 5432 10-1-0-6.db.default.svc.cluster.local.",
                "0 50 5432 db-0.db.default.svc.cluster.local."
            ]
        );
        assert_eq!(
            dig(port, &["-x", "10.96.0.20"]),
            ["web.default.svc.cluster.local."]
        );
        assert_eq!(
            dig(port, &["1-2-3-4.default.pod.cluster.local"]),
            ["1.2.3.4"]
        );
        // ExternalName: the CNAME from the zone (dig +short prints the chain as received).
        assert_eq!(
            dig(port, &["ext.default.svc.cluster.local"])[0],
            "www.test.example."
        );
        assert_eq!(
            status(port, &["nope.default.svc.cluster.local"]),
            "NXDOMAIN"
        );
        let nodata = dig_raw(port, &["default.svc.cluster.local", "A"]);
        assert!(nodata.contains("status: NOERROR"), "{nodata}");
        assert!(nodata.contains("SOA"), "NODATA carries the SOA: {nodata}");
        assert!(nodata.contains(" aa "), "authoritative: {nodata}");
        let any = dig_raw(port, &["web.default.svc.cluster.local", "ANY"]);
        assert!(any.contains("HINFO") && any.contains("RFC8482"), "{any}");
        // Over TCP too.
        assert_eq!(
            dig(port, &["+tcp", "web.default.svc.cluster.local"]),
            ["10.96.0.20"]
        );

        // Forwarded to unbound.
        assert_eq!(dig(port, &["www.test.example"]), ["192.0.2.10"]);
        assert_eq!(dig(port, &["+tcp", "www.test.example"]), ["192.0.2.10"]);
        assert_eq!(status(port, &["missing.test.example"]), "NXDOMAIN");
        assert_eq!(status(port, &["x.refused.example"]), "SERVFAIL");
        assert_eq!(dig(port, &["brief.test.example"]), ["192.0.2.11"]);
    })
    .await;

    // Cached: answered without asking unbound again.
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &server.registry).unwrap();
    let hits_line = text
        .lines()
        .find(|l| l.starts_with("coredns_cache_hits_total") && l.contains("success"))
        .unwrap()
        .to_owned();
    assert!(
        text.contains(&format!(
            "coredns_forward_requests_total{{to=\"127.0.0.1:{}\"}}",
            unbound.port
        )),
        "{text}"
    );

    // Upstream gone: the expired brief.test.example is served stale, with TTL 30.
    unbound.stop();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stale = blocking(move || dig_raw(port, &["brief.test.example"])).await;
    assert!(stale.contains("192.0.2.11"), "{stale}");
    assert!(stale.contains("\t30\tIN\tA"), "stale TTL: {stale}");
    let fresh = blocking(move || dig(port, &["www.test.example"])).await;
    assert_eq!(fresh, ["192.0.2.10"], "still fresh in the cache");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &server.registry).unwrap();
    let hits_after = text
        .lines()
        .find(|l| l.starts_with("coredns_cache_hits_total") && l.contains("success"))
        .unwrap();
    assert_ne!(
        hits_line, hits_after,
        "the fresh answer came from the cache"
    );
    assert_eq!(
        blocking(move || status(port, &["never.test.example"])).await,
        "SERVFAIL"
    );

    // /health
    let health = server.health.clone();
    let reply = blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(health).unwrap();
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        reply
    })
    .await;
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsynced_zone_servfails_but_forwards() {
    let unbound = Unbound::start();
    let server = start(unbound.port, false).await;
    let port = server.port;
    blocking(move || {
        assert_eq!(status(port, &["web.default.svc.cluster.local"]), "SERVFAIL");
        assert_eq!(dig(port, &["www.test.example"]), ["192.0.2.10"]);
    })
    .await;
    server.shutdown().await;
}
