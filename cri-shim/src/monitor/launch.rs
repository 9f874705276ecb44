//! Starting a sandbox monitor (server side) and cleaning up after one.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::mount::{umount2, MntFlags};
use tokio::io::{AsyncBufReadExt, BufReader};

pub use super::config::{NamespaceChoice, PidChoice, SandboxMonitorConfig};
use super::config::{CONFIG_FILE, LOG_FILE, NS_DIR, PID_FILE, SOCKET_FILE};
use super::shim::{ERROR_PREFIX, READY_LINE};
use super::MonitorError;

/// How long a monitor may take to set up its namespaces and report.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`kill`] waits for a killed monitor to disappear.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// A monitor that reported ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchedMonitor {
    /// Its PID (host PID namespace).
    pub pid: i32,
    /// The sandbox's run directory.
    pub run_dir: PathBuf,
    /// Its socket.
    pub socket: PathBuf,
}

/// Start `capstan shim start` for `config` and wait until the monitor is ready. On failure
/// nothing the launch made is left (a run directory it created is removed).
pub async fn launch(config: SandboxMonitorConfig) -> Result<LaunchedMonitor, MonitorError> {
    config.validate().map_err(MonitorError::InvalidConfig)?;
    let run_dir = config.run_dir.clone();
    let existed = run_dir.exists();
    let result = spawn_and_wait(&config).await;
    if result.is_err() {
        release(&run_dir);
        for file in [CONFIG_FILE, LOG_FILE] {
            let _ = std::fs::remove_file(run_dir.join(file));
        }
        if !existed {
            let _ = std::fs::remove_dir(&run_dir);
        }
    }
    result
}

async fn spawn_and_wait(config: &SandboxMonitorConfig) -> Result<LaunchedMonitor, MonitorError> {
    let run_dir = &config.run_dir;
    std::fs::create_dir_all(run_dir).map_err(|e| MonitorError::io("creating", run_dir, e))?;
    let config_path = run_dir.join(CONFIG_FILE);
    let json = serde_json::to_vec_pretty(config)
        .map_err(|e| MonitorError::InvalidConfig(e.to_string()))?;
    std::fs::write(&config_path, json).map_err(|e| MonitorError::io("writing", &config_path, e))?;
    let log_path = run_dir.join(LOG_FILE);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| MonitorError::io("opening", &log_path, e))?;
    let mut child = tokio::process::Command::new(&config.shim_binary)
        .args(["shim", "start", "--config"])
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| MonitorError::io("running", &config.shim_binary, e))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| MonitorError::Launch("no stdout pipe".to_owned()))?;
    let mut line = String::new();
    let read =
        tokio::time::timeout(READY_TIMEOUT, BufReader::new(stdout).read_line(&mut line)).await;
    if read.is_err() {
        let _ = child.kill().await;
        return Err(MonitorError::Timeout(
            "waiting for the monitor to report ready",
        ));
    }
    // The setup process exits right after reporting; the monitor is its orphan.
    let status = child.wait().await.map_err(MonitorError::Connection)?;
    let line = line.trim_end();
    if line == READY_LINE {
        let pid = read_pid(run_dir)
            .ok_or_else(|| MonitorError::Launch(format!("reported ready without {PID_FILE}")))?;
        return Ok(LaunchedMonitor {
            pid,
            run_dir: run_dir.clone(),
            socket: run_dir.join(SOCKET_FILE),
        });
    }
    if let Some(message) = line.strip_prefix(ERROR_PREFIX) {
        return Err(MonitorError::Launch(message.to_owned()));
    }
    let log_text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let tail: String = log_text
        .lines()
        .rev()
        .take(5)
        .collect::<Vec<_>>()
        .join(" | ");
    Err(MonitorError::Launch(format!(
        "the monitor exited ({status}) without reporting: {tail}"
    )))
}

fn read_pid(run_dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(run_dir.join(PID_FILE)).ok()?;
    text.trim().parse().ok().filter(|&pid| pid > 0)
}

/// The PID of the sandbox's monitor while it runs: `monitor.pid` names a live process
/// that is this run directory's `capstan shim start` (not a reused PID).
pub fn monitor_pid(run_dir: &Path) -> Option<i32> {
    let pid = read_pid(run_dir)?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let config = run_dir.join(CONFIG_FILE);
    let ours = cmdline
        .split(|&b| b == 0)
        .any(|arg| arg == config.as_os_str().as_encoded_bytes());
    ours.then_some(pid)
}

/// SIGKILL the monitor named by the run directory's pid file (one that does not answer)
/// and wait briefly until it is gone. Returns whether a monitor was killed.
pub fn kill(run_dir: &Path) -> bool {
    let Some(pid) = monitor_pid(run_dir) else {
        return false;
    };
    let pid = nix::unistd::Pid::from_raw(pid);
    if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).is_err() {
        return false;
    }
    let deadline = std::time::Instant::now() + KILL_WAIT;
    while monitor_pid(run_dir).is_some() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Remove what a monitor made in the run directory: namespace pins (unmounted), socket,
/// pid file. Errors are ignored: this runs on failure paths.
pub(crate) fn release(run_dir: &Path) {
    let ns_dir = run_dir.join(NS_DIR);
    for kind in ["net", "ipc", "uts"] {
        let pin = ns_dir.join(kind);
        let _ = umount2(&pin, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&pin);
    }
    let _ = std::fs::remove_dir(&ns_dir);
    for file in [SOCKET_FILE, PID_FILE] {
        let _ = std::fs::remove_file(run_dir.join(file));
    }
}

/// Tear down a sandbox's run directory: unmount everything mounted at or below it
/// (namespace pins, the pod's /dev/shm), then remove it. Idempotent; does not need the
/// monitor (kill it first if it still runs).
pub fn cleanup(run_dir: &Path) -> Result<(), MonitorError> {
    if !run_dir.exists() {
        return Ok(());
    }
    let root =
        std::fs::canonicalize(run_dir).map_err(|e| MonitorError::io("resolving", run_dir, e))?;
    let mut mounts = mounts_below(&root);
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for mount in &mounts {
        let _ = umount2(mount, MntFlags::MNT_DETACH);
    }
    if let Some(stuck) = mounts_below(&root).first() {
        return Err(MonitorError::io(
            "unmounting",
            stuck,
            std::io::Error::other("still mounted"),
        ));
    }
    match std::fs::remove_dir_all(&root) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(MonitorError::io("removing", &root, e)),
    }
}

/// Mount points at or below `root` in this process's mount table.
fn mounts_below(root: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_octal(field)))
        .filter(|path| path.starts_with(root))
        .collect()
}

/// Undo mountinfo's `\NNN` escapes (space, tab, newline, backslash).
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match escape {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_octal(r"/run/a\040b"), "/run/a b");
        assert_eq!(unescape_octal(r"/plain"), "/plain");
        assert_eq!(unescape_octal(r"/x\09"), r"/x\09");
    }

    #[test]
    fn cleanup_is_idempotent_and_monitor_pid_needs_a_live_monitor() {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().join("sandbox");
        std::fs::create_dir_all(run_dir.join("ns")).unwrap();
        // Our own PID is alive but is not this run dir's monitor.
        std::fs::write(run_dir.join(PID_FILE), std::process::id().to_string()).unwrap();
        assert_eq!(monitor_pid(&run_dir), None);
        assert!(!kill(&run_dir));
        cleanup(&run_dir).unwrap();
        assert!(!run_dir.exists());
        cleanup(&run_dir).unwrap();
    }
}
