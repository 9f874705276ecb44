//! One container as the monitor holds it: its process, output streams, log and records.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use serde::Deserialize;

use super::logs::{LineSplitter, LogFile, StreamKind};
use crate::monitor::protocol::{ContainerState, ExitRecord, Handler, ProcessStatus};

/// How many reads one stream gets per loop turn before others are served.
const READS_PER_TURN: usize = 16;

/// The read end of one of the container's output streams.
#[derive(Debug)]
pub struct OutputStream {
    file: File,
    splitter: LineSplitter,
}

impl OutputStream {
    fn new(fd: OwnedFd, kind: StreamKind) -> std::io::Result<Self> {
        set_nonblocking(&fd)?;
        Ok(Self {
            file: File::from(fd),
            splitter: LineSplitter::new(kind),
        })
    }

    /// The descriptor to poll.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.file.as_fd()
    }

    /// What can be read now, as text, up to `max` bytes (not logged: for error messages).
    pub fn read_now(&mut self, max: usize) -> String {
        let mut text = Vec::new();
        let mut buf = [0u8; 1024];
        while text.len() < max {
            match nix::unistd::read(&self.file, &mut buf) {
                Ok(0) => break,
                Ok(n) => text.extend_from_slice(&buf[..n]),
                Err(Errno::EINTR) => {}
                Err(_) => break,
            }
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    /// Log what can be read now, at most `max_reads` reads (`None`: until nothing is left).
    /// Returns false once the stream has ended (its pending fragment is then written).
    fn pump(&mut self, log: &mut LogFile, max_reads: Option<usize>) -> bool {
        let mut buf = [0u8; 8192];
        let mut reads = 0;
        let mut sink = |kind, partial, content: &[u8]| log.write_record(kind, partial, content);
        loop {
            if max_reads.is_some_and(|max| reads >= max) {
                return true;
            }
            reads += 1;
            match nix::unistd::read(&self.file, &mut buf) {
                Ok(0) => break,
                Ok(n) => self.splitter.feed(&buf[..n], &mut sink),
                Err(Errno::EAGAIN) => return true,
                Err(Errno::EINTR) => {}
                // EIO: a terminal whose other side is closed by every process.
                Err(_) => break,
            }
        }
        self.splitter.flush(&mut sink);
        false
    }
}

/// The parent's and the child's ends of a new container's stdio.
pub struct Stdio {
    /// What the monitor reads, with the stream each one is logged as.
    pub parent: Vec<(StreamKind, OwnedFd)>,
    /// What the container gets.
    pub child: ChildStdio,
}

/// The container's side of its stdio.
pub enum ChildStdio {
    /// Separate stdout and stderr pipes (stdin is /dev/null).
    Pipes {
        /// Write end of the stdout pipe.
        stdout: OwnedFd,
        /// Write end of the stderr pipe.
        stderr: OwnedFd,
    },
    /// A terminal for stdin, stdout and stderr.
    Tty {
        /// The pty's slave side.
        slave: OwnedFd,
    },
}

impl Stdio {
    /// Pipes, or a pty pair when `tty`.
    pub fn new(tty: bool) -> Result<Self, String> {
        if tty {
            let pty = nix::pty::openpty(None, None).map_err(|e| format!("opening a pty: {e}"))?;
            for fd in [&pty.master, &pty.slave] {
                fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
                    .map_err(|e| format!("pty: {e}"))?;
            }
            Ok(Self {
                parent: vec![(StreamKind::Stdout, pty.master)],
                child: ChildStdio::Tty { slave: pty.slave },
            })
        } else {
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            Ok(Self {
                parent: vec![(StreamKind::Stdout, out_r), (StreamKind::Stderr, err_r)],
                child: ChildStdio::Pipes {
                    stdout: out_w,
                    stderr: err_w,
                },
            })
        }
    }

    /// In the forked child: make the container's ends fds 0, 1 and 2. The executor makes
    /// the session and, with a terminal, takes stdin as its controlling terminal.
    pub fn install_in_child(&self) -> Result<(), String> {
        match &self.child {
            ChildStdio::Pipes { stdout, stderr } => {
                let null = File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
                nix::unistd::dup2_stdin(&null).map_err(|e| format!("stdin: {e}"))?;
                nix::unistd::dup2_stdout(stdout).map_err(|e| format!("stdout: {e}"))?;
                nix::unistd::dup2_stderr(stderr).map_err(|e| format!("stderr: {e}"))?;
            }
            ChildStdio::Tty { slave } => {
                nix::unistd::dup2_stdin(slave).map_err(|e| format!("stdin: {e}"))?;
                nix::unistd::dup2_stdout(slave).map_err(|e| format!("stdout: {e}"))?;
                nix::unistd::dup2_stderr(slave).map_err(|e| format!("stderr: {e}"))?;
            }
        }
        Ok(())
    }
}

/// The parent's ends of a new container's stdio, ready to poll.
pub fn into_streams(
    parent: Vec<(StreamKind, OwnedFd)>,
) -> Result<[Option<OutputStream>; 2], String> {
    let mut streams = [None, None];
    for (slot, (kind, fd)) in streams.iter_mut().zip(parent) {
        *slot = Some(OutputStream::new(fd, kind).map_err(|e| format!("output pipe: {e}"))?);
    }
    Ok(streams)
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("creating a pipe: {e}"))
}

fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    let flags = fcntl(fd, FcntlArg::F_GETFL)?;
    fcntl(
        fd,
        FcntlArg::F_SETFL(OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK),
    )?;
    Ok(())
}

/// The cgroup named by the bundle's spec (`linux.cgroupsPath`), read for OOM accounting.
pub fn spec_cgroup(bundle: &Path) -> Result<Option<String>, String> {
    #[derive(Deserialize)]
    struct Spec {
        linux: Option<Linux>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Linux {
        cgroups_path: Option<String>,
    }
    let path = bundle.join("config.json");
    let bytes = std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let spec: Spec =
        serde_json::from_slice(&bytes).map_err(|e| format!("parsing {}: {e}", path.display()))?;
    Ok(spec.linux.and_then(|l| l.cgroups_path))
}

/// Control pipes of a built-in container between create and start.
#[derive(Debug)]
pub struct Gate {
    /// Write one byte to let the process exec.
    pub gate: OwnedFd,
    /// The executor's report pipe (`R`, `E` + message, EOF on exec).
    pub report: OwnedFd,
}

/// A container the monitor runs.
#[derive(Debug)]
pub struct Container {
    /// Container ID.
    pub id: String,
    /// Init process in the monitor's PID namespace (what it signals and reaps).
    pub pid: i32,
    /// Init process in the host's PID namespace (what the server sees).
    pub host_pid: i32,
    /// How it is run.
    pub handler: Handler,
    /// Where its records go.
    pub state_dir: PathBuf,
    /// Its cgroup, for OOM accounting.
    pub cgroup: Option<String>,
    /// Its CRI log.
    pub log: LogFile,
    /// stdout and stderr (or the terminal), until each ends.
    pub streams: [Option<OutputStream>; 2],
    /// Built-in containers not started yet.
    pub gate: Option<Gate>,
    /// Set once started.
    pub started_at: Option<i64>,
    /// Set once exited.
    pub exit: Option<ExitRecord>,
}

impl Container {
    /// Where the container is in its life.
    pub fn status(&self) -> ProcessStatus {
        match (self.exit, self.started_at) {
            (Some(_), _) => ProcessStatus::Exited,
            (None, Some(_)) => ProcessStatus::Running,
            (None, None) => ProcessStatus::Created,
        }
    }

    /// The `list` entry.
    pub fn state(&self) -> ContainerState {
        ContainerState {
            id: self.id.clone(),
            pid: self.host_pid,
            state: self.status(),
            started_at: self.started_at,
            exit: self.exit,
        }
    }

    /// Serve one ready stream for a bounded number of reads; close it when it ends.
    pub fn pump_stream(&mut self, index: usize) {
        if let Some(stream) = self.streams.get_mut(index).and_then(Option::as_mut) {
            if !stream.pump(&mut self.log, Some(READS_PER_TURN)) {
                self.streams[index] = None;
            }
        }
    }

    /// Log everything the streams hold now. A stream another process still writes to
    /// stays open, but its unfinished line is written out: the exit record follows.
    pub fn drain(&mut self) {
        for slot in &mut self.streams {
            let Some(stream) = slot.as_mut() else {
                continue;
            };
            if stream.pump(&mut self.log, None) {
                let log = &mut self.log;
                stream.splitter.flush(&mut |kind, partial, content: &[u8]| {
                    log.write_record(kind, partial, content)
                });
            } else {
                *slot = None;
            }
        }
    }
}
