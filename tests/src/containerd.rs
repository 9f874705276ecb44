//! Debian's containerd as a peer: a private instance with its own root, state and socket,
//! driven with `ctr`, or over CRI (images only, or pods with [`Containerd::start_pods`]).

use std::fs::{self, File};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cleanup::TempRoot;
use crate::pods::{procs, PodNetwork};

/// The containerd daemon binary.
pub const CONTAINERD_BIN: &str = "/usr/bin/containerd";

/// A running private containerd; killed and its directories removed on drop.
pub struct Containerd {
    dir: TempRoot,
    child: Option<Child>,
    /// Started with [`Containerd::start_pods`]: shims may outlive the daemon.
    pods: bool,
}

impl Containerd {
    /// Start containerd without its CRI plugin (a content store and snapshotter for `ctr`).
    pub fn start() -> Result<Self> {
        Self::spawn("disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n")
    }

    /// Start containerd with its CRI plugin, reaching `plain_http` registries (host:port)
    /// over plain HTTP.
    pub fn start_cri(plain_http: &[String]) -> Result<Self> {
        let mut plugins = String::from(
            "[plugins.\"io.containerd.grpc.v1.cri\"]\n  restrict_oom_score_adj = true\n",
        );
        for host in plain_http {
            plugins.push_str(&format!(
                "[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"{host}\"]\n  endpoint = [\"http://{host}\"]\n"
            ));
        }
        Self::spawn(&plugins)
    }

    /// Start containerd with its CRI plugin set up to run pods: CNI from `cni`'s conf dir
    /// and its first plugin dir, `sandbox_image` as the pause image, and `plain_http`
    /// registries (host:port) reached over plain HTTP. Debian's containerd 1.6 with runc
    /// fails to start containers here unless `restrict_oom_score_adj` is set.
    pub fn start_pods(
        plain_http: &[String],
        cni: &PodNetwork,
        sandbox_image: &str,
    ) -> Result<Self> {
        let bin_dir = cni
            .bin_dirs()
            .first()
            .context("the pod network has no plugin directory")?;
        let mut plugins = format!(
            "[plugins.\"io.containerd.grpc.v1.cri\"]\n  restrict_oom_score_adj = true\n  sandbox_image = {image}\n\
             [plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = {bin}\n  conf_dir = {conf}\n  max_conf_num = 1\n",
            image = toml_string(sandbox_image),
            bin = toml_string(&bin_dir.to_string_lossy()),
            conf = toml_string(&cni.conf_dir().to_string_lossy()),
        );
        for host in plain_http {
            plugins.push_str(&format!(
                "[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"{host}\"]\n  endpoint = [\"http://{host}\"]\n"
            ));
        }
        let mut containerd = Self::spawn(&plugins)?;
        containerd.pods = true;
        Ok(containerd)
    }

    /// Pid of the containerd daemon.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Pids of the shims serving this instance's containers (they name its socket).
    pub fn shim_pids(&self) -> Vec<i32> {
        let socket = self.socket().to_string_lossy().into_owned();
        procs::find(|cmdline| {
            cmdline.contains("containerd-shim") && cmdline.split(' ').any(|arg| arg == socket)
        })
    }

    fn spawn(plugins: &str) -> Result<Self> {
        if !std::path::Path::new(CONTAINERD_BIN).is_file() {
            bail!("{CONTAINERD_BIN} not found: apt-get install containerd");
        }
        let dir = TempRoot::new("containerd")?;
        let config = format!(
            // `plugins` may hold top-level keys, so it comes before the first table.
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n{plugins}\
             [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n[debug]\n  address = \"{debug}\"\n",
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            sock = dir.join("containerd.sock").display(),
            debug = dir.join("debug.sock").display(),
        );
        fs::write(dir.join("config.toml"), config)?;
        let log = File::create(dir.join("containerd.log"))?;
        let child = Command::new(CONTAINERD_BIN)
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting containerd")?;
        let mut containerd = Self {
            dir,
            child: Some(child),
            pods: false,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(containerd.socket()).is_err() {
            if let Some(status) = containerd
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("containerd exited with {status}: {}", containerd.log());
            }
            if Instant::now() > deadline {
                bail!("containerd did not start: {}", containerd.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(containerd)
    }

    /// `unix://` endpoint of the gRPC socket (CRI clients connect here).
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// The gRPC socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// The daemon's log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// Run `ctr --address SOCKET <args>`.
    pub fn ctr(&self, args: &[&str]) -> Result<Output> {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(args)
            .output()
            .context("running ctr")?;
        if !out.status.success() {
            bail!(
                "ctr {} failed: {}\n{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
        }
        Ok(out)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Shims detach from the daemon; pods a test failed to remove keep theirs alive.
        let shims = if self.pods {
            self.shim_pids()
        } else {
            Vec::new()
        };
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in shims {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        // Snapshots may still be mounted if a test failed midway.
        let _ = Command::new("umount")
            .arg("-R")
            .arg("-l")
            .arg(self.dir.join("root"))
            .stderr(Stdio::null())
            .status();
    }
}

/// `value` as a TOML basic string.
fn toml_string(value: &str) -> String {
    // JSON string escapes are valid TOML basic-string escapes.
    serde_json::to_string(value).unwrap_or_default()
}
