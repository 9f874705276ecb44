//! The per-sandbox monitor (`capstan shim start`) driven through `cri_shim::monitor::{launch,
//! client}`: namespaces, containers with the runc handler and the built-in executor, CRI
//! logs, exit records, events, OOM, shutdown and cleanup. Needs root, `cargo build -p agent`
//! first, /bin/busybox and runc.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cri_shim::monitor::client::MonitorClient;
use cri_shim::monitor::launch::{self, NamespaceChoice, PidChoice, SandboxMonitorConfig};
use cri_shim::monitor::protocol::{
    self, CreateContainer, EventKind, ExitRecord, Handler, PidMode, ProcessStatus,
};
use cri_shim::runtime::cgroups;
use serde_json::{json, Value};
use tests::{unique_short, TempRoot};

const WAIT: Duration = Duration::from_secs(20);

/// One sandbox under test; everything it made goes when it drops, also on panic.
struct Pod {
    root: TempRoot,
    run_dir: PathBuf,
    rootfs: PathBuf,
    cgroup_parent: String,
    cgroups: Vec<String>,
    spec_template: Value,
}

impl Pod {
    fn config(&self, hostname: &str) -> SandboxMonitorConfig {
        SandboxMonitorConfig {
            sandbox_id: "test".into(),
            run_dir: self.run_dir.clone(),
            shim_binary: tests::binaries::capstan_bin().expect("capstan built"),
            hostname: hostname.into(),
            network: NamespaceChoice::New,
            ipc: NamespaceChoice::New,
            uts: NamespaceChoice::New,
            pid: PidChoice::Pod,
            sysctls: BTreeMap::new(),
            cgroup_path: None,
        }
    }

    fn new() -> Result<Self> {
        tests::binaries::require_root()?;
        let root = TempRoot::new("mon")?;
        let run_dir = root.join("run");
        let rootfs = root.join("rootfs");
        for dir in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
            std::fs::create_dir_all(rootfs.join(dir))?;
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))?;
        // Relative links: `busybox --install` would point them at the host path.
        for applet in run(Command::new("/bin/busybox").arg("--list"))?.lines() {
            let link = rootfs.join("bin").join(applet);
            if !link.exists() {
                std::os::unix::fs::symlink("busybox", link)?;
            }
        }
        let spec_dir = root.join("spec");
        std::fs::create_dir_all(&spec_dir)?;
        run(Command::new(runc()?)
            .args(["spec", "--bundle"])
            .arg(&spec_dir))?;
        let spec_template = serde_json::from_slice(&std::fs::read(spec_dir.join("config.json"))?)?;
        let cgroup_parent = format!("/{}", unique_short("capt"));
        cgroups::create(&cgroup_parent, None)?;
        Ok(Self {
            root,
            run_dir,
            rootfs,
            cgroup_parent,
            cgroups: Vec::new(),
            spec_template,
        })
    }

    /// A bundle running `args`, joining the pod's namespaces, in its own cgroup.
    fn bundle(&mut self, id: &str, args: &[&str], opts: BundleOpts) -> Result<CreateContainer> {
        let dir = self.root.join(format!("containers/{id}"));
        let state_dir = dir.join("state");
        std::fs::create_dir_all(&state_dir)?;
        let cgroup = format!("{}/{id}", self.cgroup_parent);
        let resources = opts
            .memory_limit
            .map(|limit| {
                cri_shim::spec::container_resources(&k8s_cri::v1::LinuxContainerResources {
                    memory_limit_in_bytes: limit,
                    ..Default::default()
                })
            })
            .transpose()?;
        cgroups::create(&cgroup, resources.as_ref())?;
        self.cgroups.push(cgroup.clone());
        let mut spec = self.spec_template.clone();
        spec["root"] = json!({"path": self.rootfs, "readonly": false});
        spec["process"]["args"] = json!(args);
        spec["process"]["terminal"] = json!(opts.tty);
        spec["process"]["env"] = json!(["PATH=/bin", "TERM=xterm"]);
        // Ambient capabilities must also be inheritable (runc's default spec omits them).
        let ambient = spec["process"]["capabilities"]["ambient"].clone();
        spec["process"]["capabilities"]["inheritable"] = ambient;
        spec.as_object_mut()
            .context("spec object")?
            .remove("hostname");
        // The cgroup2/cgroup mount is not needed here and differs between hosts.
        let mounts = spec["mounts"].as_array_mut().context("mounts")?;
        mounts.retain(|m| m["destination"] != "/sys/fs/cgroup");
        let pin = |kind: &str| self.run_dir.join("ns").join(kind);
        let pid_ns = match opts.pid_mode {
            PidMode::Container => json!({"type": "pid"}),
            _ => {
                json!({"type": "pid", "path": format!("/proc/{}/ns/pid", monitor_pid(&self.run_dir)?)})
            }
        };
        spec["linux"]["namespaces"] = json!([
            pid_ns,
            {"type": "network", "path": pin("net")},
            {"type": "ipc", "path": pin("ipc")},
            {"type": "uts", "path": pin("uts")},
            {"type": "mount"},
        ]);
        spec["linux"]["cgroupsPath"] = json!(cgroup);
        if let Some(limit) = opts.memory_limit {
            spec["linux"]["resources"]["memory"] = json!({"limit": limit});
        }
        let bundle = dir.join("bundle");
        std::fs::create_dir_all(&bundle)?;
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec_pretty(&spec)?,
        )?;
        Ok(CreateContainer {
            id: id.into(),
            bundle,
            log_path: Some(dir.join("container.log")),
            tty: opts.tty,
            state_dir,
            handler: opts.handler,
            pid_mode: opts.pid_mode,
        })
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        launch::kill(&self.run_dir);
        if let Err(e) = launch::cleanup(&self.run_dir) {
            eprintln!("cleanup of {}: {e}", self.run_dir.display());
        }
        for cgroup in self.cgroups.iter().rev().chain([&self.cgroup_parent]) {
            cgroups::kill_all(cgroup);
            for _ in 0..50 {
                if cgroups::remove(cgroup).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Whatever a runtime made elsewhere (runc also uses the hybrid unified hierarchy).
        let hierarchies = std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .chain([PathBuf::from("/sys/fs/cgroup")]);
        for hierarchy in hierarchies {
            let parent = hierarchy.join(self.cgroup_parent.trim_start_matches('/'));
            if let Ok(children) = std::fs::read_dir(&parent) {
                for child in children.flatten().filter(|c| c.path().is_dir()) {
                    let _ = std::fs::remove_dir(child.path());
                }
                if let Err(e) = std::fs::remove_dir(&parent) {
                    eprintln!("removing cgroup {}: {e}", parent.display());
                }
            }
        }
    }
}

struct BundleOpts {
    handler: Handler,
    pid_mode: PidMode,
    tty: bool,
    memory_limit: Option<i64>,
}

impl BundleOpts {
    fn new(handler: &Handler) -> Self {
        Self {
            handler: handler.clone(),
            pid_mode: PidMode::Container,
            tty: false,
            memory_limit: None,
        }
    }
}

fn runc() -> Result<PathBuf> {
    ["/usr/bin/runc", "/usr/sbin/runc"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .context("runc is not installed")
}

fn run(command: &mut Command) -> Result<String> {
    let out = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn monitor_pid(run_dir: &Path) -> Result<i32> {
    launch::monitor_pid(run_dir).context("monitor is not running")
}

/// `NSpid` of a host PID: its PID in each namespace, host first.
fn ns_pids(pid: i32) -> Vec<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("NSpid:"))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .filter_map(|s| s.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn status_field(pid: i32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_owned())
}

fn alive(pid: i32) -> bool {
    // A zombie is as good as gone.
    status_field(pid, "State").is_some_and(|s| !s.starts_with('Z'))
}

fn mounts_below(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let dir = dir.to_string_lossy().into_owned();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&dir))
        .map(str::to_owned)
        .collect()
}

async fn wait_until(what: &str, mut check: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    while !check() {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn wait_exit(state_dir: &Path) -> Result<ExitRecord> {
    wait_until("the exit record", || {
        protocol::read_exit(state_dir).is_some()
    })
    .await?;
    protocol::read_exit(state_dir).context("exit record")
}

/// Log records as (stream, tag, content); checks each timestamp's shape.
fn log_records(path: &Path) -> Result<Vec<(String, String, String)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    text.lines()
        .map(|line| {
            let mut parts = line.splitn(4, ' ');
            let (Some(ts), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next())
            else {
                bail!("bad log line {line:?}");
            };
            let shape = ts.len() >= 20 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T';
            if !shape || !ts.starts_with("20") {
                bail!("bad timestamp in {line:?}");
            }
            Ok((stream.into(), tag.into(), parts.next().unwrap_or("").into()))
        })
        .collect()
}

fn rec(stream: &str, tag: &str, content: &str) -> (String, String, String) {
    (stream.into(), tag.into(), content.into())
}

fn smaps_rollup(pid: i32) -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (key, rest) = l.split_once(':')?;
            let kb = rest.trim().strip_suffix(" kB")?.trim().parse().ok()?;
            Some((key.to_owned(), kb))
        })
        .collect()
}

#[tokio::test]
async fn launch_pins_namespaces_with_hostname_loopback_and_sysctls() -> Result<()> {
    let pod = Pod::new()?;
    let mut config = pod.config("monitor-pod");
    config
        .sysctls
        .insert("net.ipv4.ip_unprivileged_port_start".into(), "81".into());
    config.cgroup_path = Some(pod.cgroup_parent.clone());
    let launched = launch::launch(config).await?;
    let pid = launched.pid;
    assert_eq!(launch::monitor_pid(&pod.run_dir), Some(pid));
    // PID 1 of the pod's own PID namespace, and not our child.
    let ns = ns_pids(pid);
    assert_eq!(ns, vec![pid, 1], "monitor NSpid");
    let ppid: i32 = status_field(pid, "PPid").context("PPid")?.parse()?;
    assert_ne!(ppid, std::process::id() as i32);
    // In the sandbox cgroup.
    let procs = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/memory{}/cgroup.procs",
        pod.cgroup_parent
    ))
    .or_else(|_| {
        std::fs::read_to_string(format!("/sys/fs/cgroup{}/cgroup.procs", pod.cgroup_parent))
    })?;
    assert!(
        procs.lines().any(|l| l == pid.to_string()),
        "monitor in its cgroup: {procs}"
    );
    for kind in ["net", "ipc", "uts"] {
        let pin = pod.run_dir.join("ns").join(kind);
        let pinned = std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))?;
        let mine = std::fs::read_link(format!("/proc/self/ns/{kind}"))?;
        assert_ne!(pinned, mine, "{kind} namespace is new");
        assert!(mounts_below(&pod.run_dir)
            .iter()
            .any(|m| Path::new(m) == pin));
    }
    let net = format!("--net={}", pod.run_dir.join("ns/net").display());
    let uts = format!("--uts={}", pod.run_dir.join("ns/uts").display());
    let link = run(Command::new("nsenter").args([&net, "ip", "-o", "link", "show", "lo"]))?;
    assert!(link.contains("UP"), "lo is up: {link}");
    let hostname = run(Command::new("nsenter").args([&uts, "hostname"]))?;
    assert_eq!(hostname.trim(), "monitor-pod");
    let sysctl = run(Command::new("nsenter").args([
        &net,
        "cat",
        "/proc/sys/net/ipv4/ip_unprivileged_port_start",
    ]))?;
    assert_eq!(sysctl.trim(), "81");

    // Idle footprint (file-backed pages are shared between monitors: Pss_File shrinks
    // with each one running, Pss_Anon is each monitor's own).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mem = smaps_rollup(pid);
    println!(
        "idle monitor memory: Pss={} kB Pss_Anon={} kB Pss_File={} kB Rss={} kB",
        mem.get("Pss").copied().unwrap_or(0),
        mem.get("Pss_Anon").copied().unwrap_or(0),
        mem.get("Pss_File").copied().unwrap_or(0),
        mem.get("Rss").copied().unwrap_or(0),
    );
    assert!(mem.get("Pss_Anon").copied().unwrap_or(0) < 4096);

    let client = MonitorClient::connect(&pod.run_dir).await?;
    assert!(client.list().await?.is_empty());
    client.shutdown().await?;
    wait_until("the monitor to exit", || !alive(pid)).await?;
    assert!(!pod.run_dir.join("monitor.sock").exists());
    launch::cleanup(&pod.run_dir)?;
    assert!(!pod.run_dir.exists());
    assert!(mounts_below(&pod.run_dir).is_empty());
    launch::cleanup(&pod.run_dir)?;
    Ok(())
}

#[tokio::test]
async fn refused_sysctls_leave_nothing_behind() -> Result<()> {
    let pod = Pod::new()?;
    let mut config = pod.config("x");
    config.sysctls.insert("kernel.panic".into(), "1".into());
    let err = launch::launch(config).await.unwrap_err().to_string();
    assert!(err.contains("kernel.panic"), "{err}");
    assert!(!pod.run_dir.exists());

    // Namespaced in name but the network namespace is the host's.
    let mut config = pod.config("x");
    config.network = NamespaceChoice::Host;
    config
        .sysctls
        .insert("net.ipv4.ping_group_range".into(), "0 0".into());
    assert!(launch::launch(config).await.is_err());
    assert!(!pod.run_dir.exists());

    // Refused by the kernel inside the monitor's setup: its message comes back.
    let mut config = pod.config("x");
    config
        .sysctls
        .insert("net.ipv4.no_such_knob".into(), "1".into());
    let err = launch::launch(config).await.unwrap_err().to_string();
    assert!(err.contains("net.ipv4.no_such_knob"), "{err}");
    assert!(
        !pod.run_dir.exists(),
        "run dir left: {:?}",
        std::fs::read_dir(&pod.run_dir).ok().map(|d| d.count())
    );
    assert!(mounts_below(&pod.run_dir).is_empty());
    Ok(())
}

#[tokio::test]
async fn monitor_outlives_its_launcher() -> Result<()> {
    let pod = Pod::new()?;
    let config = pod.config("orphan");
    std::fs::create_dir_all(&pod.run_dir)?;
    let config_path = pod.run_dir.join("monitor.json");
    std::fs::write(&config_path, serde_json::to_vec(&config)?)?;
    // A throwaway launcher: a shell that runs the setup and exits.
    let launcher = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} shim start --config {} 2>>{} & echo $!; wait",
            tests::binaries::capstan_bin()?.display(),
            config_path.display(),
            pod.run_dir.join("monitor.log").display()
        ))
        .output()?;
    let stdout = String::from_utf8_lossy(&launcher.stdout);
    assert!(stdout.contains("ready"), "{stdout}");
    let setup_pid: i32 = stdout.lines().next().context("setup pid")?.trim().parse()?;
    let pid = monitor_pid(&pod.run_dir)?;
    assert_ne!(pid, setup_pid);
    assert!(alive(pid));
    let ppid: i32 = status_field(pid, "PPid").context("PPid")?.parse()?;
    assert_ne!(ppid, setup_pid);
    assert_ne!(ppid, std::process::id() as i32);
    let client = MonitorClient::connect(&pod.run_dir).await?;
    assert!(client.list().await?.is_empty());
    // An unresponsive monitor is killed by its pid file.
    assert!(launch::kill(&pod.run_dir));
    assert!(!alive(pid));
    Ok(())
}

async fn start_pod(pod: &Pod, hostname: &str) -> Result<MonitorClient> {
    launch::launch(pod.config(hostname)).await?;
    Ok(MonitorClient::connect(&pod.run_dir).await?)
}

/// The container cases every handler must pass.
async fn container_lifecycle(handler: Handler) -> Result<()> {
    let mut pod = Pod::new()?;
    let client = start_pod(&pod, "lifecycle-pod").await?;
    let mut events = MonitorClient::connect(&pod.run_dir)
        .await?
        .subscribe()
        .await?;

    // Output on both streams, a long line, a trailing fragment, an exit code.
    let script = "echo hello; echo oops >&2; hostname; \
                  head -c 20000 /dev/zero | tr '\\0' x; echo; printf partial; exit 3";
    let out = pod.bundle("out", &["sh", "-c", script], BundleOpts::new(&handler))?;
    let pid = client.create(out.clone()).await?;
    assert_eq!(
        ns_pids(pid).first(),
        Some(&pid),
        "create returns a host PID"
    );
    assert!(
        ns_pids(pid).len() >= 2,
        "the container has its own PID namespace"
    );
    let listed = client.list().await?;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, ProcessStatus::Created);
    assert_eq!(listed[0].pid, pid);
    let started_at = client.start("out").await?;
    let started = protocol::read_started(&out.state_dir).context("started.json")?;
    assert_eq!((started.pid, started.started_at), (pid, started_at));
    let exit = wait_exit(&out.state_dir).await?;
    assert_eq!(
        (exit.exit_code, exit.signal, exit.oom_killed),
        (3, None, false)
    );
    assert!(exit.finished_at >= started_at);
    let records = log_records(out.log_path.as_deref().context("log")?)?;
    let stdout: Vec<_> = records
        .iter()
        .filter(|r| r.0 == "stdout")
        .cloned()
        .collect();
    let stderr: Vec<_> = records
        .iter()
        .filter(|r| r.0 == "stderr")
        .cloned()
        .collect();
    assert_eq!(stderr, vec![rec("stderr", "F", "oops")]);
    assert_eq!(stdout.len(), 5, "{stdout:?}");
    assert_eq!(stdout[0], rec("stdout", "F", "hello"));
    assert_eq!(
        stdout[1],
        rec("stdout", "F", "lifecycle-pod"),
        "the pod's UTS namespace"
    );
    assert_eq!(stdout[2], rec("stdout", "P", &"x".repeat(16 * 1024)));
    assert_eq!(
        stdout[3],
        rec("stdout", "F", &"x".repeat(20000 - 16 * 1024))
    );
    assert_eq!(stdout[4], rec("stdout", "P", "partial"));

    // Events: started then exited, with the record.
    let first = tokio::time::timeout(WAIT, events.next())
        .await?
        .context("event")??;
    assert_eq!((first.id.as_str(), first.kind), ("out", EventKind::Started));
    let second = tokio::time::timeout(WAIT, events.next())
        .await?
        .context("event")??;
    assert_eq!(
        (second.id.as_str(), second.kind),
        ("out", EventKind::Exited)
    );
    assert_eq!(second.exit, Some(exit));

    // Log rotation: rename, reopen, later output goes to the new file.
    let rotating = pod.bundle(
        "rotating",
        &[
            "sh",
            "-c",
            "mkfifo /tmp/go; echo before; read line < /tmp/go; echo after",
        ],
        BundleOpts::new(&handler),
    )?;
    client.create(rotating.clone()).await?;
    client.start("rotating").await?;
    let log = rotating.log_path.clone().context("log")?;
    wait_until("the first line", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("before"))
    })
    .await?;
    std::fs::rename(&log, log.with_extension("log.1"))?;
    client.reopen_log("rotating").await?;
    // The container waits on a FIFO; writing it from outside lets it go on.
    let init = protocol::read_started(&rotating.state_dir)
        .context("started")?
        .pid;
    std::fs::write(format!("/proc/{init}/root/tmp/go"), "go\n")?;
    wait_exit(&rotating.state_dir).await?;
    let old = log_records(&log.with_extension("log.1"))?;
    let new = log_records(&log)?;
    assert_eq!(old, vec![rec("stdout", "F", "before")]);
    assert_eq!(new, vec![rec("stdout", "F", "after")]);

    // Signal stops a sleeper; Forget drops it afterwards (not before).
    let sleeper = pod.bundle("sleeper", &["sleep", "1000"], BundleOpts::new(&handler))?;
    client.create(sleeper.clone()).await?;
    client.start("sleeper").await?;
    assert!(
        client.forget("sleeper").await.is_err(),
        "a running container cannot be forgotten"
    );
    client.signal("sleeper", libc::SIGKILL).await?;
    let exit = wait_exit(&sleeper.state_dir).await?;
    assert_eq!((exit.exit_code, exit.signal), (137, Some(libc::SIGKILL)));
    client.forget("sleeper").await?;
    client.forget("out").await?;
    let ids: Vec<String> = client.list().await?.into_iter().map(|c| c.id).collect();
    assert_eq!(ids, vec!["rotating".to_owned()]);

    // The OOM killer: its cgroup's memory limit is far below what it allocates.
    let mut opts = BundleOpts::new(&handler);
    opts.memory_limit = Some(16 << 20);
    let hog = pod.bundle("hog", &["sh", "-c", "head -c 200m /dev/zero | tail"], opts)?;
    client.create(hog.clone()).await?;
    client.start("hog").await?;
    let exit = wait_exit(&hog.state_dir).await?;
    assert!(exit.oom_killed, "{exit:?}");
    assert_ne!(exit.exit_code, 0);

    // Shutdown kills what runs, records it, and the monitor goes.
    let last = pod.bundle("last", &["sleep", "1000"], BundleOpts::new(&handler))?;
    let last_pid = client.create(last.clone()).await?;
    client.start("last").await?;
    let monitor = monitor_pid(&pod.run_dir)?;
    client.shutdown().await?;
    let exit =
        protocol::read_exit(&last.state_dir).context("exit record written before the reply")?;
    assert_eq!(exit.exit_code, 137);
    wait_until("the monitor to exit", || !alive(monitor)).await?;
    assert!(!alive(last_pid));
    // The subscription saw every change and ends with the monitor.
    let mut seen = vec![(first.id, first.kind), (second.id, second.kind)];
    while let Some(event) = tokio::time::timeout(WAIT, events.next()).await? {
        let event = event?;
        seen.push((event.id, event.kind));
    }
    let expected: Vec<(String, EventKind)> = ["out", "rotating", "sleeper", "hog", "last"]
        .iter()
        .flat_map(|id| {
            [
                (id.to_string(), EventKind::Started),
                (id.to_string(), EventKind::Exited),
            ]
        })
        .collect();
    assert_eq!(seen, expected);
    launch::cleanup(&pod.run_dir)?;
    assert!(!pod.run_dir.exists());
    assert!(mounts_below(&pod.run_dir).is_empty());
    drop(pod);
    Ok(())
}

#[tokio::test]
async fn containers_with_the_runc_handler() -> Result<()> {
    let root = TempRoot::new("runc-root")?;
    container_lifecycle(Handler::Oci {
        path: runc()?,
        root: root.path().to_owned(),
    })
    .await
}

#[tokio::test]
async fn containers_with_the_builtin_executor() -> Result<()> {
    container_lifecycle(Handler::Builtin).await
}

#[tokio::test]
async fn builtin_terminal_pod_pid_namespace_and_failures() -> Result<()> {
    let mut pod = Pod::new()?;
    let client = start_pod(&pod, "builtin-pod").await?;
    let monitor = monitor_pid(&pod.run_dir)?;

    // A terminal: one stream, logged as stdout, without the \r.
    let mut opts = BundleOpts::new(&Handler::Builtin);
    opts.tty = true;
    let tty = pod.bundle(
        "tty",
        &["sh", "-c", "echo on-a-tty; test -t 1 && echo is-a-tty"],
        opts,
    )?;
    client.create(tty.clone()).await?;
    client.start("tty").await?;
    assert_eq!(wait_exit(&tty.state_dir).await?.exit_code, 0);
    let records = log_records(tty.log_path.as_deref().context("log")?)?;
    assert_eq!(
        records,
        vec![
            rec("stdout", "F", "on-a-tty"),
            rec("stdout", "F", "is-a-tty")
        ]
    );

    // The pod's PID namespace: the monitor is PID 1 there, the container is not.
    let mut opts = BundleOpts::new(&Handler::Builtin);
    opts.pid_mode = PidMode::Pod;
    let shared = pod.bundle("shared", &["sleep", "1000"], opts)?;
    let pid = client.create(shared.clone()).await?;
    let ns = ns_pids(pid);
    assert_eq!(ns.len(), 2, "{ns:?}");
    assert_eq!(ns[0], pid);
    assert_ne!(ns[1], 1);
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/ns/pid"))?,
        std::fs::read_link(format!("/proc/{monitor}/ns/pid"))?
    );
    // Forgetting a created, never started container kills it.
    client.forget("shared").await?;
    assert!(!alive(pid));

    // An exec failure is the start's error, and the container exits 127.
    let missing = pod.bundle(
        "missing",
        &["/bin/no-such-binary"],
        BundleOpts::new(&Handler::Builtin),
    )?;
    client.create(missing.clone()).await?;
    let err = client.start("missing").await.unwrap_err().to_string();
    assert!(err.contains("no-such-binary"), "{err}");
    assert_eq!(
        protocol::read_exit(&missing.state_dir).map(|e| e.exit_code),
        Some(127)
    );
    let state = client.list().await?;
    assert!(state
        .iter()
        .any(|c| c.id == "missing" && c.state == ProcessStatus::Exited));

    // A setup failure is the create's error; nothing is registered.
    let mut broken = pod.bundle("broken", &["true"], BundleOpts::new(&Handler::Builtin))?;
    broken.bundle = pod.root.join("no-such-bundle");
    let err = client.create(broken).await.unwrap_err().to_string();
    assert!(err.contains("no-such-bundle"), "{err}");
    assert!(!client.list().await?.iter().any(|c| c.id == "broken"));
    let dup = client.create(missing).await.unwrap_err().to_string();
    assert!(dup.contains("already exists"), "{dup}");
    client.shutdown().await?;
    Ok(())
}
