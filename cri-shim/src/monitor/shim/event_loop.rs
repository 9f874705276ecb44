//! The monitor's single-threaded poll loop: the listening socket, client connections,
//! container output and a signalfd for SIGCHLD/SIGTERM.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::Serialize;

use super::builtin;
use super::conn::Conn;
use super::container::Container;
use super::oci;
use super::process::{oom_killed, release_memory, PidView};
use crate::monitor::protocol::{
    now_nanos, write_record, ContainerState, CreateContainer, Created, Done, EventKind, ExitRecord,
    Handler, MonitorEvent, ProcessStatus, Request, Response, Started, StartedRecord, EXIT_FILE,
    STARTED_FILE,
};

/// What a poll entry belongs to, in the order ready entries are served: output first
/// (so exits find it logged), then exits, then requests, then new clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    Stream(usize, usize),
    Signals,
    Conn(usize),
    Listener,
}

/// The monitor's state.
pub struct Monitor {
    listener: UnixListener,
    signals: SignalFd,
    socket_path: PathBuf,
    conns: Vec<Conn>,
    containers: Vec<Container>,
    pids: PidView,
    own_pid_ns: OwnedFd,
}

type Reply = Result<serde_json::Value, String>;

impl Monitor {
    /// A monitor serving `listener`, reading signals from `signals`.
    pub fn new(
        listener: UnixListener,
        signals: SignalFd,
        socket_path: PathBuf,
    ) -> std::io::Result<Self> {
        let own_pid_ns = OwnedFd::from(std::fs::File::open("/proc/self/ns/pid")?);
        Ok(Self {
            listener,
            signals,
            socket_path,
            conns: Vec::new(),
            containers: Vec::new(),
            pids: PidView::of_self(),
            own_pid_ns,
        })
    }

    /// Serve until shut down.
    pub fn run(mut self) -> ! {
        release_memory();
        loop {
            let mut ready = self.wait();
            ready.sort_unstable_by_key(|(source, _)| *source);
            for (source, events) in ready {
                match source {
                    Source::Stream(c, s) => {
                        if let Some(container) = self.containers.get_mut(c) {
                            container.pump_stream(s);
                        }
                    }
                    Source::Signals => self.on_signals(),
                    Source::Conn(i) => self.on_conn(i, events),
                    Source::Listener => self.accept(),
                }
            }
            if self.conns.iter().any(|c| c.closed) {
                self.conns.retain(|c| !c.closed);
                // A finished exchange leaves freed buffers behind.
                release_memory();
            }
        }
    }

    fn wait(&self) -> Vec<(Source, PollFlags)> {
        let mut sources = vec![Source::Signals, Source::Listener];
        let mut fds = vec![
            PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
        ];
        for (i, conn) in self.conns.iter().enumerate() {
            let mut flags = PollFlags::POLLIN;
            if conn.wants_write() {
                flags |= PollFlags::POLLOUT;
            }
            sources.push(Source::Conn(i));
            fds.push(PollFd::new(conn.stream.as_fd(), flags));
        }
        for (c, container) in self.containers.iter().enumerate() {
            for (s, stream) in container.streams.iter().enumerate() {
                if let Some(stream) = stream {
                    sources.push(Source::Stream(c, s));
                    fds.push(PollFd::new(stream.fd(), PollFlags::POLLIN));
                }
            }
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => return Vec::new(),
            Err(e) => {
                eprintln!("capstan shim: poll: {e}");
                return Vec::new();
            }
        }
        sources
            .into_iter()
            .zip(fds.iter())
            .filter_map(|(source, fd)| fd.revents().filter(|r| !r.is_empty()).map(|r| (source, r)))
            .collect()
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => match Conn::new(stream) {
                    Ok(conn) => self.conns.push(conn),
                    Err(e) => eprintln!("capstan shim: accepting a client: {e}"),
                },
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    fn on_signals(&mut self) {
        let mut terminate = false;
        while let Ok(Some(info)) = self.signals.read_signal() {
            if info.ssi_signo == Signal::SIGTERM as u32 {
                terminate = true;
            }
        }
        // Reap on any wakeup: SIGCHLDs coalesce.
        self.reap_children();
        if terminate {
            self.shutdown_all();
            self.exit();
        }
    }

    fn on_conn(&mut self, index: usize, events: PollFlags) {
        if events.contains(PollFlags::POLLOUT) {
            self.conns[index].flush();
        }
        if !events.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            return;
        }
        for line in self.conns[index].read_lines() {
            if self.conns[index].subscriber {
                break;
            }
            let (reply, exit_after) = match serde_json::from_slice::<Request>(&line) {
                Ok(Request::Subscribe) => {
                    self.conns[index].subscriber = true;
                    (to_value(Done {}), false)
                }
                Ok(Request::Shutdown) => {
                    self.shutdown_all();
                    (to_value(Done {}), true)
                }
                Ok(request) => (self.handle(request), false),
                Err(e) => (Err(format!("bad request: {e}")), false),
            };
            let response = match reply {
                Ok(value) => Response::Ok(value),
                Err(message) => Response::Error(message),
            };
            if let Ok(bytes) = serde_json::to_vec(&response) {
                self.conns[index].send_line(&bytes);
            }
            if exit_after {
                self.conns[index].flush_blocking();
                self.exit();
            }
        }
    }

    fn handle(&mut self, request: Request) -> Reply {
        match request {
            Request::Create(create) => self.create(create),
            Request::Start { id } => self.start(&id),
            Request::Signal { id, signal } => self.signal(&id, signal),
            Request::Forget { id } => self.forget(&id),
            Request::ReopenLog { id } => {
                let container = self.find(&id)?;
                self.containers[container]
                    .log
                    .reopen()
                    .map_err(|e| format!("reopening the log of {id}: {e}"))?;
                to_value(Done {})
            }
            Request::List => {
                let states: Vec<ContainerState> =
                    self.containers.iter().map(Container::state).collect();
                to_value(states)
            }
            Request::Subscribe | Request::Shutdown => Err("handled by the loop".to_owned()),
        }
    }

    fn find(&self, id: &str) -> Result<usize, String> {
        self.containers
            .iter()
            .position(|c| c.id == id)
            .ok_or_else(|| format!("container {id:?} not found in this sandbox's monitor"))
    }

    fn create(&mut self, request: CreateContainer) -> Reply {
        if request.id.is_empty() {
            return Err("container ID must not be empty".to_owned());
        }
        if self.find(&request.id).is_ok() {
            return Err(format!("container {} already exists", request.id));
        }
        std::fs::create_dir_all(&request.state_dir)
            .map_err(|e| format!("creating {}: {e}", request.state_dir.display()))?;
        let container = match &request.handler {
            Handler::Builtin => builtin::create(&request, &self.pids, &self.own_pid_ns),
            Handler::Oci { path, root } => oci::create(&request, path, root, &self.pids),
        }
        .map_err(|e| format!("creating container {}: {e}", request.id))?;
        let pid = container.host_pid;
        self.containers.push(container);
        to_value(Created { pid })
    }

    fn start(&mut self, id: &str) -> Reply {
        let index = self.find(id)?;
        let container = &mut self.containers[index];
        if container.status() != ProcessStatus::Created {
            return Err(format!("container {id} is not in the created state"));
        }
        let started = match &container.handler {
            Handler::Builtin => match container.gate.take() {
                Some(gate) => builtin::start(gate),
                None => Err("the container's gate is gone".to_owned()),
            },
            Handler::Oci { path, root } => {
                oci::start(path, root, &container.state_dir, id, &self.pids)
            }
        };
        if let Err(message) = started {
            if container.handler == Handler::Builtin {
                // The executor exits 127 after reporting; record that exit now.
                if let Some(status) = builtin::reap(Pid::from_raw(container.pid)) {
                    self.finalize(index, status);
                }
            }
            return Err(format!("starting container {id}: {message}"));
        }
        let started_at = now_nanos();
        container.started_at = Some(started_at);
        let record = StartedRecord {
            pid: container.host_pid,
            started_at,
        };
        let written = write_record(&container.state_dir, STARTED_FILE, &record);
        self.broadcast(&MonitorEvent {
            id: id.to_owned(),
            kind: EventKind::Started,
            exit: None,
        });
        written.map_err(|e| format!("container {id} started, but recording it failed: {e}"))?;
        to_value(Started { started_at })
    }

    fn signal(&mut self, id: &str, signal: i32) -> Reply {
        let index = self.find(id)?;
        let signal =
            Signal::try_from(signal).map_err(|_| format!("{signal} is not a signal number"))?;
        let container = &self.containers[index];
        if container.exit.is_none() {
            // The PID cannot have been reused: only this monitor reaps it.
            match kill(Pid::from_raw(container.pid), signal) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(e) => return Err(format!("signalling container {id}: {e}")),
            }
        }
        to_value(Done {})
    }

    fn forget(&mut self, id: &str) -> Reply {
        let index = self.find(id)?;
        match self.containers[index].status() {
            ProcessStatus::Running => {
                return Err(format!("container {id} is running: stop it first"));
            }
            ProcessStatus::Created => {
                let pid = Pid::from_raw(self.containers[index].pid);
                let _ = kill(pid, Signal::SIGKILL);
                let status =
                    builtin::reap(pid).unwrap_or(WaitStatus::Signaled(pid, Signal::SIGKILL, false));
                self.finalize(index, status);
            }
            ProcessStatus::Exited => {}
        }
        let container = self.containers.remove(index);
        if let Handler::Oci { path, root } = &container.handler {
            if let Err(e) = oci::delete(path, root, &container.state_dir, id, &self.pids) {
                eprintln!("capstan shim: deleting {id}: {e}");
            }
        }
        to_value(Done {})
    }

    /// Reap every child that exited: containers get their exit recorded, anything else
    /// (orphans reparented to the monitor, runtime helpers) is just collected.
    fn reap_children(&mut self) {
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => return,
                Ok(status) => {
                    let Some(pid) = status.pid() else { continue };
                    if let Some(index) = self
                        .containers
                        .iter()
                        .position(|c| c.pid == pid.as_raw() && c.exit.is_none())
                    {
                        self.finalize(index, status);
                    }
                }
                Err(Errno::EINTR) => {}
                Err(_) => return,
            }
        }
    }

    /// The container's process ended: log its remaining output, write `exit.json`, tell
    /// subscribers, in that order.
    fn finalize(&mut self, index: usize, status: WaitStatus) {
        let (exit_code, signal) = match status {
            WaitStatus::Exited(_, code) => (code, None),
            WaitStatus::Signaled(_, signal, _) => (128 + signal as i32, Some(signal as i32)),
            _ => return,
        };
        let container = &mut self.containers[index];
        container.drain();
        let record = ExitRecord {
            exit_code,
            signal,
            oom_killed: oom_killed(container.cgroup.as_deref()),
            finished_at: now_nanos(),
        };
        if let Err(e) = write_record(&container.state_dir, EXIT_FILE, &record) {
            eprintln!("capstan shim: recording the exit of {}: {e}", container.id);
        }
        container.exit = Some(record);
        container.gate = None;
        let event = MonitorEvent {
            id: container.id.clone(),
            kind: EventKind::Exited,
            exit: Some(record),
        };
        self.broadcast(&event);
    }

    fn broadcast(&mut self, event: &MonitorEvent) {
        let Ok(line) = serde_json::to_vec(event) else {
            return;
        };
        for conn in self.conns.iter_mut().filter(|c| c.subscriber) {
            conn.send_line(&line);
        }
    }

    /// Kill every container and record how each ended.
    fn shutdown_all(&mut self) {
        for container in self.containers.iter().filter(|c| c.exit.is_none()) {
            let _ = kill(Pid::from_raw(container.pid), Signal::SIGKILL);
        }
        for index in 0..self.containers.len() {
            if self.containers[index].exit.is_some() {
                continue;
            }
            let pid = Pid::from_raw(self.containers[index].pid);
            let status =
                builtin::reap(pid).unwrap_or(WaitStatus::Signaled(pid, Signal::SIGKILL, false));
            self.finalize(index, status);
        }
        for container in &self.containers {
            if let Handler::Oci { path, root } = &container.handler {
                let _ = oci::delete(path, root, &container.state_dir, &container.id, &self.pids);
            }
        }
        self.reap_children();
    }

    fn exit(&mut self) -> ! {
        for conn in self.conns.iter_mut().filter(|c| c.subscriber) {
            conn.flush_blocking();
        }
        let _ = std::fs::remove_file(&self.socket_path);
        std::process::exit(0)
    }
}

fn to_value<T: Serialize>(value: T) -> Reply {
    serde_json::to_value(value).map_err(|e| format!("encoding the reply: {e}"))
}
