//! The plugin driven through `skel::dispatch` against a temporary data directory.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{code, Ipam};
use crate::error::CniError;
use crate::skel::dispatch;

struct Net {
    _tmp: tempfile::TempDir,
    data_dir: PathBuf,
}

impl Net {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("networks");
        Self {
            _tmp: tmp,
            data_dir,
        }
    }

    /// A 1.1.0 network config named "net" with `ipam` (plus this dataDir) and `extra`.
    fn conf(&self, ipam: Value, extra: Value) -> Vec<u8> {
        let mut ipam = ipam;
        ipam["type"] = json!("capstan-ipam");
        ipam["dataDir"] = json!(self.data_dir);
        let mut conf =
            json!({"cniVersion": "1.1.0", "name": "net", "type": "bridge", "ipam": ipam});
        if let (Some(conf), Some(extra)) = (conf.as_object_mut(), extra.as_object()) {
            conf.extend(extra.clone());
        }
        serde_json::to_vec(&conf).unwrap()
    }

    fn dir(&self) -> PathBuf {
        self.data_dir.join("net")
    }

    /// The network directory's files and contents (without the lock).
    fn files(&self) -> BTreeMap<String, String> {
        files(&self.dir())
    }
}

fn files(dir: &Path) -> BTreeMap<String, String> {
    let Ok(read) = fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    read.map(|e| e.unwrap())
        .filter(|e| e.file_name() != "lock")
        .map(|e| {
            let name = e.file_name().into_string().unwrap();
            (name, fs::read_to_string(e.path()).unwrap())
        })
        .collect()
}

fn run(cmd: &str, id: &str, ifname: &str, conf: &[u8]) -> Result<Option<Value>, CniError> {
    run_args(cmd, id, ifname, "", conf)
}

fn run_args(
    cmd: &str,
    id: &str,
    ifname: &str,
    args: &str,
    conf: &[u8],
) -> Result<Option<Value>, CniError> {
    let vars = |k: &str| match k {
        "CNI_COMMAND" => Some(cmd.to_owned()),
        "CNI_CONTAINERID" => Some(id.to_owned()),
        "CNI_IFNAME" => Some(ifname.to_owned()),
        "CNI_NETNS" => Some("/proc/self/ns/net".to_owned()),
        "CNI_ARGS" => Some(args.to_owned()),
        _ => None,
    };
    dispatch(&Ipam, vars, conf)
}

fn add(id: &str, conf: &[u8]) -> Vec<String> {
    let out = run("ADD", id, "eth0", conf).unwrap().unwrap();
    out["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ip| ip["address"].as_str().unwrap().to_owned())
        .collect()
}

fn small(start: &str, end: &str) -> Value {
    json!({"ranges": [[{"subnet": "10.1.0.0/24", "rangeStart": start, "rangeEnd": end}]]})
}

fn dual_stack() -> Value {
    json!({
        "ranges": [
            [{"subnet": "10.1.0.0/16", "rangeStart": "10.1.0.10", "rangeEnd": "10.1.0.100", "gateway": "10.1.0.1"}],
            [{"subnet": "fd00:1::/64"}]
        ],
        "routes": [{"dst": "0.0.0.0/0"}]
    })
}

#[test]
fn legacy_form_uses_host_local_defaults() {
    let net = Net::new();
    let conf = net.conf(json!({"subnet": "10.2.0.0/24"}), json!({}));
    let out = run("ADD", "c1", "eth0", &conf).unwrap().unwrap();
    assert_eq!(out["cniVersion"], "1.1.0");
    assert_eq!(
        out["ips"],
        json!([{"address": "10.2.0.2/24", "gateway": "10.2.0.1"}])
    );
    assert!(out.get("interfaces").is_none() && out.get("routes").is_none());
}

#[test]
fn invalid_configs_are_code_7_naming_the_field() {
    let net = Net::new();
    let cases = [
        (json!({}), "no IP ranges"),
        (json!({"ranges": []}), "no IP ranges"),
        (
            json!({"ranges": [[]]}),
            "ipam.ranges[0] is an empty range set",
        ),
        (json!({"subnet": "10.0.0.0/33"}), "ipam.subnet"),
        (json!({"rangeStart": "10.0.0.5"}), "ipam.subnet is required"),
        (
            small("10.1.1.1", ""),
            "ipam.ranges[0][0].rangeStart: 10.1.1.1 is not in subnet",
        ),
        (small("10.1.0.9", "10.1.0.3"), "after rangeEnd"),
        (
            json!({"ranges": [[{"subnet": "10.1.0.0/24", "gateway": "10.9.0.1"}]]}),
            "ipam.ranges[0][0].gateway",
        ),
        (
            json!({"ranges": [[{"subnet": "10.0.0.0/16"}], [{"subnet": "10.0.5.0/24"}]]}),
            "range set 0 (10.0.0.1-10.0.255.254) overlaps with range set 1",
        ),
        (
            json!({"subnet": "10.0.0.0/24", "routes": [{"dst": "nope"}]}),
            "invalid ipam",
        ),
        (json!({"subnet": 5}), "invalid ipam"),
    ];
    for (ipam, want) in cases {
        let err = run("ADD", "c1", "eth0", &net.conf(ipam.clone(), json!({}))).unwrap_err();
        assert_eq!(err.code, 7, "{ipam}: {err}");
        assert!(err.msg.contains(want), "{ipam}: {err} lacks {want:?}");
    }
    let no_ipam = br#"{"cniVersion":"1.1.0","name":"net","type":"capstan-ipam"}"#;
    let err = run("ADD", "c1", "eth0", no_ipam).unwrap_err();
    assert_eq!(
        (err.code, err.msg.as_str()),
        (7, "IPAM config missing 'ipam' key")
    );
    for name in ["..", ".", "a/b", ""] {
        let mut conf: Value = serde_json::from_slice(&net.conf(small("", ""), json!({}))).unwrap();
        conf["name"] = json!(name);
        let conf = serde_json::to_vec(&conf).unwrap();
        for cmd in ["ADD", "DEL"] {
            let err = run(cmd, "c1", "eth0", &conf).unwrap_err();
            assert_eq!(err.code, 7, "{name:?}: {err}");
        }
    }
    let err = run_args(
        "ADD",
        "c1",
        "eth0",
        "IP=bogus",
        &net.conf(small("", ""), json!({})),
    )
    .unwrap_err();
    assert!(err.code == 7 && err.msg.contains("CNI_ARGS IP"), "{err}");
    // Nothing was created by any of the refused ADDs.
    assert!(net.files().is_empty());
}

#[test]
fn dual_stack_allocates_one_address_per_set() {
    let net = Net::new();
    let conf = net.conf(dual_stack(), json!({"dns": {"nameservers": ["10.1.0.53"]}}));
    let out = run("ADD", "c1", "eth0", &conf).unwrap().unwrap();
    assert_eq!(
        out["ips"],
        json!([
            {"address": "10.1.0.10/16", "gateway": "10.1.0.1"},
            {"address": "fd00:1::2/64", "gateway": "fd00:1::1"}
        ])
    );
    assert_eq!(out["routes"], json!([{"dst": "0.0.0.0/0"}]));
    assert_eq!(out["dns"], json!({"nameservers": ["10.1.0.53"]}));
    assert_eq!(add("c2", &conf), ["10.1.0.11/16", "fd00:1::3/64"]);
    // The same container on another interface is another attachment.
    let out = run("ADD", "c1", "eth1", &conf).unwrap().unwrap();
    assert_eq!(out["ips"][0]["address"], "10.1.0.12/16");
    // Old versions tag each address with its family.
    let mut old: Value = serde_json::from_slice(&conf).unwrap();
    old["cniVersion"] = json!("0.3.1");
    let out = run("ADD", "c3", "eth0", &serde_json::to_vec(&old).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            out["ips"][0]["version"].as_str(),
            out["ips"][1]["version"].as_str()
        ),
        (Some("4"), Some("6"))
    );
}

#[test]
fn round_robin_continues_after_last_reserved_and_wraps() {
    let net = Net::new();
    let conf = net.conf(small("10.1.0.10", "10.1.0.12"), json!({}));
    assert_eq!(add("a", &conf), ["10.1.0.10/24"]);
    assert_eq!(add("b", &conf), ["10.1.0.11/24"]);
    run("DEL", "a", "eth0", &conf).unwrap();
    // .10 is free again, but round robin goes on to .12 and only then wraps to .10.
    assert_eq!(add("c", &conf), ["10.1.0.12/24"]);
    assert_eq!(add("d", &conf), ["10.1.0.10/24"]);
    assert_eq!(net.files()["last_reserved_ip.0"], "10.1.0.10");
}

#[test]
fn an_exhausted_set_leaves_nothing_behind() {
    let net = Net::new();
    let ipam = json!({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/64", "rangeStart": "fd00::5", "rangeEnd": "fd00::5"}]]});
    let conf = net.conf(ipam, json!({}));
    add("a", &conf);
    let before = net.files();
    let err = run("ADD", "b", "eth0", &conf).unwrap_err();
    assert_eq!(err.code, code::NO_ADDRESSES);
    assert_eq!(
        err.msg,
        "failed to allocate for range 1: no IP addresses available in range set: fd00::5-fd00::5"
    );
    // Neither the IPv4 address taken for range 0 nor its round-robin position remain.
    assert_eq!(net.files(), before);
}

#[test]
fn a_second_add_for_an_attachment_is_refused() {
    let net = Net::new();
    let conf = net.conf(small("", ""), json!({}));
    add("c1", &conf);
    let err = run("ADD", "c1", "eth0", &conf).unwrap_err();
    assert_eq!(err.code, code::DUPLICATE_ALLOCATION);
    assert!(
        err.msg
            .contains("10.1.0.2 has been allocated to c1, duplicate allocation is not allowed"),
        "{err}"
    );
    assert_eq!(net.files().len(), 2);
}

#[test]
fn del_is_idempotent_and_needs_no_state() {
    let net = Net::new();
    let conf = net.conf(dual_stack(), json!({}));
    // Never added, and no data directory: success without creating one.
    run("DEL", "ghost", "eth0", &conf).unwrap();
    assert!(!net.data_dir.exists());
    add("c1", &conf);
    add("c2", &conf);
    run("DEL", "c1", "eth0", &conf).unwrap();
    run("DEL", "c1", "eth0", &conf).unwrap();
    let files = net.files();
    assert!(files.values().all(|v| !v.starts_with("c1")), "{files:?}");
    assert_eq!(files.len(), 4); // c2's two addresses and two last_reserved_ip files
                                // DEL only needs the store location, so a config whose ranges broke still releases.
    let broken = net.conf(json!({"ranges": [[]]}), json!({}));
    run("DEL", "c2", "eth0", &broken).unwrap();
    assert_eq!(net.files().len(), 2);
}

#[test]
fn del_releases_legacy_container_only_files() {
    let net = Net::new();
    let conf = net.conf(small("", ""), json!({}));
    add("other", &conf);
    fs::write(net.dir().join("10.1.0.77"), "old-container\n").unwrap();
    run("DEL", "old-container", "eth0", &conf).unwrap();
    assert!(!net.files().contains_key("10.1.0.77"));
    assert!(net.files().contains_key("10.1.0.2"));
}

#[test]
fn gc_releases_attachments_outside_the_valid_list() {
    let net = Net::new();
    let conf = net.conf(small("", ""), json!({}));
    for id in ["keep", "drop"] {
        add(id, &conf);
    }
    run("ADD", "keep", "eth1", &conf).unwrap();
    fs::write(net.dir().join("10.1.0.99"), "legacy").unwrap();
    let gc = net.conf(
        small("", ""),
        json!({"cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}, {"containerID": "legacy", "ifname": "eth0"}]}),
    );
    run("GC", "", "", &gc).unwrap();
    let files = net.files();
    let held: Vec<&str> = files
        .iter()
        .filter(|(k, _)| k.parse::<std::net::IpAddr>().is_ok())
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(held, ["keep\r\neth0", "legacy"]);
    assert!(files.contains_key("last_reserved_ip.0"));
    // No valid list at all is refused, not read as "keep nothing".
    let err = run("GC", "", "", &net.conf(small("", ""), json!({}))).unwrap_err();
    assert_eq!(err.code, 7);
    assert_eq!(
        net.files().len(),
        files.len(),
        "a refused GC released something"
    );
    // An empty list does release everything.
    run(
        "GC",
        "",
        "",
        &net.conf(small("", ""), json!({"cni.dev/valid-attachments": []})),
    )
    .unwrap();
    assert_eq!(
        net.files().keys().collect::<Vec<_>>(),
        ["last_reserved_ip.0"]
    );
}

#[test]
fn check_requires_every_set_and_matching_prev_result() {
    let net = Net::new();
    let conf = net.conf(dual_stack(), json!({}));
    let err = run("CHECK", "c1", "eth0", &conf).unwrap_err();
    assert_eq!(err.code, code::CHECK_FAILED);
    let result = run("ADD", "c1", "eth0", &conf).unwrap().unwrap();
    run("CHECK", "c1", "eth0", &conf).unwrap();
    let with_prev = |prev: Value| net.conf(dual_stack(), json!({"prevResult": prev}));
    run("CHECK", "c1", "eth0", &with_prev(result.clone())).unwrap();
    let mut wrong = result.clone();
    wrong["ips"][0]["address"] = json!("10.1.0.50/16");
    let err = run("CHECK", "c1", "eth0", &with_prev(wrong)).unwrap_err();
    assert!(err.msg.contains("prevResult lists 10.1.0.50/16"), "{err}");
    let mut partial = result.clone();
    partial["ips"].as_array_mut().unwrap().pop();
    let err = run("CHECK", "c1", "eth0", &with_prev(partial)).unwrap_err();
    assert!(err.msg.contains("which prevResult does not list"), "{err}");
    let mut prefix = result;
    prefix["ips"][0]["address"] = json!("10.1.0.10/24");
    let err = run("CHECK", "c1", "eth0", &with_prev(prefix)).unwrap_err();
    assert!(err.msg.contains("prefix length 16"), "{err}");
    // Losing the IPv6 address fails the per-set check.
    fs::remove_file(net.dir().join("fd00:1::2")).unwrap();
    let err = run("CHECK", "c1", "eth0", &conf).unwrap_err();
    assert!(err.msg.contains("holds no address in range set 1"), "{err}");
    assert!(run("CHECK", "c2", "eth0", &conf).is_err());
}

#[test]
fn on_disk_format_matches_host_local() {
    let net = Net::new();
    let conf = net.conf(dual_stack(), json!({}));
    add("c1", &conf);
    let files = net.files();
    let expected: BTreeMap<String, String> = [
        ("10.1.0.10", "c1\r\neth0"),
        ("fd00:1::2", "c1\r\neth0"),
        ("last_reserved_ip.0", "10.1.0.10"),
        ("last_reserved_ip.1", "fd00:1::2"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(files, expected);
    let lock = fs::metadata(net.dir().join("lock")).unwrap();
    assert_eq!(lock.len(), 0);
}

#[test]
fn requested_addresses_are_honoured() {
    let net = Net::new();
    let conf = net.conf(small("", ""), json!({}));
    let out = run_args("ADD", "a", "eth0", "IgnoreUnknown=1;IP=10.1.0.42", &conf)
        .unwrap()
        .unwrap();
    assert_eq!(out["ips"][0]["address"], "10.1.0.42/24");
    let err = run_args("ADD", "b", "eth0", "IP=10.1.0.42", &conf).unwrap_err();
    assert_eq!(err.code, code::REQUESTED_UNAVAILABLE);
    let err = run_args("ADD", "b", "eth0", "IP=10.1.0.1", &conf).unwrap_err();
    assert!(err.msg.contains("gateway"), "{err}");
    let err = run_args("ADD", "b", "eth0", "IP=192.168.9.9", &conf).unwrap_err();
    assert!(err.msg.contains("192.168.9.9"), "{err}");
    let runtime = net.conf(
        small("", ""),
        json!({"runtimeConfig": {"ips": ["10.1.0.43/24"]}}),
    );
    assert_eq!(add("c", &runtime), ["10.1.0.43/24"]);
    let ranges = net.conf(
        small("", ""),
        json!({"runtimeConfig": {"ipRanges": [[{"subnet": "10.9.0.0/24"}]]}}),
    );
    assert_eq!(add("d", &ranges), ["10.9.0.2/24", "10.1.0.2/24"]);
    assert_eq!(net.files().len(), 6); // 4 addresses, last_reserved_ip.0 and .1
}

#[test]
fn resolv_conf_supplies_dns() {
    let net = Net::new();
    let resolv = net.data_dir.with_file_name("resolv.conf");
    fs::write(&resolv, "nameserver 10.0.0.10\nsearch svc.local\n").unwrap();
    let conf = net.conf(
        json!({"subnet": "10.3.0.0/24", "resolvConf": resolv}),
        json!({}),
    );
    let out = run("ADD", "c1", "eth0", &conf).unwrap().unwrap();
    assert_eq!(
        out["dns"],
        json!({"nameservers": ["10.0.0.10"], "search": ["svc.local"]})
    );
    let missing = net.conf(
        json!({"subnet": "10.3.0.0/24", "resolvConf": "/nonexistent"}),
        json!({}),
    );
    let err = run("ADD", "c2", "eth0", &missing).unwrap_err();
    assert_eq!(err.code, 5);
    assert_eq!(net.files().len(), 2); // c2 allocated nothing
}

#[test]
fn status_reports_an_unusable_data_dir() {
    let net = Net::new();
    run("STATUS", "", "", &net.conf(small("", ""), json!({}))).unwrap();
    assert!(net.dir().is_dir());
    let file = net.data_dir.with_file_name("a-file");
    fs::write(&file, "").unwrap();
    let mut conf: Value = serde_json::from_slice(&net.conf(small("", ""), json!({}))).unwrap();
    conf["ipam"]["dataDir"] = json!(file);
    let err = run("STATUS", "", "", &serde_json::to_vec(&conf).unwrap()).unwrap_err();
    assert_eq!(err.code, 50, "{err}");
}
