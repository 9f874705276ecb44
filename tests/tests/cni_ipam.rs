//! The `capstan-ipam` binary against the reference `host-local` (containernetworking-plugins
//! 1.1.1 at /usr/lib/cni/host-local): same state on disk, concurrency from separate processes,
//! exhaustion, CNI error reporting and recovery after a killed plugin.
//!
//! Build the plugin first: `cargo build -p cni-plugins`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tests::binaries::{require_root, workspace_bin};
use tests::TempRoot;

const HOST_LOCAL: &str = "/usr/lib/cni/host-local";

/// One plugin executable and how to invoke it.
struct Plugin {
    path: PathBuf,
}

/// A finished invocation: exit status and stdout parsed as JSON (Null when empty).
#[derive(Debug)]
struct Outcome {
    ok: bool,
    json: Value,
}

impl Plugin {
    fn capstan() -> Result<Self> {
        require_root()?;
        Ok(Self {
            path: workspace_bin("capstan-ipam")?,
        })
    }

    fn host_local() -> Result<Self> {
        let path = PathBuf::from(HOST_LOCAL);
        if !path.is_file() {
            bail!("{HOST_LOCAL} is missing: install containernetworking-plugins");
        }
        Ok(Self { path })
    }

    fn command(&self, cmd: &str, id: &str, ifname: &str) -> Command {
        let mut c = Command::new(&self.path);
        c.env_clear()
            .env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", id)
            .env("CNI_IFNAME", ifname)
            .env("CNI_NETNS", "/proc/self/ns/net")
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn spawn(&self, cmd: &str, id: &str, ifname: &str, conf: &[u8]) -> Result<Child> {
        let mut child = self
            .command(cmd, id, ifname)
            .spawn()
            .with_context(|| format!("running {}", self.path.display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(conf)?;
        }
        Ok(child)
    }

    fn run(&self, cmd: &str, id: &str, ifname: &str, conf: &[u8]) -> Result<Outcome> {
        outcome(wait_with_timeout(self.spawn(cmd, id, ifname, conf)?)?)
    }

    /// ADD that must succeed; returns the addresses.
    fn add(&self, id: &str, conf: &[u8]) -> Result<Vec<String>> {
        let out = self.run("ADD", id, "eth0", conf)?;
        if !out.ok {
            bail!("ADD {id} failed: {}", out.json);
        }
        Ok(addresses(&out.json))
    }
}

fn outcome(output: Output) -> Result<Outcome> {
    let text = String::from_utf8_lossy(&output.stdout);
    let json = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).with_context(|| format!("stdout is not JSON: {text:?}"))?
    };
    Ok(Outcome {
        ok: output.status.success(),
        json,
    })
}

fn wait_with_timeout(mut child: Child) -> Result<Output> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("plugin did not finish within 60s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(child.wait_with_output()?)
}

/// A child killed (SIGKILL) and reaped when the test ends, also on failure.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn addresses(result: &Value) -> Vec<String> {
    result["ips"]
        .as_array()
        .map(|ips| {
            ips.iter()
                .filter_map(|ip| ip["address"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A network config (1.0.0: the newest version host-local 1.1.1 speaks).
fn conf(data_dir: &Path, ipam: Value) -> Vec<u8> {
    let mut ipam = ipam;
    ipam["type"] = json!("host-local");
    ipam["dataDir"] = json!(data_dir);
    serde_json::to_vec(&json!({
        "cniVersion": "1.0.0", "name": "ipamnet", "type": "bridge", "ipam": ipam
    }))
    .unwrap_or_default()
}

/// File name → (content, mode) for every file of a network directory.
fn snapshot(dir: &Path) -> Result<BTreeMap<String, (String, u32)>> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let mode = entry.metadata()?.permissions().mode() & 0o7777;
        out.insert(name, (fs::read_to_string(entry.path())?, mode));
    }
    Ok(out)
}

fn ip_files(dir: &Path) -> Result<BTreeMap<String, String>> {
    Ok(snapshot(dir)?
        .into_iter()
        .filter(|(name, _)| name.parse::<std::net::IpAddr>().is_ok())
        .map(|(name, (content, _))| (name, content))
        .collect())
}

fn dual_stack_small() -> Value {
    json!({
        "ranges": [
            [{"subnet": "10.1.0.0/16", "rangeStart": "10.1.0.10", "rangeEnd": "10.1.0.12", "gateway": "10.1.0.1"}],
            [{"subnet": "fd00:1::/64"}]
        ],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
    })
}

#[test]
fn capstan_ipam_leaves_the_same_state_and_results_as_host_local() -> Result<()> {
    let (ours, reference) = (Plugin::capstan()?, Plugin::host_local()?);
    let root = TempRoot::new("cni-ipam-compare")?;
    let steps: &[(&str, &str, &str)] = &[
        ("ADD", "c1", "eth0"),
        ("ADD", "c1", "eth0"), // duplicate: refused by both
        ("ADD", "c1", "eth1"),
        ("ADD", "c2", "eth0"),
        ("ADD", "c3", "eth0"), // the IPv4 set is exhausted
        ("DEL", "c1", "eth0"),
        ("DEL", "c1", "eth0"),
        ("ADD", "c4", "eth0"), // round robin wraps to the released address
        ("DEL", "never", "eth0"),
    ];
    let mut states = Vec::new();
    for (label, plugin) in [("host-local", &reference), ("capstan-ipam", &ours)] {
        let data = root.join(label);
        let conf = conf(&data, dual_stack_small());
        let mut outcomes = Vec::new();
        for (cmd, id, ifname) in steps {
            let out = plugin.run(cmd, id, ifname, &conf)?;
            outcomes.push(out);
        }
        states.push((outcomes, snapshot(&data.join("ipamnet"))?));
    }
    let (theirs, mine) = (&states[0], &states[1]);
    for (i, (a, b)) in theirs.0.iter().zip(&mine.0).enumerate() {
        let step = steps[i];
        assert_eq!(a.ok, b.ok, "{step:?}: host-local {} vs {}", a.json, b.json);
        if a.ok {
            for key in ["cniVersion", "ips", "routes"] {
                assert_eq!(a.json[key], b.json[key], "{step:?} {key}");
            }
        } else {
            // Same message; host-local's generic code 999 is a plugin-specific code here.
            assert_eq!(a.json["msg"], b.json["msg"], "{step:?}");
            assert!(
                b.json["code"].as_u64().is_some_and(|c| c >= 100),
                "{}",
                b.json
            );
        }
    }
    assert_eq!(theirs.1, mine.1, "on-disk state differs");
    let expected_ips = [
        "10.1.0.10",
        "10.1.0.11",
        "10.1.0.12",
        "fd00:1::3",
        "fd00:1::4",
        "fd00:1::5",
    ];
    let names: Vec<&String> = mine
        .1
        .keys()
        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
        .collect();
    assert_eq!(names, expected_ips);
    assert_eq!(mine.1["10.1.0.10"].0, "c4\r\neth0");
    Ok(())
}

#[test]
fn each_plugin_reads_the_others_state() -> Result<()> {
    let (ours, reference) = (Plugin::capstan()?, Plugin::host_local()?);
    let root = TempRoot::new("cni-ipam-interop")?;
    let conf = conf(root.path(), dual_stack_small());
    let dir = root.join("ipamnet");
    reference.add("hl", &conf)?;
    // host-local's allocation counts as taken and as held by its container.
    assert_eq!(ours.add("ci", &conf)?, ["10.1.0.11/16", "fd00:1::3/64"]);
    assert!(ours.run("CHECK", "hl", "eth0", &conf)?.ok);
    let dup = ours.run("ADD", "hl", "eth0", &conf)?;
    assert!(!dup.ok && dup.json["code"] == 101, "{}", dup.json);
    assert!(ours.run("DEL", "hl", "eth0", &conf)?.ok);
    assert!(reference.run("CHECK", "ci", "eth0", &conf)?.ok);
    assert!(reference.run("DEL", "ci", "eth0", &conf)?.ok);
    assert!(ip_files(&dir)?.is_empty());
    // host-local continues our round robin.
    assert_eq!(
        reference.add("next", &conf)?,
        ["10.1.0.12/16", "fd00:1::4/64"]
    );
    Ok(())
}

#[test]
fn a_hundred_concurrent_adds_get_distinct_addresses() -> Result<()> {
    let ours = Plugin::capstan()?;
    let root = TempRoot::new("cni-ipam-concurrent")?;
    let conf = conf(
        root.path(),
        json!({"ranges": [[{"subnet": "10.50.0.0/24"}]]}),
    );
    let children = (0..100)
        .map(|i| ours.spawn("ADD", &format!("ctr-{i:03}"), "eth0", &conf))
        .collect::<Result<Vec<_>>>()?;
    let mut addrs = BTreeSet::new();
    for (i, child) in children.into_iter().enumerate() {
        let out = outcome(wait_with_timeout(child)?)?;
        assert!(out.ok, "ADD ctr-{i:03}: {}", out.json);
        let got = addresses(&out.json);
        assert_eq!(got.len(), 1, "{}", out.json);
        assert!(addrs.insert(got[0].clone()), "{} handed out twice", got[0]);
    }
    assert_eq!(addrs.len(), 100);
    let files = ip_files(&root.join("ipamnet"))?;
    assert_eq!(files.len(), 100);
    let holders: BTreeSet<&String> = files.values().collect();
    assert_eq!(holders.len(), 100, "an allocation file is shared");
    for addr in &addrs {
        let ip = addr.trim_end_matches("/24");
        assert!(files.contains_key(ip), "{ip} has no file");
    }
    let names = snapshot(&root.join("ipamnet"))?;
    assert!(
        names.keys().all(|n| !n.starts_with('.')),
        "temp files left: {names:?}"
    );
    Ok(())
}

#[test]
fn a_three_address_range_fills_then_fails_cleanly() -> Result<()> {
    let ours = Plugin::capstan()?;
    let root = TempRoot::new("cni-ipam-full")?;
    let conf = conf(
        root.path(),
        json!({"ranges": [[{"subnet": "10.60.0.0/24", "rangeStart": "10.60.0.20", "rangeEnd": "10.60.0.22"}]]}),
    );
    for (i, want) in ["10.60.0.20/24", "10.60.0.21/24", "10.60.0.22/24"]
        .iter()
        .enumerate()
    {
        assert_eq!(ours.add(&format!("c{i}"), &conf)?, [*want]);
    }
    let dir = root.join("ipamnet");
    let before = snapshot(&dir)?;
    let out = ours.run("ADD", "c3", "eth0", &conf)?;
    assert!(!out.ok);
    assert_eq!(out.json["code"], 100, "{}", out.json);
    assert_eq!(
        out.json["msg"],
        "failed to allocate for range 0: no IP addresses available in range set: 10.60.0.20-10.60.0.22"
    );
    assert_eq!(snapshot(&dir)?, before, "the failed ADD changed the store");
    Ok(())
}

#[test]
fn del_of_a_never_added_container_succeeds() -> Result<()> {
    let ours = Plugin::capstan()?;
    let root = TempRoot::new("cni-ipam-del")?;
    let data = root.join("absent");
    let conf = conf(&data, dual_stack_small());
    let out = ours.run("DEL", "ghost", "eth0", &conf)?;
    assert!(out.ok && out.json.is_null(), "{out:?}");
    assert!(!data.exists(), "DEL created the data directory");
    ours.add("real", &conf)?;
    assert!(ours.run("DEL", "ghost", "eth0", &conf)?.ok);
    assert_eq!(ip_files(&data.join("ipamnet"))?.len(), 2);
    Ok(())
}

#[test]
fn bad_input_is_reported_as_cni_error_json() -> Result<()> {
    let ours = Plugin::capstan()?;
    let root = TempRoot::new("cni-ipam-errors")?;
    let good: Value = serde_json::from_slice(&conf(root.path(), dual_stack_small()))?;
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut c = good.clone();
        edit(&mut c);
        serde_json::to_vec(&c).unwrap_or_default()
    };
    let cases: Vec<(&str, Vec<u8>, u64, &str)> = vec![
        (
            "malformed JSON",
            b"{\"cniVersion\": ".to_vec(),
            6,
            "not valid JSON",
        ),
        (
            "unknown version",
            with(&|c| c["cniVersion"] = json!("9.9.9")),
            1,
            "9.9.9",
        ),
        (
            "no ipam",
            with(&|c| drop(c.as_object_mut().and_then(|o| o.remove("ipam")))),
            7,
            "ipam",
        ),
        (
            "no name",
            with(&|c| drop(c.as_object_mut().and_then(|o| o.remove("name")))),
            7,
            "name",
        ),
        (
            "no subnet",
            with(&|c| c["ipam"]["ranges"][0][0] = json!({"rangeStart": "10.1.0.10"})),
            7,
            "ipam.ranges[0][0].subnet is required",
        ),
        (
            "start outside",
            with(&|c| c["ipam"]["ranges"][0][0]["rangeStart"] = json!("10.2.0.1")),
            7,
            "rangeStart",
        ),
        (
            "traversal",
            with(&|c| c["name"] = json!("..")),
            7,
            "directory name",
        ),
    ];
    for (what, input, code, text) in cases {
        let out = ours.run("ADD", "c1", "eth0", &input)?;
        assert!(!out.ok, "{what}: exited 0");
        assert_eq!(out.json["code"], code, "{what}: {}", out.json);
        let msg = out.json["msg"].as_str().unwrap_or_default();
        assert!(msg.contains(text), "{what}: {msg:?} lacks {text:?}");
    }
    // No CNI_COMMAND: code 4.
    let mut cmd = ours.command("ADD", "c1", "eth0");
    cmd.env_remove("CNI_COMMAND");
    let mut child = cmd.spawn()?;
    drop(child.stdin.take());
    let out = outcome(wait_with_timeout(child)?)?;
    assert!(!out.ok && out.json["code"] == 4, "{}", out.json);
    assert!(!root.join("ipamnet").exists() || ip_files(&root.join("ipamnet"))?.is_empty());
    Ok(())
}

#[test]
fn a_killed_plugin_leaves_nothing_that_blocks_or_leaks() -> Result<()> {
    let ours = Plugin::capstan()?;
    let root = TempRoot::new("cni-ipam-kill")?;
    let conf = conf(
        root.path(),
        json!({"ranges": [[{"subnet": "10.70.0.0/24", "rangeStart": "10.70.0.20", "rangeEnd": "10.70.0.22"}]]}),
    );
    let dir = root.join("ipamnet");
    ours.add("first", &conf)?;
    // A process holding the lock is killed with SIGKILL: the kernel drops its flock.
    // (--no-fork: the process that holds the lock is the one killed.)
    let mut holder = KillOnDrop(
        Command::new("flock")
            .args(["--no-fork"])
            .arg(dir.join("lock"))
            .args(["sleep", "600"])
            .spawn()?,
    );
    std::thread::sleep(Duration::from_millis(200));
    let mut blocked = ours.spawn("ADD", "waiting", "eth0", &conf)?;
    // A plugin killed while it waits for the lock leaves nothing either.
    let mut victim = KillOnDrop(ours.spawn("ADD", "victim", "eth0", &conf)?);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        blocked.try_wait()?.is_none(),
        "ADD did not wait for the lock"
    );
    victim.0.kill()?;
    victim.0.wait()?;
    holder.0.kill()?; // SIGKILL
    holder.0.wait()?;
    let out = outcome(wait_with_timeout(blocked)?)?;
    assert!(out.ok, "{}", out.json);
    // An ADD killed between writing its temp file and linking it leaves the temp behind.
    fs::write(dir.join(".capstan-ipam-tmp.4194304.0"), "dead\r\neth0")?;
    let out = ours.run("DEL", "dead", "eth0", &conf)?;
    assert!(out.ok, "{}", out.json);
    assert!(
        !dir.join(".capstan-ipam-tmp.4194304.0").exists(),
        "stale temp kept"
    );
    fs::write(dir.join(".capstan-ipam-tmp.4194305.7"), "dead\r\neth0")?;
    // The range's last address is still usable, and the temp is gone after the ADD.
    assert_eq!(ours.add("last", &conf)?, ["10.70.0.22/24"]);
    let names: Vec<String> = snapshot(&dir)?.into_keys().collect();
    assert_eq!(
        names,
        [
            "10.70.0.20",
            "10.70.0.21",
            "10.70.0.22",
            "last_reserved_ip.0",
            "lock"
        ]
    );
    Ok(())
}
