//! Container features over CRI, each case run with the built-in executor and with runc:
//! users and groups, capabilities, read-only rootfs and mounts, seccomp, no_new_privs,
//! cgroup limits and OOM, CRI logs, tty, exec limits, stats, events and sysctls.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::security_profile::ProfileType;
use k8s_cri::v1::{
    Capability, ContainerConfig, ContainerEventType, ContainerState, ContainerStatsRequest,
    GetEventsRequest, Int64Value, LinuxContainerResources, LinuxContainerSecurityContext, Mount,
    PodSandboxConfig, PodSandboxStatsRequest, ReopenContainerLogRequest, SecurityProfile,
    UpdateContainerResourcesRequest,
};
use tests::cleanup::TempRoot;
use tests::cri_driver::CriDriver;
use tests::names::unique_name;
use tests::pods::{container_config, Node, ENV_LABEL};
use tokio::runtime::Runtime;
use tonic::transport::{Channel, Endpoint, Uri};

/// ExecSync output cap set on every node of this suite.
const MAX_EXEC_OUTPUT: usize = 1000;

/// Docker's and containerd's default capability set, as a CapEff mask.
const DEFAULT_CAPS: u64 = 0xa804_25fb;
const CAP_CHOWN: u64 = 1 << 0;
const CAP_NET_ADMIN: u64 = 1 << 12;

type Case = fn(&Node, &CriDriver) -> Result<()>;

/// Run `case` on a fresh node with sandboxes of `handler`.
fn run(handler: Option<&str>, case: Case) -> Result<()> {
    let line = format!("maxExecOutputBytes: {MAX_EXEC_OUTPUT}");
    let node = Node::start_with(&[&line])?;
    let cri = node.driver(handler)?;
    case(&node, &cri)
}

/// One `#[test]` per case and handler: `case::builtin` and `case::runc`.
macro_rules! cases {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[test]
            fn builtin() -> anyhow::Result<()> {
                super::run(None, super::$case)
            }
            #[test]
            fn runc() -> anyhow::Result<()> {
                super::run(Some("runc"), super::$case)
            }
        }
    )*};
}

cases!(
    user_groups,
    capabilities,
    readonly_rootfs_and_mounts,
    seccomp,
    no_new_privs,
    cgroup_limits,
    oom_killed,
    log_partial_lines,
    log_reopen,
    exec_limits,
    stats,
    events,
    sysctls,
);

/// A sandbox and its containers, torn down on drop.
struct Pod<'a> {
    cri: &'a CriDriver,
    id: String,
    config: PodSandboxConfig,
    containers: Vec<String>,
}

impl<'a> Pod<'a> {
    fn run(node: &Node, cri: &'a CriDriver, name: &str) -> Result<Self> {
        Self::run_with(node, cri, name, |_| {})
    }

    fn run_with(
        node: &Node,
        cri: &'a CriDriver,
        name: &str,
        tweak: impl FnOnce(&mut PodSandboxConfig),
    ) -> Result<Self> {
        let mut config = node
            .env
            .sandbox_config(name, "capstan-test", &unique_name("uid"))?;
        tweak(&mut config);
        let id = cri.run_sandbox(&config)?;
        Ok(Self {
            cri,
            id,
            config,
            containers: Vec::new(),
        })
    }

    /// Create (not start) a container of busybox running `command`, after `tweak`.
    fn create(
        &mut self,
        node: &Node,
        name: &str,
        command: &[&str],
        tweak: impl FnOnce(&mut ContainerConfig),
    ) -> Result<String> {
        let mut config = container_config(name, node.images.busybox(), command);
        tweak(&mut config);
        let id = self.cri.create_container(&self.id, &config, &self.config)?;
        self.containers.push(id.clone());
        Ok(id)
    }

    /// Create and start a container; wait until it runs.
    fn start(
        &mut self,
        node: &Node,
        name: &str,
        command: &[&str],
        tweak: impl FnOnce(&mut ContainerConfig),
    ) -> Result<String> {
        let id = self.create(node, name, command, tweak)?;
        self.cri.start_container(&id)?;
        self.cri.wait_running(&id, Duration::from_secs(30))?;
        Ok(id)
    }

    /// Cgroup parent of the sandbox, as sent.
    fn cgroup_parent(&self) -> String {
        self.config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .unwrap_or_default()
    }
}

impl Drop for Pod<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.cri.teardown(&self.id, &self.containers) {
            eprintln!("tearing down pod {}: {e:#}", self.id);
        }
    }
}

fn security(config: &mut ContainerConfig) -> &mut LinuxContainerSecurityContext {
    config
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

fn resources(config: &mut ContainerConfig) -> &mut LinuxContainerResources {
    config
        .linux
        .get_or_insert_with(Default::default)
        .resources
        .get_or_insert_with(Default::default)
}

/// Exec `cmd`, require exit 0, return stdout.
fn sh(cri: &CriDriver, id: &str, cmd: &str) -> Result<String> {
    let out = cri.exec_sync(id, &["sh", "-c", cmd], 10)?;
    ensure!(
        out.exit_code == 0,
        "`{cmd}` exited {}: {}{}",
        out.exit_code,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Exit code of `cmd` run through `sh -c`.
fn sh_code(cri: &CriDriver, id: &str, cmd: &str) -> Result<i32> {
    Ok(cri.exec_sync(id, &["sh", "-c", cmd], 10)?.exit_code)
}

/// Value of `key:` in the container's /proc/1/status.
fn status_field(cri: &CriDriver, id: &str, key: &str) -> Result<String> {
    let status = sh(cri, id, "cat /proc/1/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().to_owned())
        .with_context(|| format!("no {key} in /proc/1/status:\n{status}"))
}

fn cap_eff(cri: &CriDriver, id: &str) -> Result<u64> {
    let hex = status_field(cri, id, "CapEff")?;
    u64::from_str_radix(&hex, 16).with_context(|| format!("CapEff {hex}"))
}

fn wait_exited(
    cri: &CriDriver,
    id: &str,
    timeout: Duration,
) -> Result<k8s_cri::v1::ContainerStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        let status = cri.container_status(id)?;
        if status.state == ContainerState::ContainerExited as i32 {
            return Ok(status);
        }
        ensure!(Instant::now() < deadline, "{id} still {:?}", status.state);
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !check()? {
        ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn user_groups(node: &Node, cri: &CriDriver) -> Result<()> {
    let mut pod = Pod::run(node, cri, "users")?;
    let numeric = pod.start(node, "numeric", &["sleep", "3600"], |c| {
        let sc = security(c);
        sc.run_as_user = Some(Int64Value { value: 1000 });
        sc.run_as_group = Some(Int64Value { value: 2000 });
        sc.supplemental_groups = vec![3000, 4000];
    })?;
    assert_eq!(sh(cri, &numeric, "id -u")?.trim(), "1000");
    assert_eq!(sh(cri, &numeric, "id -g")?.trim(), "2000");
    let groups = sh(cri, &numeric, "id -G")?;
    let groups: Vec<&str> = groups.split_whitespace().collect();
    ensure!(
        groups.contains(&"3000") && groups.contains(&"4000"),
        "exec groups {groups:?}"
    );
    // The container's own process, not only exec, runs as that user.
    let uid = status_field(cri, &numeric, "Uid")?;
    assert_eq!(uid.split_whitespace().collect::<Vec<_>>(), ["1000"; 4]);
    let gid = status_field(cri, &numeric, "Gid")?;
    assert_eq!(gid.split_whitespace().collect::<Vec<_>>(), ["2000"; 4]);
    let sup = status_field(cri, &numeric, "Groups")?;
    ensure!(
        sup.split_whitespace().any(|g| g == "3000") && sup.split_whitespace().any(|g| g == "4000"),
        "Groups: {sup}"
    );
    // Non-root without capabilities: root-owned files are not writable.
    ensure!(sh_code(cri, &numeric, "echo x > /etc/passwd")? != 0);

    // A user name resolves through the image's /etc/passwd (nobody:65534:65534).
    let named = pod.start(node, "named", &["sleep", "3600"], |c| {
        security(c).run_as_username = "nobody".to_owned();
    })?;
    let uid = status_field(cri, &named, "Uid")?;
    assert_eq!(uid.split_whitespace().collect::<Vec<_>>(), ["65534"; 4]);
    assert_eq!(sh(cri, &named, "id -u; id -g")?, "65534\n65534\n");

    // An unknown name is refused at create.
    let err = pod
        .create(node, "ghost", &["true"], |c| {
            security(c).run_as_username = "no-such-user".to_owned();
        })
        .err()
        .context("creating a container of an unknown user succeeded")?;
    ensure!(format!("{err:#}").contains("no-such-user"), "{err:#}");
    Ok(())
}

fn capabilities(node: &Node, cri: &CriDriver) -> Result<()> {
    let mut pod = Pod::run(node, cri, "caps")?;
    let plain = pod.start(node, "plain", &["sleep", "3600"], |_| {})?;
    assert_eq!(cap_eff(cri, &plain)?, DEFAULT_CAPS, "default CapEff");
    ensure!(
        sh_code(cri, &plain, "test -e /dev/kmsg")? != 0,
        "/dev/kmsg in a plain container"
    );
    // Exec processes get the same set.
    let exec_caps = sh(cri, &plain, "grep CapEff /proc/self/status")?;
    ensure!(
        exec_caps.contains(&format!("{DEFAULT_CAPS:016x}")),
        "exec {exec_caps}"
    );

    let tuned = pod.start(node, "tuned", &["sleep", "3600"], |c| {
        security(c).capabilities = Some(Capability {
            add_capabilities: vec!["NET_ADMIN".to_owned()],
            drop_capabilities: vec!["CHOWN".to_owned()],
            ..Default::default()
        });
    })?;
    assert_eq!(
        cap_eff(cri, &tuned)?,
        (DEFAULT_CAPS | CAP_NET_ADMIN) & !CAP_CHOWN,
        "CapEff with NET_ADMIN added and CHOWN dropped"
    );
    // The dropped capability is really gone: root cannot chown.
    ensure!(sh_code(cri, &tuned, "touch /tmp/f && chown 1000 /tmp/f")? != 0);
    ensure!(sh_code(cri, &plain, "touch /tmp/f && chown 1000 /tmp/f")? == 0);

    let mut admin = Pod::run_with(node, cri, "privileged", |c| {
        c.linux
            .get_or_insert_with(Default::default)
            .security_context
            .get_or_insert_with(Default::default)
            .privileged = true;
    })?;
    let privileged = admin.start(node, "privileged", &["sleep", "3600"], |c| {
        security(c).privileged = true;
    })?;
    sh(cri, &privileged, "test -c /dev/kmsg")?;
    // Every capability the node lets the runtime hold (its bounding set, the same as this
    // test's: a sandboxed host may withhold some the kernel knows), as runc grants.
    let all = cap_eff(cri, &privileged)?;
    let status = fs::read_to_string("/proc/self/status")?;
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .context("no CapBnd in /proc/self/status")?;
    let bounding = u64::from_str_radix(bounding.trim(), 16)?;
    assert_eq!(all, bounding, "privileged CapEff");
    Ok(())
}

fn readonly_rootfs_and_mounts(node: &Node, cri: &CriDriver) -> Result<()> {
    let rw = TempRoot::new("rw-mount")?;
    let ro = TempRoot::new("ro-mount")?;
    fs::write(ro.join("present"), "ro content\n")?;
    let files = TempRoot::new("file-mount")?;
    let file = files.join("config.txt");
    fs::write(&file, "from the host\n")?;
    let mount = |container: &str, host: &Path, readonly: bool| Mount {
        container_path: container.to_owned(),
        host_path: host.to_string_lossy().into_owned(),
        readonly,
        ..Default::default()
    };
    let mut pod = Pod::run(node, cri, "readonly")?;
    let id = pod.start(node, "ro", &["sleep", "3600"], |c| {
        security(c).readonly_rootfs = true;
        c.mounts = vec![
            mount("/data", rw.path(), false),
            mount("/ro", ro.path(), true),
            mount("/etc/config.txt", &file, false),
        ];
    })?;
    ensure!(
        sh_code(cri, &id, "echo x > /x")? != 0,
        "wrote /x on a read-only rootfs"
    );
    ensure!(
        sh_code(cri, &id, "echo x > /tmp/x")? != 0,
        "wrote /tmp/x on a read-only rootfs"
    );
    sh(cri, &id, "echo written > /data/out")?;
    assert_eq!(fs::read_to_string(rw.join("out"))?, "written\n");
    assert_eq!(sh(cri, &id, "cat /ro/present")?, "ro content\n");
    ensure!(
        sh_code(cri, &id, "echo x > /ro/new")? != 0,
        "wrote into a readonly mount"
    );
    ensure!(!ro.join("new").exists());
    assert_eq!(sh(cri, &id, "cat /etc/config.txt")?, "from the host\n");
    sh(cri, &id, "echo changed > /etc/config.txt")?;
    assert_eq!(fs::read_to_string(&file)?, "changed\n");
    // /dev/shm and the pod's /etc files stay usable.
    sh(cri, &id, "echo x > /dev/shm/x")?;
    drop(pod);
    Ok(())
}

fn seccomp(node: &Node, cri: &CriDriver) -> Result<()> {
    let profiles = TempRoot::new("seccomp")?;
    let profile = profiles.join("no-mkdir.json");
    fs::write(
        &profile,
        serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}],
        })
        .to_string(),
    )?;
    let with = |kind: ProfileType, path: &Path| {
        let sp = SecurityProfile {
            profile_type: kind as i32,
            localhost_ref: path.to_string_lossy().into_owned(),
        };
        move |c: &mut ContainerConfig| security(c).seccomp = Some(sp)
    };
    let mut pod = Pod::run(node, cri, "seccomp")?;
    let default = pod.start(
        node,
        "default",
        &["sleep", "3600"],
        with(ProfileType::RuntimeDefault, Path::new("")),
    )?;
    assert_eq!(status_field(cri, &default, "Seccomp")?, "2");
    assert_eq!(
        sh(cri, &default, "grep ^Seccomp: /proc/self/status")?
            .split_whitespace()
            .nth(1),
        Some("2")
    );
    // The default profile blocks what containers must not do (unshare of a user ns
    // needs CAP_SYS_ADMIN here anyway; keyctl is denied by the default profile).
    sh(cri, &default, "mkdir /tmp/ok")?;

    let local = pod.start(
        node,
        "local",
        &["sleep", "3600"],
        with(ProfileType::Localhost, &profile),
    )?;
    assert_eq!(status_field(cri, &local, "Seccomp")?, "2");
    let out = cri.exec_sync(&local, &["mkdir", "/tmp/x"], 10)?;
    ensure!(
        out.exit_code != 0,
        "mkdir allowed under a profile denying it"
    );
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("ermitted"),
        "mkdir error: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(cri.exec_sync(&local, &["true"], 10)?.exit_code, 0);

    let open = pod.start(
        node,
        "open",
        &["sleep", "3600"],
        with(ProfileType::Unconfined, Path::new("")),
    )?;
    assert_eq!(status_field(cri, &open, "Seccomp")?, "0");

    // A Localhost profile that does not exist is refused at create.
    let missing = profiles.join("missing.json");
    ensure!(
        pod.create(
            node,
            "missing",
            &["true"],
            with(ProfileType::Localhost, &missing)
        )
        .is_err(),
        "created a container with a missing seccomp profile"
    );
    Ok(())
}

fn no_new_privs(node: &Node, cri: &CriDriver) -> Result<()> {
    let mut pod = Pod::run(node, cri, "nnp")?;
    let set = pod.start(node, "set", &["sleep", "3600"], |c| {
        security(c).no_new_privs = true
    })?;
    assert_eq!(status_field(cri, &set, "NoNewPrivs")?, "1");
    assert_eq!(
        sh(cri, &set, "grep ^NoNewPrivs: /proc/self/status")?
            .split_whitespace()
            .nth(1),
        Some("1")
    );
    let unset = pod.start(node, "unset", &["sleep", "3600"], |c| {
        security(c).seccomp = Some(SecurityProfile {
            profile_type: ProfileType::Unconfined as i32,
            ..Default::default()
        });
    })?;
    assert_eq!(status_field(cri, &unset, "NoNewPrivs")?, "0");
    Ok(())
}

/// The container's cgroup directory in hierarchy `controller` (from /proc/PID/cgroup).
fn cgroup_dir(cri: &CriDriver, id: &str, controller: &str) -> Result<PathBuf> {
    let pid = cri.container_pid(id)?.context("container has no pid")?;
    let table = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let rel = table
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == controller)
                .then(|| path.to_owned())
        })
        .with_context(|| format!("no {controller} in /proc/{pid}/cgroup:\n{table}"))?;
    // Each v1 controller is mounted on its own here (cpu and cpuacct too).
    let mount = controller;
    Ok(Path::new("/sys/fs/cgroup")
        .join(mount)
        .join(rel.trim_start_matches('/')))
}

fn read_num(path: &Path) -> Result<i64> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{}: {text}", path.display()))
}

fn cgroup_limits(node: &Node, cri: &CriDriver) -> Result<()> {
    let mut pod = Pod::run(node, cri, "limits")?;
    let id = pod.start(node, "limited", &["sleep", "3600"], |c| {
        let r = resources(c);
        r.memory_limit_in_bytes = 64 << 20;
        r.cpu_period = 100_000;
        r.cpu_quota = 50_000;
        r.cpu_shares = 512;
    })?;
    let memory = cgroup_dir(cri, &id, "memory")?;
    let parent = pod.cgroup_parent();
    ensure!(
        memory.starts_with(Path::new("/sys/fs/cgroup/memory").join(parent.trim_start_matches('/'))),
        "{} not under the sandbox's cgroup parent {parent}",
        memory.display()
    );
    ensure!(
        memory.to_string_lossy().contains(&id),
        "{} not named by the container",
        memory.display()
    );
    assert_eq!(read_num(&memory.join("memory.limit_in_bytes"))?, 64 << 20);
    // Without a swap limit, swap is capped at the memory limit (no swap), as containerd does.
    let memsw = memory.join("memory.memsw.limit_in_bytes");
    if memsw.exists() {
        assert_eq!(read_num(&memsw)?, 64 << 20, "memory+swap limit");
    }
    let cpu = cgroup_dir(cri, &id, "cpu")?;
    assert_eq!(read_num(&cpu.join("cpu.cfs_period_us"))?, 100_000);
    assert_eq!(read_num(&cpu.join("cpu.cfs_quota_us"))?, 50_000);
    assert_eq!(read_num(&cpu.join("cpu.shares"))?, 512);

    let mut client = Raw::connect(node)?;
    client.update(
        &id,
        LinuxContainerResources {
            memory_limit_in_bytes: 128 << 20,
            cpu_period: 100_000,
            cpu_quota: 20_000,
            cpu_shares: 512,
            ..Default::default()
        },
    )?;
    assert_eq!(read_num(&memory.join("memory.limit_in_bytes"))?, 128 << 20);
    if memsw.exists() {
        assert_eq!(
            read_num(&memsw)?,
            128 << 20,
            "memory+swap limit after the update"
        );
    }
    assert_eq!(read_num(&cpu.join("cpu.cfs_quota_us"))?, 20_000);
    // ContainerStatus reports the new resources.
    let status = cri.container_status(&id)?;
    if let Some(r) = status.resources.and_then(|r| r.linux) {
        assert_eq!(r.memory_limit_in_bytes, 128 << 20);
    }
    Ok(())
}

fn oom_killed(node: &Node, cri: &CriDriver) -> Result<()> {
    let mut pod = Pod::run(node, cri, "oom")?;
    let id = pod.create(
        node,
        "hog",
        &[
            "sh",
            "-c",
            "x=$(head -c 100000000 /dev/zero | tr '\\0' a); sleep 1",
        ],
        |c| resources(c).memory_limit_in_bytes = 16 << 20,
    )?;
    cri.start_container(&id)?;
    let status = wait_exited(cri, &id, Duration::from_secs(60))?;
    assert_eq!(
        status.reason, "OOMKilled",
        "exit {} {}",
        status.exit_code, status.message
    );
    assert_eq!(status.exit_code, 137);
    Ok(())
}

/// Check every line is `<RFC3339Nano> stdout|stderr F|P <content>`; return (stream, tag, content).
fn parse_log(text: &str) -> Result<Vec<(String, String, String)>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(4, ' ');
        let (Some(ts), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
            bail!("short log line {line:?}");
        };
        let content = parts.next().unwrap_or("");
        ensure!(is_rfc3339_nano(ts), "timestamp {ts:?} in {line:?}");
        ensure!(
            stream == "stdout" || stream == "stderr",
            "stream in {line:?}"
        );
        ensure!(tag == "F" || tag == "P", "tag in {line:?}");
        out.push((stream.to_owned(), tag.to_owned(), content.to_owned()));
    }
    Ok(out)
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`.
fn is_rfc3339_nano(ts: &str) -> bool {
    let b = ts.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    if b.len() < 20 || !digits(0..4) || b[4] != b'-' || !digits(5..7) || b[7] != b'-' {
        return false;
    }
    if !digits(8..10) || b[10] != b'T' || !digits(11..13) || b[13] != b':' || !digits(14..16) {
        return false;
    }
    if b[16] != b':' || !digits(17..19) {
        return false;
    }
    let mut rest = &ts[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 || n > 9 {
            return false;
        }
        rest = &frac[n..];
    }
    rest == "Z"
        || (rest.len() == 6
            && (rest.starts_with('+') || rest.starts_with('-'))
            && rest.as_bytes()[3] == b':')
}

fn log_partial_lines(node: &Node, cri: &CriDriver) -> Result<()> {
    let mut pod = Pod::run(node, cri, "partial")?;
    let id = pod.create(
        node,
        "partial",
        &[
            "sh",
            "-c",
            "printf abc; sleep 0.3; echo def; printf 'e1\\ne2' >&2",
        ],
        |_| {},
    )?;
    cri.start_container(&id)?;
    wait_exited(cri, &id, Duration::from_secs(20))?;
    let log = fs::read_to_string(cri.container_status(&id)?.log_path)?;
    let lines = parse_log(&log)?;
    let stream = |name: &str| -> (String, Vec<String>) {
        let mine: Vec<_> = lines.iter().filter(|l| l.0 == name).collect();
        let text = mine
            .iter()
            .map(|(_, tag, c)| {
                if tag == "F" {
                    format!("{c}\n")
                } else {
                    c.clone()
                }
            })
            .collect();
        (text, mine.iter().map(|l| l.1.clone()).collect())
    };
    let (stdout, tags) = stream("stdout");
    assert_eq!(stdout, "abcdef\n", "log:\n{log}");
    // The monitor may join the pieces into one line or tag the first piece P; either
    // way only the last piece ends the line.
    ensure!(!tags.is_empty(), "no stdout lines:\n{log}");
    assert_eq!(tags.last().map(String::as_str), Some("F"));
    // A stream ending without a newline is flushed, as a partial line, at exit.
    let (stderr, _) = stream("stderr");
    ensure!(stderr.starts_with("e1\ne2"), "stderr {stderr:?} in\n{log}");
    Ok(())
}

fn log_reopen(node: &Node, cri: &CriDriver) -> Result<()> {
    let mut pod = Pod::run(node, cri, "reopen")?;
    let id = pod.start(
        node,
        "rotating",
        &[
            "sh",
            "-c",
            "echo one; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo two; exec sleep 3600",
        ],
        |_| {},
    )?;
    let path = PathBuf::from(cri.container_status(&id)?.log_path);
    wait_for("the first line", Duration::from_secs(10), || {
        Ok(fs::read_to_string(&path)
            .unwrap_or_default()
            .contains(" stdout F one"))
    })?;
    let rotated = path.with_extension("log.1");
    fs::rename(&path, &rotated)?;
    Raw::connect(node)?.reopen_log(&id)?;
    ensure!(
        path.exists(),
        "reopen created no file at {}",
        path.display()
    );
    sh(cri, &id, "touch /tmp/go")?;
    wait_for("the second line", Duration::from_secs(10), || {
        Ok(fs::read_to_string(&path)
            .unwrap_or_default()
            .contains(" stdout F two"))
    })?;
    let old = fs::read_to_string(&rotated)?;
    ensure!(
        old.contains(" stdout F one") && !old.contains("two"),
        "rotated log:\n{old}"
    );
    ensure!(!fs::read_to_string(&path)?.contains("one"));
    // Reopening a stopped container's log is refused.
    cri.stop_container(&id, 0)?;
    ensure!(
        Raw::connect(node)?.reopen_log(&id).is_err(),
        "reopened the log of a stopped container"
    );
    Ok(())
}

/// tty containers run on the built-in executor; OCI handlers refuse them clearly at create.
mod tty {
    #[test]
    fn builtin() -> anyhow::Result<()> {
        super::run(None, super::tty)
    }
    #[test]
    fn runc() -> anyhow::Result<()> {
        super::run(Some("runc"), super::tty_refused)
    }
}

fn tty_refused(node: &Node, cri: &CriDriver) -> Result<()> {
    let mut pod = Pod::run(node, cri, "tty")?;
    let err = pod
        .create(node, "tty", &["true"], |c| c.tty = true)
        .err()
        .context("a tty container was created on an OCI handler")?;
    ensure!(
        format!("{err:#}").contains("terminal is not supported"),
        "{err:#}"
    );
    ensure!(
        cri.list_containers(Some(&pod.id))?.is_empty(),
        "refused container listed"
    );
    Ok(())
}

fn tty(node: &Node, cri: &CriDriver) -> Result<()> {
    let mut pod = Pod::run(node, cri, "tty")?;
    let id = pod.create(
        node,
        "tty",
        &["sh", "-c", "echo hi; test -t 1 && echo tty"],
        |c| c.tty = true,
    )?;
    cri.start_container(&id)?;
    let status = wait_exited(cri, &id, Duration::from_secs(20))?;
    assert_eq!(status.exit_code, 0);
    let path = status.log_path;
    // The monitor may write the last output just after the exit record.
    wait_for("two tty lines", Duration::from_secs(5), || {
        Ok(fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .count()
            >= 2)
    })?;
    let log = fs::read_to_string(&path)?;
    let lines = parse_log(&log)?;
    let contents: Vec<(&str, &str, &str)> = lines
        .iter()
        .map(|(s, t, c)| (s.as_str(), t.as_str(), c.trim_end_matches('\r')))
        .collect();
    assert_eq!(
        contents,
        [("stdout", "F", "hi"), ("stdout", "F", "tty")],
        "log:\n{log}"
    );
    Ok(())
}

fn exec_limits(node: &Node, cri: &CriDriver) -> Result<()> {
    let mut pod = Pod::run(node, cri, "exec")?;
    let id = pod.start(node, "main", &["sleep", "3600"], |_| {})?;

    let began = Instant::now();
    let err = cri
        .exec_sync(&id, &["sleep", "10"], 1)
        .err()
        .context("exec of sleep 10 with a 1 s timeout succeeded")?;
    let took = began.elapsed();
    ensure!(format!("{err:#}").contains("DeadlineExceeded"), "{err:#}");
    ensure!(took < Duration::from_secs(3), "timeout took {took:?}");
    // The timed-out process does not linger in the container.
    wait_for(
        "the timed-out exec to be killed",
        Duration::from_secs(3),
        || Ok(!sh(cri, &id, "ps -o args")?.contains("sleep 10")),
    )?;

    let out = cri.exec_sync(&id, &["head", "-c", "20000000", "/dev/zero"], 10)?;
    assert_eq!(out.stdout.len(), MAX_EXEC_OUTPUT, "stdout capped");
    ensure!(out.stdout.iter().all(|&b| b == 0));
    let out = cri.exec_sync(
        &id,
        &[
            "sh",
            "-c",
            "head -c 800 /dev/zero; head -c 800 /dev/zero >&2",
        ],
        10,
    )?;
    assert_eq!(
        out.stdout.len() + out.stderr.len(),
        MAX_EXEC_OUTPUT,
        "stdout + stderr capped"
    );

    assert_eq!(
        cri.exec_sync(&id, &["sh", "-c", "exit 42"], 10)?.exit_code,
        42
    );
    assert_eq!(
        cri.exec_sync(&id, &["sh", "-c", "kill -9 $$"], 10)?
            .exit_code,
        137
    );
    // A missing binary fails: as an RPC error (like containerd) or a non-zero exit.
    if let Ok(out) = cri.exec_sync(&id, &["/no/such/binary"], 10) {
        ensure!(out.exit_code != 0, "exec of a missing binary exited 0");
    }
    Ok(())
}

fn stats(node: &Node, cri: &CriDriver) -> Result<()> {
    let mut pod = Pod::run(node, cri, "stats")?;
    let id = pod.start(
        node,
        "busy",
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; exec sleep 3600",
        ],
        |_| {},
    )?;
    let mut client = Raw::connect(node)?;
    let mut cpu = 0;
    wait_for("cpu usage", Duration::from_secs(20), || {
        let s = client.container_stats(&id)?;
        cpu = s
            .cpu
            .and_then(|c| c.usage_core_nano_seconds)
            .map_or(0, |v| v.value);
        Ok(cpu > 10_000_000)
    })?;
    let before = client.container_stats(&id)?;
    let working_set = before
        .memory
        .as_ref()
        .and_then(|m| m.working_set_bytes.as_ref())
        .map_or(0, |v| v.value);
    ensure!(working_set > 0, "memory working set {before:?}");
    let layer = |s: &k8s_cri::v1::ContainerStats| {
        s.writable_layer
            .as_ref()
            .and_then(|w| w.used_bytes.as_ref())
            .map_or(0, |v| v.value)
    };
    let layer_before = layer(&before);
    sh(
        cri,
        &id,
        "dd if=/dev/zero of=/tmp/blob bs=1024 count=1024 2>/dev/null",
    )?;
    let after = client.container_stats(&id)?;
    ensure!(
        layer(&after) >= layer_before + (1 << 20),
        "writable layer {layer_before} -> {}",
        layer(&after)
    );

    let sandbox = client.sandbox_stats(&pod.id)?;
    let linux = sandbox.linux.context("no linux sandbox stats")?;
    ensure!(
        linux
            .containers
            .iter()
            .any(|c| c.attributes.as_ref().is_some_and(|a| a.id == id)),
        "sandbox stats list no {id}: {linux:?}"
    );
    Ok(())
}

fn events(node: &Node, cri: &CriDriver) -> Result<()> {
    let mut pod = Pod::run(node, cri, "events")?;
    let mut client = Raw::connect(node)?;
    let events = client.collect_events()?;
    let id = pod.create(node, "short", &["true"], |_| {})?;
    cri.start_container(&id)?;
    wait_exited(cri, &id, Duration::from_secs(20))?;
    cri.remove_container(&id)?;
    pod.containers.clear();
    let want = [
        ContainerEventType::ContainerCreatedEvent,
        ContainerEventType::ContainerStartedEvent,
        ContainerEventType::ContainerStoppedEvent,
        ContainerEventType::ContainerDeletedEvent,
    ];
    let mut seen = Vec::new();
    wait_for("four events", Duration::from_secs(10), || {
        seen = events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|e| e.container_id == id)
            .map(|e| ContainerEventType::try_from(e.container_event_type))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(seen.len() >= want.len())
    })?;
    assert_eq!(seen, want);
    let all = events.lock().unwrap_or_else(|e| e.into_inner()).clone();
    // Every event carries the sandbox's status (an evented PLEG drops those without), and
    // the statuses of the sandbox's containers: none once the container is deleted.
    for e in all.iter().filter(|e| e.container_id == id) {
        ensure!(
            e.pod_sandbox_status
                .as_ref()
                .is_some_and(|s| s.id == pod.id),
            "event without its sandbox: {e:?}"
        );
        let listed = e.containers_statuses.iter().any(|c| c.id == id);
        let deleted = e.container_event_type == ContainerEventType::ContainerDeletedEvent as i32;
        ensure!(listed != deleted, "container statuses of {e:?}");
    }
    Ok(())
}

fn sysctls(node: &Node, cri: &CriDriver) -> Result<()> {
    let mine = Some((ENV_LABEL, node.env.id()));
    let sysctl = |key: &str, value: &str| {
        let (key, value) = (key.to_owned(), value.to_owned());
        move |c: &mut PodSandboxConfig| {
            c.linux.get_or_insert_with(Default::default).sysctls = HashMap::from([(key, value)]);
        }
    };
    let refused = Pod::run_with(node, cri, "panic", sysctl("kernel.panic", "1"));
    let err = match refused {
        Ok(pod) => bail!("sandbox {} with kernel.panic started", pod.id),
        Err(e) => e,
    };
    ensure!(format!("{err:#}").contains("InvalidArgument"), "{err:#}");
    ensure!(
        cri.list_sandboxes(mine)?.is_empty(),
        "a refused sandbox is listed"
    );
    let run_dirs: Vec<_> = fs::read_dir(node.env.run_root())?
        .flatten()
        .map(|e| e.path())
        .collect();
    ensure!(run_dirs.is_empty(), "left behind: {run_dirs:?}");

    let mut pod = Pod::run_with(
        node,
        cri,
        "sysctl",
        sysctl("net.ipv4.ip_unprivileged_port_start", "0"),
    )?;
    let id = pod.start(node, "main", &["sleep", "3600"], |_| {})?;
    assert_eq!(
        sh(
            cri,
            &id,
            "cat /proc/sys/net/ipv4/ip_unprivileged_port_start"
        )?
        .trim(),
        "0"
    );
    // Only the pod's network namespace changed.
    let host = fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")?;
    assert_ne!(host.trim(), "0", "the host's sysctl changed");
    Ok(())
}

/// Raw RuntimeService calls the blocking driver does not offer, on a runtime of their own
/// so an event stream keeps draining between calls.
struct Raw {
    rt: Runtime,
    client: RuntimeServiceClient<Channel>,
}

type EventLog = std::sync::Arc<std::sync::Mutex<Vec<k8s_cri::v1::ContainerEventResponse>>>;

impl Raw {
    fn connect(node: &Node) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let socket = node.cri.socket();
        let channel = rt.block_on(async move {
            Endpoint::try_from("http://localhost")?
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let socket = socket.clone();
                    async move {
                        tokio::net::UnixStream::connect(socket)
                            .await
                            .map(TokioIo::new)
                    }
                }))
                .await
        })?;
        Ok(Self {
            rt,
            client: RuntimeServiceClient::new(channel),
        })
    }

    fn update(&mut self, id: &str, linux: LinuxContainerResources) -> Result<()> {
        let request = UpdateContainerResourcesRequest {
            container_id: id.to_owned(),
            linux: Some(linux),
            ..Default::default()
        };
        self.rt
            .block_on(self.client.update_container_resources(request))
            .context("UpdateContainerResources")?;
        Ok(())
    }

    fn reopen_log(&mut self, id: &str) -> Result<()> {
        let request = ReopenContainerLogRequest {
            container_id: id.to_owned(),
        };
        self.rt
            .block_on(self.client.reopen_container_log(request))
            .context("ReopenContainerLog")?;
        Ok(())
    }

    fn container_stats(&mut self, id: &str) -> Result<k8s_cri::v1::ContainerStats> {
        let request = ContainerStatsRequest {
            container_id: id.to_owned(),
        };
        self.rt
            .block_on(self.client.container_stats(request))
            .context("ContainerStats")?
            .into_inner()
            .stats
            .context("ContainerStats without stats")
    }

    fn sandbox_stats(&mut self, id: &str) -> Result<k8s_cri::v1::PodSandboxStats> {
        let request = PodSandboxStatsRequest {
            pod_sandbox_id: id.to_owned(),
        };
        self.rt
            .block_on(self.client.pod_sandbox_stats(request))
            .context("PodSandboxStats")?
            .into_inner()
            .stats
            .context("PodSandboxStats without stats")
    }

    /// Subscribe to GetContainerEvents; events are appended to the returned log as they come.
    fn collect_events(&mut self) -> Result<EventLog> {
        let mut stream = self
            .rt
            .block_on(self.client.get_container_events(GetEventsRequest {}))
            .context("GetContainerEvents")?
            .into_inner();
        let log = EventLog::default();
        let feed = log.clone();
        self.rt.spawn(async move {
            while let Ok(Some(event)) = stream.message().await {
                feed.lock().unwrap_or_else(|e| e.into_inner()).push(event);
            }
        });
        Ok(log)
    }
}
