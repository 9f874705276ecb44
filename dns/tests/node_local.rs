//! Root test: NodeLocal install/remove against the real kernel (bridge, addresses, nft table).

use std::process::Command;

use dns::{DnsConfig, NodeLocal};

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Removes what the test made even when an assertion fails.
struct Cleanup(DnsConfig);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = NodeLocal::remove(&self.0);
    }
}

#[test]
fn install_is_idempotent_and_remove_removes_everything() {
    let id = std::process::id() % 100_000;
    let config = DnsConfig {
        interface_name: format!("cdns{id}"),
        nftables_table: format!("capstan-dns-test-{id}"),
        local_address: "169.254.99.10".parse().unwrap(),
        serve_cluster_ip: Some("fd00:99::10".parse().unwrap()),
        ..DnsConfig::default()
    };
    let _cleanup = Cleanup(config.clone());
    let interface = config.interface_name.as_str();
    let table = config.nftables_table.as_str();

    NodeLocal::install(&config).unwrap();
    NodeLocal::install(&config).unwrap();

    let (ok, link) = run("ip", &["-d", "link", "show", "dev", interface]);
    assert!(ok && link.contains("bridge"), "{link}");
    let (_, addrs) = run("ip", &["-o", "addr", "show", "dev", interface]);
    assert_eq!(addrs.matches("169.254.99.10/32").count(), 1, "{addrs}");
    assert_eq!(addrs.matches("fd00:99::10/128").count(), 1, "{addrs}");
    let (ok, rules) = run("nft", &["list", "table", "inet", table]);
    assert!(ok, "table missing");
    assert_eq!(
        rules
            .matches("ip daddr 169.254.99.10 udp dport 53 notrack")
            .count(),
        2,
        "prerouting + output, once each after two installs:\n{rules}"
    );
    assert!(
        rules.contains("ip6 saddr fd00:99::10 tcp sport 53 notrack"),
        "{rules}"
    );

    NodeLocal::remove(&config).unwrap();
    NodeLocal::remove(&config).unwrap();
    assert!(
        !run("ip", &["link", "show", "dev", interface]).0,
        "link gone"
    );
    assert!(
        !run("nft", &["list", "table", "inet", table]).0,
        "table gone"
    );
}
