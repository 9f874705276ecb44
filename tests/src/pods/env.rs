//! What a test's pods need outside any runtime, as kubelet would provide it: log
//! directories, a unique cgroup parent, a volatile run root, and CRI configs that use them.
//! On drop, anything the runtimes left running or mounted there is killed and removed.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, DnsConfig, ImageSpec, LinuxContainerConfig,
    LinuxPodSandboxConfig, PodSandboxConfig, PodSandboxMetadata,
};

use super::network::PodNetwork;
use crate::capstan::CriConfig;
use crate::cleanup::TempRoot;
use crate::names::unique_name;

/// Where cgroup v1 hierarchies (and the v2 `unified` one) are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Label put on every sandbox this harness makes, valued with the [`PodEnv`]'s id.
pub const ENV_LABEL: &str = "capstan-test/env";

/// Per-test pod state: logs, cgroup parent and Capstan's run root.
pub struct PodEnv {
    dir: TempRoot,
    id: String,
}

impl PodEnv {
    /// A fresh environment with its own directories and cgroup parent name.
    pub fn new() -> Result<Self> {
        let dir = TempRoot::new("pods")?;
        for sub in ["logs", "run"] {
            fs::create_dir(dir.join(sub))?;
        }
        Ok(Self {
            dir,
            id: unique_name("capstan-test"),
        })
    }

    /// Unique id of this environment (also the last component of the cgroup parent).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Cgroup parent every pod of this environment lives under (`/capstan-test-...`).
    pub fn cgroup_parent(&self) -> String {
        format!("/{}", self.id)
    }

    /// Capstan's `runRoot` (volatile per-sandbox state: monitor sockets and pids, namespace pins).
    pub fn run_root(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// Where pod log directories are made.
    pub fn log_root(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// `runtime:` lines for `capstan cri` running pods here on `net` (pass each to
    /// [`CriConfig::line`]).
    pub fn capstan_lines(&self, net: &PodNetwork) -> Vec<String> {
        vec![
            format!(
                "runRoot: {}",
                serde_json::to_string(&self.run_root().to_string_lossy()).unwrap_or_default()
            ),
            net.capstan_yaml(),
            format!("defaultCgroupParent: {}", self.cgroup_parent()),
        ]
    }

    /// `config` with [`Self::capstan_lines`] added.
    pub fn capstan_config(&self, net: &PodNetwork, config: CriConfig) -> CriConfig {
        self.capstan_lines(net)
            .iter()
            .fold(config, |config, line| config.line(line))
    }

    /// A sandbox config as kubelet would send it, its log directory created.
    pub fn sandbox_config(
        &self,
        name: &str,
        namespace: &str,
        uid: &str,
    ) -> Result<PodSandboxConfig> {
        let log_directory = self.log_root().join(format!("{namespace}_{name}_{uid}"));
        fs::create_dir_all(&log_directory)
            .with_context(|| format!("creating {}", log_directory.display()))?;
        let mut hostname = name.to_owned();
        hostname.truncate(63);
        Ok(PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.to_owned(),
                uid: uid.to_owned(),
                namespace: namespace.to_owned(),
                attempt: 0,
            }),
            hostname,
            log_directory: log_directory.to_string_lossy().into_owned(),
            dns_config: Some(DnsConfig {
                servers: vec!["10.96.0.10".to_owned()],
                searches: vec![
                    format!("{namespace}.svc.cluster.local"),
                    "svc.cluster.local".to_owned(),
                    "cluster.local".to_owned(),
                ],
                options: vec!["ndots:5".to_owned()],
            }),
            labels: HashMap::from([(ENV_LABEL.to_owned(), self.id.clone())]),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("{}/pod{uid}", self.cgroup_parent()),
                // As kubelet sends it for a pod without shareProcessNamespace.
                security_context: Some(k8s_cri::v1::LinuxSandboxSecurityContext {
                    namespace_options: Some(k8s_cri::v1::NamespaceOption {
                        pid: k8s_cri::v1::NamespaceMode::Container as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// Kill what runtimes left here: monitors recorded under the run root, then every
    /// process in the cgroup parent; then remove the cgroups.
    fn kill_leftovers(&self) {
        for pid in monitor_pids(&self.run_root()) {
            kill_if(pid, |cmdline| cmdline.contains("shim"));
        }
        let dirs = cgroup_dirs(&self.id);
        if dirs.is_empty() {
            return;
        }
        for dir in &dirs {
            for pid in fs::read_to_string(dir.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse::<i32>().ok())
            {
                kill_if(pid, |_| true);
            }
        }
        // Killed processes leave their cgroups a moment after the signal.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut left = 0;
            for dir in &dirs {
                if dir.exists() && fs::remove_dir(dir).is_err() {
                    left += 1;
                }
            }
            if left == 0 || Instant::now() > deadline {
                if left > 0 {
                    eprintln!(
                        "pods: {left} cgroups under /{} could not be removed",
                        self.id
                    );
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PodEnv {
    fn drop(&mut self) {
        self.kill_leftovers();
    }
}

/// A container config as kubelet would send it: log at `<name>/0.log` in the pod's log directory.
pub fn container_config(name: &str, image: &str, command: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.to_owned(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.to_owned(),
            user_specified_image: image.to_owned(),
            ..Default::default()
        }),
        command: command.iter().map(|&c| c.to_owned()).collect(),
        log_path: format!("{name}/0.log"),
        linux: Some(LinuxContainerConfig::default()),
        ..Default::default()
    }
}

/// The pids in `<run_root>/*/monitor.pid`.
pub fn monitor_pids(run_root: &Path) -> Vec<i32> {
    fs::read_dir(run_root)
        .into_iter()
        .flatten()
        .filter_map(|entry| fs::read_to_string(entry.ok()?.path().join("monitor.pid")).ok())
        .filter_map(|pid| pid.trim().parse().ok())
        .collect()
}

/// Every directory named `name` directly under a cgroup hierarchy root, and the cgroups
/// below it, deepest first (the order they can be removed in).
fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for hierarchy in fs::read_dir(CGROUP_ROOT).into_iter().flatten().flatten() {
        // cpu and cpuacct are symlinks to their shared mount.
        if hierarchy.file_type().is_ok_and(|t| t.is_dir()) {
            let top = hierarchy.path().join(name);
            if top.is_dir() {
                collect_cgroups(&top, &mut found);
            }
        }
    }
    found
}

fn collect_cgroups(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_cgroups(&entry.path(), out);
        }
    }
    out.push(dir.to_path_buf());
}

/// SIGKILL `pid` if its command line passes `check` (pids are reused; a stale record must
/// not kill an unrelated process).
fn kill_if(pid: i32, check: impl Fn(&str) -> bool) {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    if pid > 1 && !cmdline.is_empty() && check(&cmdline) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}
