//! `capstan-loopback` against the reference `loopback`: `lo` comes up, the result has the
//! same shape, DEL and CHECK behave alike.

use std::path::PathBuf;

use anyhow::Result;
use serde_json::json;
use tests::cni::{invoke, Attachment, REFERENCE_DIR};
use tests::netns::NetNs;

fn attachment(ns: &NetNs) -> Attachment {
    Attachment {
        container_id: tests::names::unique_name("lo"),
        netns: ns.path(),
        ifname: "lo".to_owned(),
    }
}

fn conf(plugin: &str) -> serde_json::Value {
    json!({"cniVersion": "1.0.0", "name": "lo-test", "type": plugin})
}

fn lo_is_up(ns: &NetNs) -> Result<bool> {
    Ok(ns
        .exec_ok(&["ip", "-o", "link", "show", "lo"])?
        .contains(",UP"))
}

#[test]
fn lo_comes_up_like_the_reference_plugin_does_it() -> Result<()> {
    let ours = tests::binaries::workspace_bin("capstan-loopback")?;
    let theirs = PathBuf::from(REFERENCE_DIR).join("loopback");
    // The reference plugin insists on CNI_PATH being set even though it runs no other plugin.
    let cni_path = [PathBuf::from(REFERENCE_DIR)];
    let mut results = Vec::new();
    for (plugin, name) in [(&ours, "capstan-loopback"), (&theirs, "loopback")] {
        let ns = NetNs::new("lo")?;
        assert!(!lo_is_up(&ns)?, "a fresh namespace has lo down");
        let att = attachment(&ns);
        let result = invoke(plugin, "ADD", &att, &conf(name), &cni_path)?.ok()?;
        assert!(lo_is_up(&ns)?, "{name}: lo is not up");
        assert!(
            ns.can_ping("127.0.0.1")?,
            "{name}: loopback traffic does not flow"
        );
        invoke(plugin, "CHECK", &att, &conf(name), &cni_path)?.ok()?;
        invoke(plugin, "DEL", &att, &conf(name), &cni_path)?.ok()?;
        assert!(!lo_is_up(&ns)?, "{name}: DEL left lo up");
        results.push(result);
    }
    // Same interfaces and addresses in both results.
    assert_eq!(
        results[0]["interfaces"][0]["name"],
        results[1]["interfaces"][0]["name"]
    );
    let addresses = |r: &serde_json::Value| {
        let mut a: Vec<String> = r["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|ip| ip["address"].as_str().map(str::to_owned))
            .collect();
        a.sort();
        a
    };
    assert_eq!(addresses(&results[0]), addresses(&results[1]));
    assert!(addresses(&results[0]).contains(&"127.0.0.1/8".to_owned()));
    Ok(())
}

#[test]
fn del_without_a_namespace_succeeds_and_add_without_one_fails_clearly() -> Result<()> {
    let ours = tests::binaries::workspace_bin("capstan-loopback")?;
    let gone = Attachment {
        container_id: "gone".to_owned(),
        netns: PathBuf::from("/run/netns/capstan-no-such-namespace"),
        ifname: "lo".to_owned(),
    };
    invoke(&ours, "DEL", &gone, &conf("capstan-loopback"), &[])?.ok()?;
    let add = invoke(&ours, "ADD", &gone, &conf("capstan-loopback"), &[])?;
    assert!(!add.success);
    assert_eq!(add.code(), Some(3), "{}", add.json);
    let ns = NetNs::new("lo")?;
    let check = invoke(
        &ours,
        "CHECK",
        &attachment(&ns),
        &conf("capstan-loopback"),
        &[],
    )?;
    assert!(!check.success, "CHECK passed with lo down");
    let bad = invoke(&ours, "ADD", &attachment(&ns), &json!("not a config"), &[])?;
    assert_eq!(bad.code(), Some(7), "{}", bad.json);
    Ok(())
}
