//! The monitor's wire protocol (one JSON object per line over `monitor.sock`) and the
//! records it leaves in each container's state directory.
//!
//! A client sends one [`Request`] per line and reads one [`Response`] line per request.
//! After `subscribe` the connection only carries [`MonitorEvent`] lines.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// File (in a container's state dir) recording that its process was started.
pub const STARTED_FILE: &str = "started.json";
/// File (in a container's state dir) recording how its process ended.
pub const EXIT_FILE: &str = "exit.json";
/// Longest request line the monitor accepts.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// How a container's process is run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Handler {
    /// The built-in executor (`executor::init_container` in a forked child).
    Builtin,
    /// An external runc-compatible runtime.
    Oci {
        /// The runtime executable.
        path: PathBuf,
        /// Its state directory (`--root`).
        root: PathBuf,
    },
}

/// Which PID namespace a container's process lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PidMode {
    /// The pod's namespace (the monitor's).
    Pod,
    /// A namespace of its own, made when the monitor forks it.
    Container,
    /// The host's namespace.
    Node,
}

/// Create a container: set up its process up to (not including) the exec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateContainer {
    /// Container ID (unique within the monitor).
    pub id: String,
    /// OCI bundle directory (`config.json`, `rootfs`).
    pub bundle: PathBuf,
    /// CRI log file; output is still drained when absent.
    #[serde(default)]
    pub log_path: Option<PathBuf>,
    /// Give the process a terminal (one output stream, logged as stdout).
    #[serde(default)]
    pub tty: bool,
    /// Where `started.json` and `exit.json` are written.
    pub state_dir: PathBuf,
    /// How to run it.
    pub handler: Handler,
    /// Its PID namespace.
    pub pid_mode: PidMode,
}

/// One request line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Request {
    /// Create a container; answers [`Created`].
    Create(CreateContainer),
    /// Start a created container; answers [`Started`].
    Start {
        /// Container ID.
        id: String,
    },
    /// Send a signal to the container's init process.
    Signal {
        /// Container ID.
        id: String,
        /// Signal number.
        signal: i32,
    },
    /// Drop an exited (or never started) container from the monitor.
    Forget {
        /// Container ID.
        id: String,
    },
    /// Close and reopen the container's log file (after rotation).
    ReopenLog {
        /// Container ID.
        id: String,
    },
    /// The monitor's containers; answers a list of [`ContainerState`].
    List,
    /// Turn this connection into a stream of [`MonitorEvent`] lines.
    Subscribe,
    /// Kill every container, record their exits and exit.
    Shutdown,
}

/// One response line: the result or the monitor's error message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Response<T> {
    /// Success with the request's result.
    Ok(T),
    /// Failure, with a message naming what failed.
    Error(String),
}

/// Result of `create`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Created {
    /// The container's init process, in the host PID namespace.
    pub pid: i32,
}

/// Result of `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Started {
    /// When the process was started (unix nanoseconds).
    pub started_at: i64,
}

/// Result of requests that return nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {}

/// Lifecycle state of a container in the monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProcessStatus {
    /// Set up, waiting to be started.
    Created,
    /// Started and not yet exited.
    Running,
    /// Exited (its exit record is written).
    Exited,
}

/// One entry of `list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    /// Container ID.
    pub id: String,
    /// Init process in the host PID namespace.
    pub pid: i32,
    /// Lifecycle state.
    pub state: ProcessStatus,
    /// When it was started (unix nanoseconds).
    #[serde(default)]
    pub started_at: Option<i64>,
    /// How it exited.
    #[serde(default)]
    pub exit: Option<ExitRecord>,
}

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EventKind {
    /// The container's process was started.
    Started,
    /// The container's process exited (records written, output drained).
    Exited,
}

/// One event line on a subscribed connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MonitorEvent {
    /// Container ID.
    pub id: String,
    /// What happened.
    pub kind: EventKind,
    /// The exit record, for `exited`.
    #[serde(default)]
    pub exit: Option<ExitRecord>,
}

/// `started.json`: the container's process was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartedRecord {
    /// Init process in the host PID namespace.
    pub pid: i32,
    /// Unix nanoseconds.
    pub started_at: i64,
}

/// `exit.json`: how the container's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitRecord {
    /// Exit status, or 128 + signal when killed by a signal.
    pub exit_code: i32,
    /// The signal that killed it, if one did.
    #[serde(default)]
    pub signal: Option<i32>,
    /// The container's cgroup recorded an OOM kill.
    pub oom_killed: bool,
    /// Unix nanoseconds.
    pub finished_at: i64,
}

/// The container's `started.json`, if present and readable.
pub fn read_started(state_dir: &Path) -> Option<StartedRecord> {
    read_record(&state_dir.join(STARTED_FILE))
}

/// The container's `exit.json`, if present and readable.
pub fn read_exit(state_dir: &Path) -> Option<ExitRecord> {
    read_record(&state_dir.join(EXIT_FILE))
}

fn read_record<T: DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Write `value` as `<dir>/<name>` so that readers see the old file or the whole new one,
/// also after a crash: temp file, fsync, rename, fsync of the directory.
pub fn write_record<T: Serialize>(dir: &Path, name: &str, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, dir.join(name))?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The current time in unix nanoseconds.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_camel_case_lines() {
        let create = Request::Create(CreateContainer {
            id: "c1".into(),
            bundle: "/b".into(),
            log_path: None,
            tty: false,
            state_dir: "/s".into(),
            handler: Handler::Oci {
                path: "/usr/bin/runc".into(),
                root: "/run/runc".into(),
            },
            pid_mode: PidMode::Container,
        });
        let json = serde_json::to_string(&create).unwrap();
        assert!(json.starts_with(r#"{"op":"create","id":"c1""#), "{json}");
        assert!(
            json.contains(r#""handler":{"oci":{"path":"/usr/bin/runc""#),
            "{json}"
        );
        assert!(json.contains(r#""pidMode":"container""#), "{json}");
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), create);
        let reopen: Request = serde_json::from_str(r#"{"op":"reopenLog","id":"x"}"#).unwrap();
        assert_eq!(reopen, Request::ReopenLog { id: "x".into() });
        assert_eq!(
            serde_json::to_string(&Response::<Done>::Error("no".into())).unwrap(),
            r#"{"error":"no"}"#
        );
    }

    #[test]
    fn records_are_written_atomically_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_exit(dir.path()), None);
        let exit = ExitRecord {
            exit_code: 137,
            signal: Some(9),
            oom_killed: true,
            finished_at: 42,
        };
        write_record(dir.path(), EXIT_FILE, &exit).unwrap();
        assert_eq!(read_exit(dir.path()), Some(exit));
        let text = std::fs::read_to_string(dir.path().join(EXIT_FILE)).unwrap();
        assert!(text.contains("\"exitCode\":137") && text.contains("\"oomKilled\":true"));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temp file left behind");
    }
}
