//! `capstan agent` in standalone mode as the tests run it: the real binary with its own
//! manifest directory, state, local API socket and pod environment, on the built-in
//! runtime or on containerd, plus helpers that read pods back through `capstan pods`.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::apiserver::ApiServer;
use crate::binaries::{capstan_bin, require_root};
use crate::capstan::CriConfig;
use crate::cleanup::TempRoot;
use crate::containerd::Containerd;
use crate::names::unique_name;
use crate::pods::{PodEnv, PodImages, PodNetwork};
use crate::registry::Registry;

/// How long the agent may take to serve its local API.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Which CRI runtime the agent drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// The built-in runtime, served in-process.
    Builtin,
    /// containerd + runc, started by the fixture.
    Containerd,
}

/// Appends `lines` indented as the body of the section just written.
fn section(yaml: &mut String, lines: &[String]) {
    for line in lines {
        yaml.push_str("  ");
        yaml.push_str(line);
        yaml.push('\n');
    }
}

/// A running agent; killed on drop, then every pod it made is removed with its env.
pub struct Agent {
    /// Registry serving the busybox image pods run.
    pub images: PodImages,
    /// The pods' CNI network.
    pub net: PodNetwork,
    /// Logs, cgroup parent and run root of this agent's pods.
    pub env: PodEnv,
    dir: TempRoot,
    node_name: String,
    containerd: Option<Containerd>,
    child: Option<Child>,
    kubelet_lines: Vec<String>,
    /// `proxy:` and `dns:` config lines; both services are off unless a test turns them on
    /// (parallel agents would contend for the same ports and addresses).
    services: ServiceLines,
    /// `--kubeconfig` when the agent runs in cluster mode.
    kubeconfig: Option<PathBuf>,
    /// Registries the runtime may pull from, with their TLS settings.
    registries: CriConfig,
}

/// The `proxy:` and `dns:` sections of an agent's config, one YAML key per line.
#[derive(Debug, Clone)]
pub struct ServiceLines {
    /// `proxy:` lines.
    pub proxy: Vec<String>,
    /// `dns:` lines.
    pub dns: Vec<String>,
}

impl Default for ServiceLines {
    fn default() -> Self {
        ServiceLines {
            proxy: vec!["enabled: false".to_owned()],
            dns: vec!["enabled: false".to_owned()],
        }
    }
}

impl Agent {
    /// Start an agent on `runtime` with no manifests.
    pub fn start(runtime: Runtime) -> Result<Self> {
        Self::start_with(runtime, &[])
    }

    /// [`Self::start`] with extra `kubelet:` config lines (YAML, one key each).
    pub fn start_with(runtime: Runtime, kubelet_lines: &[&str]) -> Result<Self> {
        let agent = Self::prepare(runtime, kubelet_lines, None)?;
        agent.finish_start()
    }

    /// Join the cluster of `server` with a fresh bootstrap token (`capstan join`), then run
    /// the agent in cluster mode with the kubeconfig the join wrote.
    pub fn join(runtime: Runtime, server: &ApiServer, kubelet_lines: &[&str]) -> Result<Self> {
        Self::prepare(runtime, kubelet_lines, None)?.join_cluster(server)
    }

    /// [`Self::join`] with the runtime also pulling from `registry` (plain HTTP or its CA).
    pub fn join_trusting(
        runtime: Runtime,
        server: &ApiServer,
        kubelet_lines: &[&str],
        registry: &Registry,
    ) -> Result<Self> {
        Self::prepare(runtime, kubelet_lines, Some(registry))?.join_cluster(server)
    }

    /// [`Self::join`] with the service proxy and/or DNS server configured by `services`.
    pub fn join_with_services(
        runtime: Runtime,
        server: &ApiServer,
        kubelet_lines: &[&str],
        services: ServiceLines,
    ) -> Result<Self> {
        let mut agent = Self::prepare(runtime, kubelet_lines, None)?;
        agent.services = services;
        agent.join_cluster(server)
    }

    fn join_cluster(mut self, server: &ApiServer) -> Result<Self> {
        let token = server.create_bootstrap_token(None)?;
        let kubeconfig = self.dir.join("kubeconfig");
        let out = Command::new(capstan_bin()?)
            .args(["join", "--server", &server.url(), "--token", &token])
            .args(["--discovery-token-ca-cert-hash", &server.ca_cert_hash()])
            .args(["--node-name", &self.node_name])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--pki-dir")
            .arg(self.dir.join("pki"))
            .output()
            .context("running capstan join")?;
        ensure!(
            out.status.success(),
            "capstan join failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.kubeconfig = Some(kubeconfig);
        self.finish_start()
    }

    fn finish_start(mut self) -> Result<Self> {
        self.write_config()?;
        self.spawn()?;
        Ok(self)
    }

    fn prepare(
        runtime: Runtime,
        kubelet_lines: &[&str],
        extra_registry: Option<&Registry>,
    ) -> Result<Self> {
        require_root()?;
        let images = PodImages::start()?;
        let mut registries = CriConfig::default().registry(images.registry());
        let mut hosts = vec![images.registry().host()];
        if let Some(extra) = extra_registry {
            registries = registries.registry(extra);
            hosts.push(extra.host());
        }
        let net = PodNetwork::reference()?;
        let env = PodEnv::new()?;
        let dir = TempRoot::new("agent")?;
        fs::create_dir_all(dir.join("manifests"))?;
        let containerd = match runtime {
            Runtime::Builtin => None,
            Runtime::Containerd => Some(Containerd::start_pods(&hosts, &net, images.pause())?),
        };
        Ok(Self {
            images,
            net,
            env,
            dir,
            node_name: unique_name("node"),
            containerd,
            child: None,
            kubelet_lines: kubelet_lines.iter().map(|l| (*l).to_owned()).collect(),
            services: ServiceLines::default(),
            kubeconfig: None,
            registries,
        })
    }

    fn write_config(&self) -> Result<()> {
        let runtime = self.env.capstan_config(&self.net, self.registries.clone());
        let mut yaml = runtime.render(&self.dir.join("runtime"), &self.dir.join("cri.sock"));
        yaml.push_str("kubelet:\n");
        let endpoint = self.containerd.as_ref().map(Containerd::endpoint);
        let mut lines = vec![
            format!("staticPodPath: {}", self.manifest_dir().display()),
            format!("rootDir: {}", self.dir.join("kubelet").display()),
            format!("podLogsDir: {}", self.env.log_root().display()),
            format!("nodeName: {}", self.node_name),
            format!("cgroupRoot: {}", self.env.cgroup_parent()),
            format!("localApiSocket: {}", self.socket().display()),
        ];
        if let Some(endpoint) = endpoint {
            lines.push(format!("containerRuntimeEndpoint: {endpoint}"));
        }
        lines.extend(self.kubelet_lines.iter().cloned());
        section(&mut yaml, &lines);
        yaml.push_str("proxy:\n");
        section(&mut yaml, &self.services.proxy);
        yaml.push_str("dns:\n");
        section(&mut yaml, &self.services.dns);
        fs::write(self.config_path(), yaml)?;
        Ok(())
    }

    fn spawn(&mut self) -> Result<()> {
        let _ = fs::remove_file(self.socket());
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut command = Command::new(capstan_bin()?);
        command.arg("agent").arg("--config").arg(self.config_path());
        if let Some(kubeconfig) = &self.kubeconfig {
            command.arg("--kubeconfig").arg(kubeconfig);
        }
        let child = command
            .env("CAPSTAN_LOG", "info,agent=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting capstan agent")?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while UnixStream::connect(self.socket()).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("capstan agent exited with {status}:\n{}", self.log());
            }
            if Instant::now() > deadline {
                bail!(
                    "capstan agent did not serve within {START_TIMEOUT:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// SIGKILL the agent, as a crash would (its pods keep running).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM the agent and wait for it to exit; how long it took.
    pub fn stop(&mut self, timeout: Duration) -> Result<Duration> {
        let mut child = self.child.take().context("agent not running")?;
        let started = Instant::now();
        let pid = i32::try_from(child.id())?;
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            bail!("SIGTERM to the agent: {}", std::io::Error::last_os_error());
        }
        while started.elapsed() < timeout {
            if let Some(status) = child.try_wait()? {
                ensure!(
                    status.success(),
                    "agent exited with {status}:\n{}",
                    self.log()
                );
                return Ok(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        bail!(
            "agent still running {timeout:?} after SIGTERM:\n{}",
            tail(&self.log(), 20)
        )
    }

    /// Start the agent again on the same state.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }

    /// Start the agent after [`Self::stop`] or [`Self::kill`].
    pub fn start_again(&mut self) -> Result<()> {
        self.spawn()
    }

    /// The agent's process ID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The node name pods are suffixed with.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The local API socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }

    /// The static pod directory.
    pub fn manifest_dir(&self) -> PathBuf {
        self.dir.join("manifests")
    }

    /// The kubelet root (pods/<uid>/volumes, ...).
    pub fn kubelet_root(&self) -> PathBuf {
        self.dir.join("kubelet")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("agent.log")
    }

    /// The agent's config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }

    /// `capstan proxy --cleanup` / `capstan dns --cleanup` with this agent's config, for the
    /// services it runs: what a node's uninstall does.
    pub fn clean_up_node_services(&self) -> Result<()> {
        let mut failures = Vec::new();
        for (command, lines) in [("proxy", &self.services.proxy), ("dns", &self.services.dns)] {
            if lines.iter().any(|line| line == "enabled: false") {
                continue;
            }
            let out = Command::new(capstan_bin()?)
                .arg(command)
                .arg("--cleanup")
                .arg("--config")
                .arg(self.config_path())
                .output()
                .with_context(|| format!("running capstan {command} --cleanup"))?;
            if !out.status.success() {
                failures.push(format!(
                    "capstan {command} --cleanup: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        ensure!(failures.is_empty(), "{}", failures.join("; "));
        Ok(())
    }

    /// Everything the agent logged.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Write a manifest atomically (temp file + rename, as config management does).
    pub fn write_manifest(&self, file: &str, yaml: &str) -> Result<()> {
        let temp = self.manifest_dir().join(format!(".{file}.tmp"));
        let mut f = File::create(&temp)?;
        f.write_all(yaml.as_bytes())?;
        f.sync_all()?;
        fs::rename(&temp, self.manifest_dir().join(file))?;
        Ok(())
    }

    /// Remove a manifest.
    pub fn remove_manifest(&self, file: &str) -> Result<()> {
        fs::remove_file(self.manifest_dir().join(file)).context("removing manifest")
    }

    /// Run `capstan <args>` against this agent.
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        Command::new(capstan_bin()?)
            .args(args)
            .env("CAPSTAN_AGENT_SOCKET", self.socket())
            .output()
            .context("running capstan")
    }

    /// `capstan pods -A -o json`: the agent's pods (items) and manifest errors.
    pub fn pods(&self) -> Result<(Vec<Value>, String)> {
        let out = self.cli(&["pods", "-A", "-o", "json"])?;
        if !out.status.success() {
            bail!(
                "capstan pods failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let list: Value = serde_json::from_slice(&out.stdout).context("capstan pods JSON")?;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        Ok((items, String::from_utf8_lossy(&out.stderr).into_owned()))
    }

    /// The pod whose manifest named it `name` (the agent suffixes the node name).
    pub fn pod(&self, name: &str) -> Result<Option<Value>> {
        let full = format!("{name}-{}", self.node_name);
        let (pods, _) = self.pods()?;
        // The newest (not terminating) one wins while a replaced pod goes away.
        let mut matching: Vec<Value> = pods
            .into_iter()
            .filter(|p| p["metadata"]["name"] == full.as_str())
            .collect();
        matching.sort_by_key(|p| p["metadata"]["deletionTimestamp"].is_string());
        Ok(matching.into_iter().next())
    }

    /// Wait until `check` accepts the pod `name`; the last pod seen is in the error.
    pub fn wait_pod(
        &self,
        name: &str,
        timeout: Duration,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(pod) = self.pod(name)? {
                if check(&pod) {
                    return Ok(pod);
                }
                last = Some(pod);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "pod {name} not {what} within {timeout:?}; last seen:\n{}\nagent log tail:\n{}",
            serde_json::to_string_pretty(&last).unwrap_or_default(),
            tail(&self.log(), 40)
        )
    }

    /// Wait until no pod named `name` is left.
    pub fn wait_gone(&self, name: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.pod(name)?.is_none() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "pod {name} still there after {timeout:?}:\n{}",
            tail(&self.log(), 40)
        )
    }

    /// A watch on the agent's pods: newline-delimited watch events as JSON.
    pub fn watch(&self) -> Result<PodWatch> {
        let mut stream = UnixStream::connect(self.socket())?;
        // HTTP/1.0: the body ends with the connection, no chunked framing to undo.
        stream.write_all(b"GET /v1/pods?watch=true HTTP/1.0\r\nHost: agent\r\n\r\n")?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                bail!("watch closed before its body");
            }
            if line == "\r\n" {
                break;
            }
        }
        Ok(PodWatch { reader })
    }
}

/// A pod watch stream (see [`Agent::watch`]).
pub struct PodWatch {
    reader: BufReader<UnixStream>,
}

impl PodWatch {
    /// The next event, or an error when the stream ends.
    pub fn next_event(&mut self) -> Result<Value> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                bail!("watch stream ended");
            }
            if !line.trim().is_empty() {
                return serde_json::from_str(&line).context("watch event JSON");
            }
        }
    }
}

/// A plain HTTP/1.0 GET of a pod's server (raw socket, so nothing but the pod answers):
/// the whole response, headers included.
pub fn http_get(ip: &str, port: u16, path: &str) -> Result<String> {
    let mut stream = std::net::TcpStream::connect((ip, port))
        .with_context(|| format!("connecting {ip}:{port}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n")?;
    let mut body = String::new();
    std::io::Read::read_to_string(&mut stream, &mut body)?;
    Ok(body)
}

/// Whether a pod's Ready condition is True.
pub fn is_ready(pod: &Value) -> bool {
    condition(pod, "Ready") == Some("True")
}

/// A pod condition's status.
pub fn condition<'a>(pod: &'a Value, kind: &str) -> Option<&'a str> {
    let conditions = pod["status"]["conditions"].as_array()?;
    let found = conditions.iter().find(|c| c["type"] == kind)?;
    found["status"].as_str()
}

/// The status of container `name` (app or init).
pub fn container_status<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    ["containerStatuses", "initContainerStatuses"]
        .iter()
        .filter_map(|key| pod["status"][key].as_array())
        .flatten()
        .find(|s| s["name"] == name)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        // Tables and addresses outlive the agent by design; a test must not leave them.
        if let Err(error) = self.clean_up_node_services() {
            eprintln!("cleaning up the agent's node services: {error:#}");
        }
    }
}

/// A pod's manifest with the busybox image at `image`, from a template where `IMAGE`
/// stands for it.
pub fn manifest(template: &str, image: &str) -> String {
    template.replace("IMAGE", image)
}
