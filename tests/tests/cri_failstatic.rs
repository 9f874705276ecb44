//! Fail-static behaviour of `capstan cri`: containers and their logs survive a `kill -9` of
//! the server, a crash in the middle of RunPodSandbox or CreateContainer leaves nothing
//! behind once the server restarts, and bad input is refused with a clear error and no
//! leftovers.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use k8s_cri::v1::{
    ContainerState, Mount, NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxState,
};
use tests::binaries::require_root;
use tests::capstan::{CapstanCri, CriConfig};
use tests::cri_driver::CriDriver;
use tests::image::hostile::on_busybox;
use tests::pods::{container_config, procs, PodEnv, PodImages, PodNetwork, ENV_LABEL};
use tests::push::{image_ref, push_image};
use tests::{unique_name, Entry, Layer, ManifestKind, TempRoot};

/// A running `capstan cri` with pods on a reference-plugin network.
struct Node {
    images: PodImages,
    net: PodNetwork,
    env: PodEnv,
    cri: CapstanCri,
}

impl Node {
    fn start() -> Result<Self> {
        require_root()?;
        let images = PodImages::start()?;
        let net = PodNetwork::reference()?;
        let env = PodEnv::new()?;
        let config = env
            .capstan_config(&net, CriConfig::default().registry(images.registry()))
            .line("runtimeHandlers:\n  runc:\n    path: /usr/bin/runc");
        let cri = CapstanCri::start(&config)?;
        let node = Self {
            images,
            net,
            env,
            cri,
        };
        node.driver(None)?.pull_image(node.images.busybox())?;
        Ok(node)
    }

    fn driver(&self, handler: Option<&str>) -> Result<CriDriver> {
        let driver = CriDriver::connect(&self.cri.socket())?;
        Ok(match handler {
            Some(h) => driver.with_runtime_handler(h),
            None => driver,
        })
    }

    fn sandbox(&self, name: &str) -> Result<PodSandboxConfig> {
        self.env
            .sandbox_config(name, "capstan-test", &unique_name("uid"))
    }

    /// Sandboxes of this node's environment.
    fn my_sandboxes(&self, cri: &CriDriver) -> Result<Vec<k8s_cri::v1::PodSandbox>> {
        cri.list_sandboxes(Some((ENV_LABEL, self.env.id())))
    }

    /// Stop and remove every sandbox and container the runtime lists for this environment.
    fn remove_all(&self, cri: &CriDriver) -> Result<()> {
        for sandbox in self.my_sandboxes(cri)? {
            let containers: Vec<String> = cri
                .list_containers(Some(&sandbox.id))?
                .into_iter()
                .map(|c| c.id)
                .collect();
            cri.teardown(&sandbox.id, &containers)?;
        }
        Ok(())
    }

    /// Everything a removed pod could leave behind on the host, each as one line.
    fn leftovers(&self) -> Vec<String> {
        let mut found = Vec::new();
        let run_root = self.env.run_root().to_string_lossy().into_owned();
        for pid in procs::find(|cmd| cmd.contains("shim") && cmd.contains(&run_root)) {
            found.push(format!("monitor process {pid}: {}", procs::cmdline(pid)));
        }
        let roots = [self.env.run_root(), self.cri.root()];
        for mount in mount_points() {
            if roots.iter().any(|r| mount.starts_with(r)) {
                found.push(format!("mount {}", mount.display()));
            }
        }
        for veth in bridge_ports(self.net.bridge()) {
            found.push(format!("veth {veth} on {}", self.net.bridge()));
        }
        for ip in ipam_allocations(&self.net) {
            found.push(format!("IP allocation {ip}"));
        }
        for cgroup in pod_cgroup_children(self.env.id()) {
            found.push(format!("cgroup {}", cgroup.display()));
        }
        for name in fs::read_dir(self.env.run_root())
            .into_iter()
            .flatten()
            .flatten()
        {
            found.push(format!("run dir {}", name.path().display()));
        }
        for dir in ["sandboxes", "containers"] {
            for name in fs::read_dir(self.cri.root().join(dir))
                .into_iter()
                .flatten()
                .flatten()
                // `.tmp` is the store's scratch area for atomic writes.
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            {
                found.push(format!("{dir} record {}", name.path().display()));
            }
        }
        found
    }

    fn ensure_clean(&self, when: &str) -> Result<()> {
        let left = self.leftovers();
        ensure!(
            left.is_empty(),
            "{when}: left behind:\n{}\n--- runtime log ---\n{}",
            left.join("\n"),
            self.cri.log()
        );
        Ok(())
    }
}

/// Mount points in /proc/self/mountinfo.
fn mount_points() -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .collect()
}

/// Interfaces enslaved to `bridge` (none when the bridge does not exist).
fn bridge_ports(bridge: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "master", bridge])
        .output();
    let Ok(out) = out else { return Vec::new() };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect()
}

/// The addresses host-local holds for the network (one file per allocated IP).
fn ipam_allocations(net: &PodNetwork) -> Vec<String> {
    let conflist = net.conflist();
    let Some(data_dir) = conflist["plugins"][0]["ipam"]["dataDir"].as_str() else {
        return vec!["no IPAM data dir in the conflist".to_owned()];
    };
    fs::read_dir(Path::new(data_dir).join(net.name()))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip"))
        .collect()
}

/// Cgroups below the pod-level cgroups (`/<env>/pod<uid>/...`) in any hierarchy: the
/// runtime's sandbox and container cgroups. The pod-level ones are the kubelet's to remove.
fn pod_cgroup_children(env_id: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for hierarchy in fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        if !hierarchy.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        for pod in fs::read_dir(hierarchy.path().join(env_id))
            .into_iter()
            .flatten()
            .flatten()
        {
            for child in fs::read_dir(pod.path()).into_iter().flatten().flatten() {
                if child.file_type().is_ok_and(|t| t.is_dir()) {
                    found.push(child.path());
                }
            }
        }
    }
    found
}

/// The numbers of `line N` entries in a CRI log file, in order.
fn logged_numbers(path: &Path) -> Result<Vec<u64>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut numbers = Vec::new();
    let mut partial = String::new();
    for record in text.lines() {
        // <timestamp> <stream> <P|F> <content>
        let mut parts = record.splitn(4, ' ');
        let (_, _, tag, content) = (parts.next(), parts.next(), parts.next(), parts.next());
        partial.push_str(content.unwrap_or(""));
        if tag == Some("P") {
            continue;
        }
        let line = std::mem::take(&mut partial);
        let n = line
            .strip_prefix("line ")
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("unexpected log record {record:?}"))?;
        numbers.push(n);
    }
    Ok(numbers)
}

fn ensure_consecutive(numbers: &[u64], what: &str) -> Result<()> {
    ensure!(!numbers.is_empty(), "{what}: no lines logged");
    ensure!(numbers[0] == 0, "{what}: first line is {}", numbers[0]);
    for pair in numbers.windows(2) {
        ensure!(
            pair[1] == pair[0] + 1,
            "{what}: line {} followed by {}",
            pair[0],
            pair[1]
        );
    }
    Ok(())
}

const COUNTER: &[&str] = &[
    "sh",
    "-c",
    "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.01; done",
];

#[test]
fn kill_9_keeps_containers_and_logs() -> Result<()> {
    let mut node = Node::start()?;
    let mut pods = Vec::new();
    {
        let cri = node.driver(None)?;
        for i in 0..3 {
            let (pod, ctr) = cri.start_pod(
                &node.env,
                &format!("count{i}"),
                node.images.busybox(),
                COUNTER,
            )?;
            let pid = cri
                .container_pid(&ctr)?
                .context("ContainerStatus reports no pid")?;
            let status = cri.container_status(&ctr)?;
            pods.push((pod, ctr, pid, status));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    node.cri.kill();
    for (_, ctr, pid, _) in &pods {
        ensure!(
            procs::cmdline(*pid).contains("while true"),
            "container {ctr} process {pid} is gone after the server was killed"
        );
    }
    std::thread::sleep(Duration::from_secs(1));
    node.cri.restart()?;
    let cri = node.driver(None)?;

    let sandboxes: HashMap<String, i32> = node
        .my_sandboxes(&cri)?
        .into_iter()
        .map(|s| (s.id, s.state))
        .collect();
    let containers: HashMap<String, i32> = cri
        .list_containers(None)?
        .into_iter()
        .map(|c| (c.id, c.state))
        .collect();
    for (pod, ctr, pid, before) in &pods {
        assert_eq!(
            sandboxes.get(pod),
            Some(&(PodSandboxState::SandboxReady as i32)),
            "sandbox {pod} after restart"
        );
        assert_eq!(
            containers.get(ctr),
            Some(&(ContainerState::ContainerRunning as i32)),
            "container {ctr} after restart"
        );
        let status = cri.container_status(ctr)?;
        assert_eq!(status.state, ContainerState::ContainerRunning as i32);
        assert_eq!(
            (status.started_at, &status.log_path, &status.image_ref),
            (before.started_at, &before.log_path, &before.image_ref)
        );
        assert_eq!(cri.container_pid(ctr)?, Some(*pid), "pid of {ctr}");
        ensure!(
            procs::cmdline(*pid).contains("while true"),
            "process {pid} of {ctr}"
        );
    }

    // Let the restarted server see more lines, then stop: the log must hold every line.
    std::thread::sleep(Duration::from_millis(300));
    for (pod, ctr, _, before) in &pods {
        cri.stop_container(ctr, 0)?;
        let numbers = logged_numbers(Path::new(&before.log_path))?;
        ensure!(numbers.len() > 100, "{ctr}: only {} lines", numbers.len());
        ensure_consecutive(&numbers, ctr)?;
        cri.teardown(pod, std::slice::from_ref(ctr))?;
    }
    ensure!(node.my_sandboxes(&cri)?.is_empty());
    node.ensure_clean("after removing the pods")
}

const SANDBOX_CRASHES: &[&str] = &[
    "run_pod_sandbox.before_monitor",
    "run_pod_sandbox.before_cni",
    "run_pod_sandbox.after_cni",
];

const CONTAINER_CRASHES: &[&str] = &[
    "create_container.after_rootfs",
    "create_container.before_monitor",
    "create_container.after_monitor",
];

/// Check the half-made sandbox or container: either usable or gone. Then remove all.
fn settle_after_crash(node: &Node, cri: &CriDriver, point: &str) -> Result<()> {
    for sandbox in node.my_sandboxes(cri)? {
        ensure!(
            sandbox.state == PodSandboxState::SandboxReady as i32,
            "{point}: sandbox {} listed but not ready",
            sandbox.id
        );
        let config = node.sandbox(&unique_name("probe"))?;
        for ctr in cri.list_containers(Some(&sandbox.id))? {
            ensure!(
                ctr.state == ContainerState::ContainerCreated as i32,
                "{point}: container {} in state {}",
                ctr.id,
                ctr.state
            );
            cri.start_container(&ctr.id)
                .with_context(|| format!("{point}: starting the recovered container"))?;
            cri.wait_running(&ctr.id, Duration::from_secs(10))?;
        }
        let probe = cri
            .create_container(
                &sandbox.id,
                &container_config("probe", node.images.busybox(), &["sleep", "60"]),
                &config,
            )
            .with_context(|| format!("{point}: using the recovered sandbox"))?;
        cri.start_container(&probe)?;
        cri.wait_running(&probe, Duration::from_secs(10))?;
    }
    node.remove_all(cri)?;
    node.ensure_clean(point)
}

/// The server's log of the current run says it aborted at `point`.
fn ensure_crashed_at(node: &Node, point: &str) -> Result<()> {
    let log = node.cri.log();
    ensure!(
        log.contains("CAPSTAN_CRASH_AT: aborting") && log.contains(point),
        "the server did not crash at {point}:\n{log}"
    );
    Ok(())
}

#[test]
fn crash_points_leave_nothing_behind() -> Result<()> {
    let mut node = Node::start()?;
    for &point in SANDBOX_CRASHES {
        node.cri.restart_with_env(&[("CAPSTAN_CRASH_AT", point)])?;
        let config = node.sandbox("crash")?;
        let result = node.driver(None)?.run_sandbox(&config);
        ensure!(
            result.is_err(),
            "{point}: RunPodSandbox succeeded: {result:?}"
        );
        ensure_crashed_at(&node, point)?;
        node.cri.restart()?;
        let cri = node.driver(None)?;
        settle_after_crash(&node, &cri, point)?;
    }
    for &point in CONTAINER_CRASHES {
        node.cri.restart()?;
        let config = node.sandbox("crash")?;
        let pod = node.driver(None)?.run_sandbox(&config)?;
        node.cri.restart_with_env(&[("CAPSTAN_CRASH_AT", point)])?;
        let result = node.driver(None)?.create_container(
            &pod,
            &container_config("half", node.images.busybox(), &["sleep", "60"]),
            &config,
        );
        ensure!(
            result.is_err(),
            "{point}: CreateContainer succeeded: {result:?}"
        );
        ensure_crashed_at(&node, point)?;
        node.cri.restart()?;
        let cri = node.driver(None)?;
        let listed = node.my_sandboxes(&cri)?;
        ensure!(
            listed.iter().any(|s| s.id == pod),
            "{point}: the sandbox itself vanished"
        );
        settle_after_crash(&node, &cri, point)?;
    }
    let cri = node.driver(None)?;
    let (pod, ctr) = cri.start_pod(&node.env, "fresh", node.images.busybox(), &["sleep", "60"])?;
    cri.teardown(&pod, &[ctr])?;
    node.ensure_clean("after the fresh pod")
}

/// Assert `result` failed with gRPC `code` and a message containing `names`.
fn expect_error<T: std::fmt::Debug>(
    result: Result<T>,
    code: &str,
    names: &str,
    what: &str,
) -> Result<()> {
    match result {
        Ok(v) => bail!("{what}: unexpectedly succeeded: {v:?}"),
        Err(e) => {
            let message = format!("{e:#}");
            ensure!(
                message.ends_with(&format!("({code})")),
                "{what}: expected {code}, got: {message}"
            );
            ensure!(
                message.contains(names),
                "{what}: error does not name {names:?}: {message}"
            );
            Ok(())
        }
    }
}

#[test]
fn bad_input_is_refused_cleanly() -> Result<()> {
    let node = Node::start()?;
    let cri = node.driver(None)?;

    let config = node.sandbox("handler")?;
    expect_error(
        node.driver(Some("no-such-handler"))?.run_sandbox(&config),
        "InvalidArgument",
        "no-such-handler",
        "unknown runtime handler",
    )?;
    ensure!(node.my_sandboxes(&cri)?.is_empty());
    node.ensure_clean("unknown handler")?;

    let mut config = node.sandbox("sysctl")?;
    if let Some(linux) = config.linux.as_mut() {
        linux
            .sysctls
            .insert("kernel.panic".to_owned(), "10".to_owned());
    }
    expect_error(
        cri.run_sandbox(&config),
        "InvalidArgument",
        "kernel.panic",
        "non-namespaced sysctl",
    )?;
    ensure!(node.my_sandboxes(&cri)?.is_empty());
    node.ensure_clean("kernel.panic sysctl")?;

    let mut config = node.sandbox("hostnet")?;
    if let Some(linux) = config.linux.as_mut() {
        linux.sysctls.insert(
            "net.ipv4.ip_unprivileged_port_start".to_owned(),
            "0".to_owned(),
        );
        let options = linux
            .security_context
            .get_or_insert_with(Default::default)
            .namespace_options
            .get_or_insert_with(NamespaceOption::default);
        options.network = NamespaceMode::Node as i32;
    }
    expect_error(
        cri.run_sandbox(&config),
        "InvalidArgument",
        "net.ipv4.ip_unprivileged_port_start",
        "net sysctl on a host-network sandbox",
    )?;
    ensure!(node.my_sandboxes(&cri)?.is_empty());
    node.ensure_clean("net sysctl on host network")?;

    // Container-level mistakes, in one good sandbox.
    let config = node.sandbox("bad-containers")?;
    let pod = cri.run_sandbox(&config)?;
    let busybox = node.images.busybox();

    let never = image_ref(node.images.registry(), "capstan-test/never-pulled", "1");
    expect_error(
        cri.create_container(&pod, &container_config("never", &never, &["true"]), &config),
        "NotFound",
        "never-pulled",
        "image never pulled",
    )?;

    let missing = format!("/tmp/{}", unique_name("no-such-dir"));
    let mut c = container_config("nomount", busybox, &["true"]);
    c.mounts.push(Mount {
        container_path: "/data".to_owned(),
        host_path: missing.clone(),
        ..Default::default()
    });
    expect_error(
        cri.create_container(&pod, &c, &config),
        "InvalidArgument",
        &missing,
        "mount of a missing host path",
    )?;

    let mut c = container_config("escape", busybox, &["true"]);
    c.log_path = "../../x.log".to_owned();
    expect_error(
        cri.create_container(&pod, &c, &config),
        "InvalidArgument",
        "../../x.log",
        "log path climbing out",
    )?;
    ensure!(
        !Path::new(&config.log_directory)
            .join("../../x.log")
            .exists(),
        "log file created outside the log directory"
    );
    ensure!(
        cri.list_containers(Some(&pod))?.is_empty(),
        "a refused container is listed"
    );

    // A command that does not exist: refused at create or start, naming the executable.
    let c = container_config("nocmd", busybox, &["/no/such/binary"]);
    match cri.create_container(&pod, &c, &config) {
        Err(e) => ensure!(format!("{e:#}").contains("/no/such/binary"), "{e:#}"),
        Ok(id) => {
            let err = cri
                .start_container(&id)
                .err()
                .context("StartContainer of a missing executable succeeded")?;
            ensure!(format!("{err:#}").contains("/no/such/binary"), "{err:#}");
            let status = cri.container_status(&id)?;
            assert_eq!(status.state, ContainerState::ContainerExited as i32);
            assert_eq!(status.reason, "StartError");
            ensure!(status.message.contains("/no/such/binary"), "{status:?}");
            cri.remove_container(&id)?;
        }
    }
    cri.teardown(&pod, &[])?;
    ensure!(node.my_sandboxes(&cri)?.is_empty());
    node.ensure_clean("after the container cases")
}

#[test]
fn hostile_image_symlinks_stay_in_the_rootfs() -> Result<()> {
    let node = Node::start()?;
    let cri = node.driver(None)?;
    let host = TempRoot::new("failstatic-host")?;

    // /etc/passwd -> a host file defining a user the image does not have.
    let user = unique_short_user();
    let host_passwd = host.join("passwd");
    fs::write(&host_passwd, format!("{user}:x:4242:4242::/:/bin/sh\n"))?;
    let passwd_image = on_busybox(&Layer::new(vec![Entry::symlink(
        "etc/passwd",
        &host_passwd.to_string_lossy(),
    )]))?;
    push_image(
        node.images.registry(),
        "capstan-test/passwd-link",
        "1",
        &passwd_image,
        ManifestKind::Oci,
        false,
    )?;
    let passwd_ref = image_ref(node.images.registry(), "capstan-test/passwd-link", "1");
    cri.pull_image(&passwd_ref)?;

    // /data -> /etc
    let data_image = on_busybox(&Layer::new(vec![Entry::symlink("data", "/etc")]))?;
    push_image(
        node.images.registry(),
        "capstan-test/data-link",
        "1",
        &data_image,
        ManifestKind::Oci,
        false,
    )?;
    let data_ref = image_ref(node.images.registry(), "capstan-test/data-link", "1");
    cri.pull_image(&data_ref)?;

    let config = node.sandbox("hostile")?;
    let pod = cri.run_sandbox(&config)?;

    let mut c = container_config("user", &passwd_ref, &["id"]);
    if let Some(linux) = c.linux.as_mut() {
        linux
            .security_context
            .get_or_insert_with(Default::default)
            .run_as_username = user.clone();
    }
    match cri.create_container(&pod, &c, &config) {
        Ok(id) => bail!(
            "run_as_username {user} resolved through a symlink to the host's {}: container {id} ({:?})",
            host_passwd.display(),
            cri.container_status(&id)?
        ),
        Err(e) => {
            let message = format!("{e:#}");
            ensure!(
                message.contains(&user) || message.contains("passwd"),
                "error names neither the user nor the file: {message}"
            );
        }
    }

    let volume = host.join("volume");
    fs::create_dir(&volume)?;
    let marker = unique_name("marker");
    fs::write(volume.join(&marker), "in the volume\n")?;
    let mut c = container_config("volume", &data_ref, &["sleep", "3600"]);
    c.mounts.push(Mount {
        container_path: "/data".to_owned(),
        host_path: volume.to_string_lossy().into_owned(),
        ..Default::default()
    });
    let ctr = cri.create_container(&pod, &c, &config)?;
    let checked: Result<()> = (|| {
        cri.start_container(&ctr)?;
        cri.wait_running(&ctr, Duration::from_secs(10))?;
        ensure!(
            !Path::new("/etc").join(&marker).exists(),
            "the marker appeared in the host's /etc"
        );
        ensure!(
            !mount_points().iter().any(|m| m == Path::new("/etc")),
            "something is mounted on the host's /etc"
        );
        let out = cri.exec_sync(&ctr, &["cat", &format!("/etc/{marker}")], 10)?;
        ensure!(
            out.exit_code == 0 && out.stdout == b"in the volume\n",
            "the volume is not at /etc in the container: {} {}",
            out.exit_code,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    })();
    let torn = cri.teardown(&pod, std::slice::from_ref(&ctr));
    checked?;
    torn?;
    ensure!(
        fs::read_to_string(volume.join(&marker))? == "in the volume\n",
        "the volume's marker changed"
    );
    node.ensure_clean("after the hostile images")
}

fn unique_short_user() -> String {
    format!("hostonly{}", std::process::id())
}
