//! The runtime side against fake plugins: shell scripts that record their environment and
//! stdin and print canned results or errors.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use super::*;
use crate::config::CniSettings;

/// A configuration dir, two plugin dirs, a cache dir and the fake plugins' records.
struct Fixture {
    _root: tempfile::TempDir,
    conf_dir: PathBuf,
    bin_dirs: Vec<PathBuf>,
    cache_dir: PathBuf,
    state: PathBuf,
    netns: PathBuf,
}

const FAKE_PLUGIN: &str = r#"#!/bin/sh
name='@NAME@'
state='@STATE@'
input=$(cat)
echo "$name $CNI_COMMAND" >> "$state/calls"
printf '%s' "$input" > "$state/$name.$CNI_COMMAND.stdin"
env | grep '^CNI_' | sort > "$state/$name.$CNI_COMMAND.env"
if [ -f "$state/$name.crash" ]; then echo "out of cheese" >&2; exit 3; fi
if [ -f "$state/$name.$CNI_COMMAND.fail" ]; then cat "$state/$name.$CNI_COMMAND.fail"; exit 1; fi
if [ -f "$state/$name.sleep" ]; then exec sleep 30; fi
if [ "$CNI_COMMAND" = ADD ]; then cat "$state/$name.result"; fi
exit 0
"#;

impl Fixture {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let dir = |name: &str| {
            let path = root.path().join(name);
            std::fs::create_dir_all(&path).unwrap();
            path
        };
        let netns = root.path().join("netns");
        std::fs::write(&netns, "").unwrap();
        Self {
            conf_dir: dir("net.d"),
            bin_dirs: vec![dir("bin1"), dir("bin2")],
            cache_dir: root.path().join("cache"),
            state: dir("state"),
            netns,
            _root: root,
        }
    }

    fn cni(&self) -> Cni {
        Cni::new(CniSettings {
            conf_dir: self.conf_dir.clone(),
            bin_dirs: self.bin_dirs.clone(),
            cache_dir: self.cache_dir.clone(),
        })
    }

    /// A fake plugin `name` in plugin dir `dir_index` recording under `record_as`.
    fn plugin_in(&self, dir_index: usize, name: &str, record_as: &str) {
        let script = FAKE_PLUGIN
            .replace("@NAME@", record_as)
            .replace("@STATE@", &self.state.display().to_string());
        let path = self.bin_dirs[dir_index].join(name);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Fake plugins that print `result(name)` on ADD.
    fn plugins(&self, names: &[&str]) {
        for name in names {
            self.plugin_in(1, name, name);
            self.result(name, result_of(name, "1.0.0"));
        }
    }

    fn result(&self, plugin: &str, result: Value) {
        std::fs::write(
            self.state.join(format!("{plugin}.result")),
            result.to_string(),
        )
        .unwrap();
    }

    fn fail(&self, plugin: &str, command: &str, error: Value) {
        let path = self.state.join(format!("{plugin}.{command}.fail"));
        std::fs::write(path, error.to_string()).unwrap();
    }

    fn flag(&self, plugin: &str, what: &str) {
        std::fs::write(self.state.join(format!("{plugin}.{what}")), "").unwrap();
    }

    fn conf(&self, file: &str, conf: Value) {
        std::fs::write(self.conf_dir.join(file), conf.to_string()).unwrap();
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.state.join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn clear_calls(&self) {
        let _ = std::fs::remove_file(self.state.join("calls"));
    }

    fn stdin(&self, plugin: &str, command: &str) -> Value {
        let path = self.state.join(format!("{plugin}.{command}.stdin"));
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
    }

    fn env(&self, plugin: &str, command: &str) -> BTreeMap<String, String> {
        let path = self.state.join(format!("{plugin}.{command}.env"));
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn attachment(&self, id: &str) -> Attachment {
        Attachment {
            container_id: id.to_owned(),
            netns: self.netns.clone(),
            ifname: "eth0".to_owned(),
            pod: PodIdentity {
                namespace: "ns1".to_owned(),
                name: "web".to_owned(),
                uid: "uid-1".to_owned(),
            },
            port_mappings: vec![PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".to_owned(),
                host_ip: String::new(),
            }],
        }
    }

    fn cache_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.cache_dir.join("results"))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }
}

/// A distinct result per plugin so chaining is visible.
fn result_of(plugin: &str, version: &str) -> Value {
    let octet = plugin.len() + plugin.bytes().map(usize::from).sum::<usize>() % 200;
    json!({
        "cniVersion": version,
        "interfaces": [{"name": "eth0", "mac": "0a:00:00:00:00:01", "sandbox": "/x"}],
        "ips": [
            {"address": format!("fd00::{octet:x}/64"), "interface": 0},
            {"address": format!("10.1.0.{octet}/24"), "gateway": "10.1.0.1", "interface": 0}
        ],
        "dns": {"nameservers": [plugin]}
    })
}

fn reference(id: &str) -> AttachmentRef {
    AttachmentRef {
        container_id: id.to_owned(),
        ifname: "eth0".to_owned(),
    }
}

fn chain_conf(version: &str, plugins: &[&str]) -> Value {
    let plugins: Vec<Value> = plugins
        .iter()
        .map(|p| match *p {
            "portmap" => json!({"type": p, "capabilities": {"portMappings": true}}),
            _ => json!({"type": p, "ipam": {"type": "none"}, "setting": p}),
        })
        .collect();
    json!({"cniVersion": version, "name": "podnet", "plugins": plugins})
}

#[tokio::test]
async fn add_passes_the_environment_and_chains_results() {
    let f = Fixture::new();
    f.plugins(&["bridge", "portmap", "tuning"]);
    // A same-named plugin earlier in the search path wins.
    f.plugin_in(0, "tuning", "tuning-first");
    f.result("tuning-first", result_of("tuning-first", "1.0.0"));
    f.conf(
        "10-pod.conflist",
        chain_conf("1.0.0", &["bridge", "portmap", "tuning"]),
    );

    let result = f.cni().add(&f.attachment("c1")).await.unwrap();

    assert_eq!(f.calls(), ["bridge ADD", "portmap ADD", "tuning-first ADD"]);
    assert_eq!(result.dns.nameservers, ["tuning-first"]);
    assert_eq!(pod_ips(&result).len(), 2);

    let env = f.env("bridge", "ADD");
    assert_eq!(env["CNI_COMMAND"], "ADD");
    assert_eq!(env["CNI_CONTAINERID"], "c1");
    assert_eq!(env["CNI_NETNS"], f.netns.display().to_string());
    assert_eq!(env["CNI_IFNAME"], "eth0");
    assert_eq!(
        env["CNI_ARGS"],
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web;\
         K8S_POD_INFRA_CONTAINER_ID=c1;K8S_POD_UID=uid-1"
    );
    assert_eq!(
        env["CNI_PATH"],
        format!("{}:{}", f.bin_dirs[0].display(), f.bin_dirs[1].display())
    );

    let bridge = f.stdin("bridge", "ADD");
    assert_eq!(bridge["name"], "podnet");
    assert_eq!(bridge["cniVersion"], "1.0.0");
    assert_eq!(bridge["setting"], "bridge");
    assert_eq!(bridge["ipam"], json!({"type": "none"}));
    assert!(bridge.get("prevResult").is_none(), "{bridge}");
    assert!(bridge.get("runtimeConfig").is_none(), "{bridge}");

    let portmap = f.stdin("portmap", "ADD");
    assert_eq!(portmap["prevResult"], result_of("bridge", "1.0.0"));
    assert_eq!(
        portmap["runtimeConfig"],
        json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})
    );
    let tuning = f.stdin("tuning-first", "ADD");
    assert_eq!(tuning["prevResult"], result_of("portmap", "1.0.0"));
    assert!(tuning.get("runtimeConfig").is_none(), "{tuning}");

    // The cache entry holds what DEL needs.
    assert_eq!(f.cache_files(), ["podnet-c1-eth0"]);
    let cached: Value =
        serde_json::from_slice(&std::fs::read(f.cache_dir.join("results/podnet-c1-eth0")).unwrap())
            .unwrap();
    assert_eq!(cached["result"], result_of("tuning-first", "1.0.0"));
    assert_eq!(cached["ifName"], "eth0");
    assert_eq!(cached["networkName"], "podnet");
    assert_eq!(cached["cniArgs"][1], json!(["K8S_POD_NAMESPACE", "ns1"]));
    assert_eq!(
        cached["capabilityArgs"]["portMappings"][0]["hostPort"],
        8080
    );
    assert_eq!(
        f.cni().cached_result(&reference("c1")).unwrap(),
        Some(result)
    );
}

#[tokio::test]
async fn older_results_are_converted_to_the_network_version() {
    let f = Fixture::new();
    f.plugins(&["old", "next"]);
    let mut old = result_of("old", "0.4.0");
    old["ips"][0]["version"] = json!("6");
    old["ips"][1]["version"] = json!("4");
    f.result("old", old);
    f.conf("a.conflist", chain_conf("1.0.0", &["old", "next"]));
    f.cni().add(&f.attachment("c1")).await.unwrap();
    let prev = &f.stdin("next", "ADD")["prevResult"];
    assert_eq!(prev["cniVersion"], "1.0.0");
    assert!(prev["ips"][0].get("version").is_none(), "{prev}");
    assert_eq!(
        prev["ips"][1]["address"],
        result_of("old", "1.0.0")["ips"][1]["address"]
    );

    // A 0.4.0 network keeps the 0.x layout (per-IP version) in what it passes on.
    let g = Fixture::new();
    g.plugins(&["a", "b"]);
    g.result("a", result_of("a", "1.0.0"));
    g.conf("a.conf", chain_conf("0.4.0", &["a", "b"]));
    g.cni().add(&g.attachment("c1")).await.unwrap();
    let prev = &g.stdin("b", "ADD")["prevResult"];
    assert_eq!(prev["cniVersion"], "0.4.0");
    assert_eq!(prev["ips"][1]["version"], "4");
}

#[tokio::test]
async fn a_failed_add_is_rolled_back_and_leaves_no_cache_entry() {
    let f = Fixture::new();
    f.plugins(&["a", "b", "c"]);
    f.conf("a.conflist", chain_conf("1.0.0", &["a", "b", "c"]));
    f.fail(
        "b",
        "ADD",
        json!({"cniVersion": "1.0.0", "code": 11, "msg": "no addresses left", "details": "range full"}),
    );
    let err = f.cni().add(&f.attachment("c1")).await.unwrap_err();
    match &err {
        NetworkError::Plugin {
            plugin,
            code,
            msg,
            details,
            command,
        } => {
            assert_eq!((plugin.as_str(), *code, *command), ("b", 11, "ADD"));
            assert_eq!(msg, "no addresses left");
            assert_eq!(details, "range full");
        }
        other => panic!("unexpected error {other}"),
    }
    assert_eq!(err.cni_code(), Some(11));
    assert_eq!(f.calls(), ["a ADD", "b ADD", "b DEL", "a DEL"]);
    assert_eq!(f.stdin("a", "DEL")["prevResult"], result_of("a", "1.0.0"));
    assert!(f.cache_files().is_empty(), "{:?}", f.cache_files());
}

#[tokio::test]
async fn a_plugin_dying_without_output_is_named_with_its_stderr() {
    let f = Fixture::new();
    f.plugins(&["a", "b"]);
    f.conf("a.conflist", chain_conf("1.0.0", &["a", "b"]));
    f.flag("b", "crash");
    let err = f.cni().add(&f.attachment("c1")).await.unwrap_err();
    assert!(matches!(err, NetworkError::PluginCrashed { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("plugin b") && text.contains("out of cheese"),
        "{text}"
    );
    assert_eq!(f.calls(), ["a ADD", "b ADD", "b DEL", "a DEL"]);
    assert!(f.cache_files().is_empty());
}

#[tokio::test]
async fn a_missing_plugin_is_named_with_the_directories() {
    let f = Fixture::new();
    f.plugins(&["a", "none"]);
    f.conf("a.conflist", chain_conf("1.0.0", &["a", "ghost"]));
    let err = f.cni().add(&f.attachment("c1")).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, NetworkError::PluginNotFound { .. }), "{text}");
    assert!(text.contains("\"ghost\""), "{text}");
    for dir in &f.bin_dirs {
        assert!(text.contains(&dir.display().to_string()), "{text}");
    }
    assert_eq!(f.calls(), ["a ADD", "a DEL"]);
    let status = f.cni().status().await.unwrap_err();
    assert!(status.to_string().contains("ghost"), "{status}");
}

#[tokio::test]
async fn a_hanging_plugin_times_out() {
    let f = Fixture::new();
    f.plugins(&["slow"]);
    f.conf("a.conflist", chain_conf("1.0.0", &["slow"]));
    f.flag("slow", "sleep");
    let started = std::time::Instant::now();
    let cni = f.cni().with_plugin_timeout(Duration::from_millis(300));
    let err = cni.add(&f.attachment("c1")).await.unwrap_err();
    assert!(matches!(err, NetworkError::Timeout { .. }), "{err}");
    // ADD and the rollback DEL each run into the limit, nothing more.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(f.cache_files().is_empty());
}

#[tokio::test]
async fn del_runs_the_cached_chain_in_reverse_after_the_config_changed() {
    let f = Fixture::new();
    f.plugins(&["bridge", "portmap", "other"]);
    f.conf(
        "10-pod.conflist",
        chain_conf("1.0.0", &["bridge", "portmap"]),
    );
    let cni = f.cni();
    cni.add(&f.attachment("c1")).await.unwrap();
    std::fs::remove_file(f.conf_dir.join("10-pod.conflist")).unwrap();
    f.conf("20-new.conflist", chain_conf("1.0.0", &["other"]));
    f.clear_calls();

    cni.del(&reference("c1")).await.unwrap();
    assert_eq!(f.calls(), ["portmap DEL", "bridge DEL"]);
    let portmap = f.stdin("portmap", "DEL");
    assert_eq!(portmap["prevResult"], result_of("portmap", "1.0.0"));
    assert_eq!(
        portmap["runtimeConfig"]["portMappings"][0]["containerPort"],
        80
    );
    let env = f.env("bridge", "DEL");
    assert_eq!(env["CNI_COMMAND"], "DEL");
    assert!(env["CNI_ARGS"].contains("K8S_POD_NAME=web"), "{env:?}");
    // The namespace path is no namespace (it is gone): DEL goes without one.
    assert!(!env.contains_key("CNI_NETNS"), "{env:?}");
    assert!(f.cache_files().is_empty());

    // Again: nothing cached, so the current configuration's plugins are asked.
    f.clear_calls();
    cni.del(&reference("c1")).await.unwrap();
    assert_eq!(f.calls(), ["other DEL"]);
    let env = f.env("other", "DEL");
    assert_eq!(env["CNI_CONTAINERID"], "c1");
    assert!(!env.contains_key("CNI_NETNS"));
    assert!(f.stdin("other", "DEL").get("prevResult").is_none());

    // And with no configuration at all there is nothing to call.
    std::fs::remove_file(f.conf_dir.join("20-new.conflist")).unwrap();
    f.clear_calls();
    cni.del(&reference("c1")).await.unwrap();
    assert!(f.calls().is_empty());
}

#[tokio::test]
async fn del_passes_a_live_namespace_and_keeps_the_entry_when_it_fails() {
    let f = Fixture::new();
    f.plugins(&["a", "b"]);
    f.conf("a.conflist", chain_conf("1.0.0", &["a", "b"]));
    let cni = f.cni();
    let mut attachment = f.attachment("c1");
    attachment.netns = PathBuf::from("/proc/self/ns/net");
    cni.add(&attachment).await.unwrap();

    f.fail("b", "DEL", json!({"code": 5, "msg": "busy"}));
    f.clear_calls();
    let err = cni.del(&reference("c1")).await.unwrap_err();
    assert!(err.to_string().contains("busy"), "{err}");
    // The other plugin is still released, and the entry stays for a retry.
    assert_eq!(f.calls(), ["b DEL", "a DEL"]);
    assert_eq!(f.cache_files(), ["podnet-c1-eth0"]);
    assert_eq!(f.env("a", "DEL")["CNI_NETNS"], "/proc/self/ns/net");

    std::fs::remove_file(f.state.join("b.DEL.fail")).unwrap();
    cni.del(&reference("c1")).await.unwrap();
    assert!(f.cache_files().is_empty());
}

#[tokio::test]
async fn check_uses_the_cached_result() {
    let f = Fixture::new();
    f.plugins(&["a", "b"]);
    f.conf("a.conflist", chain_conf("1.0.0", &["a", "b"]));
    let cni = f.cni();
    let missing = cni.check(&reference("c1")).await.unwrap_err();
    assert!(
        matches!(missing, NetworkError::NotAttached { .. }),
        "{missing}"
    );

    cni.add(&f.attachment("c1")).await.unwrap();
    f.clear_calls();
    cni.check(&reference("c1")).await.unwrap();
    assert_eq!(f.calls(), ["a CHECK", "b CHECK"]);
    assert_eq!(f.stdin("a", "CHECK")["prevResult"], result_of("b", "1.0.0"));
    assert_eq!(
        f.env("a", "CHECK")["CNI_NETNS"],
        f.netns.display().to_string()
    );

    f.fail("a", "CHECK", json!({"code": 999, "msg": "veth missing"}));
    f.clear_calls();
    let err = cni.check(&reference("c1")).await.unwrap_err();
    assert_eq!(err.cni_code(), Some(999));
    assert_eq!(f.calls(), ["a CHECK"]);
}

#[tokio::test]
async fn check_respects_old_versions_and_disable_check() {
    let f = Fixture::new();
    f.plugins(&["a"]);
    f.conf("a.conflist", chain_conf("0.3.1", &["a"]));
    let cni = f.cni();
    cni.add(&f.attachment("c1")).await.unwrap();
    let err = cni.check(&reference("c1")).await.unwrap_err();
    assert!(matches!(err, NetworkError::Unsupported { .. }), "{err}");

    let g = Fixture::new();
    g.plugins(&["a"]);
    let mut conf = chain_conf("1.0.0", &["a"]);
    conf["disableCheck"] = json!(true);
    g.conf("a.conflist", conf);
    let cni = g.cni();
    cni.add(&g.attachment("c1")).await.unwrap();
    g.clear_calls();
    cni.check(&reference("c1")).await.unwrap();
    assert!(g.calls().is_empty());
}

#[tokio::test]
async fn gc_releases_attachments_outside_the_valid_list() {
    let f = Fixture::new();
    f.plugins(&["a", "b"]);
    f.conf("a.conflist", chain_conf("1.1.0", &["a", "b"]));
    let cni = f.cni();
    for id in ["c1", "c2", "c3"] {
        cni.add(&f.attachment(id)).await.unwrap();
    }
    f.clear_calls();
    cni.gc(&[reference("c2")]).await.unwrap();
    assert_eq!(
        f.calls(),
        ["b DEL", "a DEL", "b DEL", "a DEL", "a GC", "b GC"]
    );
    assert_eq!(f.cache_files(), ["podnet-c2-eth0"]);
    let gc = f.stdin("b", "GC");
    assert_eq!(
        gc["cni.dev/valid-attachments"],
        json!([{"containerID": "c2", "ifname": "eth0"}])
    );
    assert_eq!(gc["name"], "podnet");
    assert!(!f.env("a", "GC").contains_key("CNI_CONTAINERID"));

    // An empty list releases everything.
    f.clear_calls();
    cni.gc(&[]).await.unwrap();
    assert_eq!(f.calls(), ["b DEL", "a DEL", "a GC", "b GC"]);
    assert_eq!(f.stdin("a", "GC")["cni.dev/valid-attachments"], json!([]));
    assert!(f.cache_files().is_empty());
}

#[tokio::test]
async fn gc_before_cni_1_1_only_deletes_cached_attachments() {
    let f = Fixture::new();
    f.plugins(&["a"]);
    f.conf("a.conflist", chain_conf("1.0.0", &["a"]));
    let cni = f.cni();
    cni.add(&f.attachment("c1")).await.unwrap();
    f.clear_calls();
    cni.gc(&[]).await.unwrap();
    assert_eq!(f.calls(), ["a DEL"]);
    assert!(f.cache_files().is_empty());
}

#[tokio::test]
async fn status_asks_plugins_from_cni_1_1_on() {
    let f = Fixture::new();
    f.plugins(&["a", "b", "none"]);
    f.conf("a.conflist", chain_conf("1.1.0", &["a", "b"]));
    let cni = f.cni();
    cni.status().await.unwrap();
    assert_eq!(f.calls(), ["a STATUS", "b STATUS"]);
    f.fail("b", "STATUS", json!({"code": 50, "msg": "not ready"}));
    assert_eq!(cni.status().await.unwrap_err().cni_code(), Some(50));

    // Before 1.1 readiness is a loadable configuration whose plugins exist.
    f.clear_calls();
    f.conf("a.conflist", chain_conf("1.0.0", &["a", "b"]));
    cni.status().await.unwrap();
    assert!(f.calls().is_empty());
    std::fs::remove_file(f.bin_dirs[1].join("none")).unwrap();
    let err = cni.status().await.unwrap_err();
    assert!(err.to_string().contains("\"none\""), "{err}");
    std::fs::remove_file(f.conf_dir.join("a.conflist")).unwrap();
    assert!(matches!(
        cni.status().await,
        Err(NetworkError::NoConfig { .. })
    ));
}

#[tokio::test]
async fn a_cache_write_failure_undoes_the_add() {
    let f = Fixture::new();
    f.plugins(&["a"]);
    f.conf("a.conflist", chain_conf("1.0.0", &["a"]));
    // The cache directory's place is taken by a file.
    std::fs::write(&f.cache_dir, "").unwrap();
    let err = f.cni().add(&f.attachment("c1")).await.unwrap_err();
    assert!(matches!(err, NetworkError::Cache { .. }), "{err}");
    assert_eq!(f.calls(), ["a ADD", "a DEL"]);
}

#[tokio::test]
async fn invalid_attachments_call_no_plugin() {
    let f = Fixture::new();
    f.plugins(&["a"]);
    f.conf("a.conflist", chain_conf("1.0.0", &["a"]));
    let mut bad = f.attachment("c1");
    bad.container_id = "../../escape".to_owned();
    assert!(matches!(
        f.cni().add(&bad).await,
        Err(NetworkError::InvalidAttachment(_))
    ));
    assert!(f.cni().del(&AttachmentRef::from(&bad)).await.is_err());
    assert!(f.calls().is_empty());
}
