//! `capstan cri` as the tests run it: the real binary, as a child process with its own root,
//! socket and config, plus CLI and gRPC clients pointed at it.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::binaries::capstan_bin;
use crate::cleanup::TempRoot;
use crate::registry::Registry;

/// How long a start may take before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The `runtime:` section of a test's config file.
#[derive(Debug, Default, Clone)]
pub struct CriConfig {
    registries: Vec<(String, String)>,
    lines: Vec<String>,
}

impl CriConfig {
    /// Settings that let the runtime reach `registry` (plain HTTP, or its TLS CA).
    pub fn registry(mut self, registry: &Registry) -> Self {
        let settings = match registry.ca_cert_path() {
            Some(ca) => format!("caFile: {}", ca.display()),
            None => "insecure: true".to_owned(),
        };
        self.registries.push((registry.host(), settings));
        self
    }

    /// Plain-HTTP access to any host:port (a fault proxy, say).
    pub fn insecure(mut self, host: &str) -> Self {
        self.registries
            .push((host.to_owned(), "insecure: true".to_owned()));
        self
    }

    /// Make `mirror` a mirror of the registry at `upstream` (host:port).
    pub fn mirror(mut self, upstream: &str, mirror: &Registry) -> Self {
        let entry = self
            .registries
            .iter_mut()
            .find(|(host, _)| host == upstream);
        let line = format!("mirrors: [\"{}\"]", mirror.host());
        match entry {
            Some((_, settings)) => {
                settings.push('\n');
                settings.push_str(&line);
            }
            None => self.registries.push((upstream.to_owned(), line)),
        }
        self
    }

    /// Any other `runtime:` key, as a YAML line (e.g. `createDeviceNodes: true`).
    pub fn line(mut self, yaml: &str) -> Self {
        self.lines.push(yaml.to_owned());
        self
    }

    /// The config file text for a runtime rooted at `root` serving `socket`.
    pub fn render(&self, root: &Path, socket: &Path) -> String {
        let mut yaml = format!(
            "runtime:\n  root: {}\n  socket: {}\n",
            root.display(),
            socket.display()
        );
        for line in &self.lines {
            for part in line.lines() {
                let _ = writeln!(yaml, "  {part}");
            }
        }
        if !self.registries.is_empty() {
            yaml.push_str("  registries:\n");
            for (host, settings) in &self.registries {
                let _ = writeln!(yaml, "    \"{host}\":");
                for part in settings.lines() {
                    let _ = writeln!(yaml, "      {part}");
                }
            }
        }
        yaml
    }
}

/// A running `capstan cri`; killed on drop, its state removed with its temp root.
pub struct CapstanCri {
    dir: TempRoot,
    child: Option<Child>,
    starts: usize,
}

impl CapstanCri {
    /// Write the config and start the runtime, waiting until its socket accepts connections.
    pub fn start(config: &CriConfig) -> Result<Self> {
        let dir = TempRoot::new("cri")?;
        let mut cri = Self {
            dir,
            child: None,
            starts: 0,
        };
        let yaml = config.render(&cri.root(), &cri.socket());
        fs::write(cri.config_path(), yaml)?;
        cri.spawn(&[], &[])?;
        Ok(cri)
    }

    /// Start again on the same state (after `kill` or `stop`).
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn(&[], &[])
    }

    /// Start with extra command-line flags (e.g. `--log-format json`).
    pub fn restart_with(&mut self, flags: &[&str]) -> Result<()> {
        self.stop();
        self.spawn(flags, &[])
    }

    /// Start again with extra environment variables (e.g. `CAPSTAN_CRASH_AT`).
    pub fn restart_with_env(&mut self, env: &[(&str, &str)]) -> Result<()> {
        self.stop();
        self.spawn(&[], env)
    }

    fn spawn(&mut self, flags: &[&str], env: &[(&str, &str)]) -> Result<()> {
        self.starts += 1;
        let log = File::create(self.log_path())?;
        let child = Command::new(capstan_bin()?)
            .args(flags)
            .arg("cri")
            .arg("--config")
            .arg(self.config_path())
            .env("CAPSTAN_LOG", "info,cri_shim=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting capstan cri")?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while UnixStream::connect(self.socket()).is_err() {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("capstan cri exited with {status}:\n{}", self.log());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "capstan cri did not listen within {START_TIMEOUT:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// SIGKILL the runtime, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM the runtime and wait for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The runtime's state root.
    pub fn root(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// The image store directory.
    pub fn image_root(&self) -> PathBuf {
        self.root().join("images")
    }

    /// The CRI socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("cri.sock")
    }

    /// `unix://` endpoint of the socket.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// The config file the runtime was started with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }

    /// A scratch directory owned by this fixture (for archives, auth files, ...).
    pub fn scratch(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(format!("cri-{}.log", self.starts))
    }

    /// The current run's log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Run `capstan <args>` against this runtime.
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        Command::new(capstan_bin()?)
            .args(args)
            .env("CONTAINER_RUNTIME_ENDPOINT", self.endpoint())
            .output()
            .context("running capstan")
    }

    /// Run `capstan <args>` and return stdout, failing with stderr if it did not succeed.
    pub fn cli_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.cli(args)?;
        if !out.status.success() {
            bail!(
                "capstan {} failed ({}):\n{}\n--- runtime log ---\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Run `capstan <args>` expecting failure; returns stderr.
    pub fn cli_err(&self, args: &[&str]) -> Result<String> {
        let out = self.cli(args)?;
        if out.status.success() {
            bail!(
                "capstan {} unexpectedly succeeded:\n{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// A gRPC channel to the runtime (inside a tokio runtime).
    pub async fn channel(&self) -> Result<Channel> {
        let socket = self.socket();
        Ok(Endpoint::try_from("http://localhost")?
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    tokio::net::UnixStream::connect(socket)
                        .await
                        .map(TokioIo::new)
                }
            }))
            .await?)
    }

    /// CRI ImageService client.
    pub async fn images(&self) -> Result<ImageServiceClient<Channel>> {
        Ok(ImageServiceClient::new(self.channel().await?))
    }

    /// CRI RuntimeService client.
    pub async fn runtime(&self) -> Result<RuntimeServiceClient<Channel>> {
        Ok(RuntimeServiceClient::new(self.channel().await?))
    }

    /// Files left in the store's scratch areas (ingest, unpacking, tmp): empty when the
    /// store is consistent and idle.
    pub fn scratch_leftovers(&self) -> Vec<PathBuf> {
        ["ingest", "unpacking", "tmp"]
            .iter()
            .flat_map(|d| {
                fs::read_dir(self.image_root().join(d))
                    .into_iter()
                    .flatten()
            })
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect()
    }

    /// Names in a store directory (`blobs/sha256`, `snapshots`, `images`).
    pub fn store_entries(&self, dir: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.image_root().join(dir))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }
}

impl Drop for CapstanCri {
    fn drop(&mut self) {
        self.kill();
    }
}
