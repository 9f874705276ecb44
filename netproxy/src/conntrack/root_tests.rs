//! Root test: real UDP flows through DNAT rules in a private network namespace, checked with
//! the `conntrack` tool before and after each cleanup.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::Command;

use nix::sched::{unshare, CloneFlags};

use super::{Conntrack, Family};

fn run(cmd: &str, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (is it installed? see scripts/deps.sh)"));
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(pipe);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `conntrack -L` lines of one family for UDP.
fn conntrack_list(family: &str) -> Vec<String> {
    run("conntrack", &["-L", "-p", "udp", "-f", family], None)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Whether a listed entry's original tuple goes to `dst` port `dport`.
fn listed(lines: &[String], dst: &str, dport: u16) -> bool {
    let (dst, dport) = (format!("dst={dst} "), format!("dport={dport} "));
    lines.iter().any(|line| {
        // The original tuple comes first on the line; the reply tuple repeats the keys.
        let original = line.split("src=").take(2).collect::<Vec<_>>().join("src=");
        original.contains(&dst) && original.contains(&dport)
    })
}

fn send(to: &str) {
    let to: SocketAddr = to.parse().unwrap();
    let bind: SocketAddr = match to.ip() {
        IpAddr::V4(_) => "0.0.0.0:0".parse().unwrap(),
        IpAddr::V6(_) => "[::]:0".parse().unwrap(),
    };
    UdpSocket::bind(bind).unwrap().send_to(b"ping", to).unwrap();
}

/// Sets up addresses, DNAT rules, receivers and four UDP flows, then exercises the cleanups.
fn scenario() {
    run("ip", &["link", "set", "lo", "up"], None);
    for addr in ["10.96.0.10/32", "10.244.0.5/32", "10.244.0.6/32"] {
        run("ip", &["addr", "add", addr, "dev", "lo"], None);
    }
    for addr in ["fd00:96::a/128", "fd00:244::5/128"] {
        run(
            "ip",
            &["-6", "addr", "add", addr, "dev", "lo", "nodad"],
            None,
        );
    }
    let table = format!("capstan_ct_test_{}", std::process::id());
    run(
        "nft",
        &["-f", "-"],
        Some(&format!(
            "table inet {table} {{
               chain out {{
                 type nat hook output priority -100;
                 ip daddr 10.96.0.10 udp dport 53 dnat ip to 10.244.0.5:5353
                 ip daddr 10.96.0.10 udp dport 54 dnat ip to 10.244.0.6:5353
                 ip6 daddr fd00:96::a udp dport 53 dnat ip6 to [fd00:244::5]:5353
               }}
             }}"
        )),
    );
    // Receivers, so no ICMP errors; kept open for the whole test.
    let _receivers: Vec<UdpSocket> = [
        "10.244.0.5:5353",
        "10.244.0.6:5353",
        "10.96.0.10:9999",
        "[fd00:244::5]:5353",
    ]
    .iter()
    .map(|a| UdpSocket::bind(a).unwrap())
    .collect();
    for to in [
        "10.96.0.10:53",
        "10.96.0.10:54",
        "10.96.0.10:9999",
        "[fd00:96::a]:53",
    ] {
        send(to);
    }

    let v4 = conntrack_list("ipv4");
    assert!(listed(&v4, "10.96.0.10", 53), "{v4:#?}");
    assert!(listed(&v4, "10.96.0.10", 54), "{v4:#?}");
    assert!(listed(&v4, "10.96.0.10", 9999), "{v4:#?}");
    assert!(listed(&conntrack_list("ipv6"), "fd00:96::a", 53));

    let mut ct = Conntrack::open().unwrap();
    let flows = ct.list(Family::V4).unwrap();
    let dns = flows
        .iter()
        .find(|f| f.original.dst_port == 53)
        .expect("our dump sees the flow");
    assert_eq!(dns.protocol, 17);
    assert_eq!(dns.reply.src, "10.244.0.5".parse::<IpAddr>().unwrap());
    assert_eq!(dns.reply.src_port, 5353);
    assert!(dns.dst_nat);

    let vip: IpAddr = "10.96.0.10".parse().unwrap();
    let other_backend: IpAddr = "10.244.0.6".parse().unwrap();
    assert_eq!(
        ct.clear_udp_service(vip, 53, Some(other_backend)).unwrap(),
        0
    );
    assert!(listed(&conntrack_list("ipv4"), "10.96.0.10", 53));

    assert_eq!(ct.clear_udp_service(vip, 53, None).unwrap(), 1);
    let v4 = conntrack_list("ipv4");
    assert!(!listed(&v4, "10.96.0.10", 53), "{v4:#?}");
    assert!(listed(&v4, "10.96.0.10", 54), "{v4:#?}");
    assert!(listed(&v4, "10.96.0.10", 9999), "{v4:#?}");
    assert!(listed(&conntrack_list("ipv6"), "fd00:96::a", 53));

    assert_eq!(ct.clear_udp_endpoint(other_backend).unwrap(), 1);
    let v4 = conntrack_list("ipv4");
    assert!(!listed(&v4, "10.96.0.10", 54), "{v4:#?}");
    assert!(listed(&v4, "10.96.0.10", 9999), "not DNATed: untouched");

    let vip6: IpAddr = "fd00:96::a".parse().unwrap();
    let backend6: IpAddr = "fd00:244::5".parse().unwrap();
    assert_eq!(ct.clear_udp_service(vip6, 53, Some(backend6)).unwrap(), 1);
    assert!(!listed(&conntrack_list("ipv6"), "fd00:96::a", 53));
    assert!(listed(&conntrack_list("ipv4"), "10.96.0.10", 9999));
}

#[test]
fn clears_udp_service_and_endpoint_flows_in_a_private_netns() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root: it creates a network namespace and nftables rules"
    );
    // A dedicated thread owns the namespace; it (and the table in it) vanish when it ends.
    std::thread::spawn(|| {
        unshare(CloneFlags::CLONE_NEWNET).unwrap();
        scenario();
    })
    .join()
    .unwrap();
}
