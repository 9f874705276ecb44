//! `capstan shim start` before it forks the monitor: cgroup, namespaces, loopback,
//! hostname, sysctls, namespace pins and the listening socket. Any failure is reported
//! to the launcher as one message.

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;

use cgroups_rs::fs::{hierarchies, Cgroup};
use cgroups_rs::CgroupPid;
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

use crate::monitor::config::{
    sysctl_path, NamespaceChoice, PidChoice, SandboxMonitorConfig, NS_DIR, SOCKET_FILE,
};

/// What the monitor inherits from the setup.
pub struct Prepared {
    /// The validated config.
    pub config: SandboxMonitorConfig,
    /// `<runDir>/monitor.sock`, listening, non-blocking.
    pub listener: UnixListener,
}

/// Read the config and set up everything the monitor holds, in the calling process.
pub fn prepare(config_path: &Path) -> Result<Prepared, String> {
    let bytes = fs::read(config_path)
        .map_err(|e| format!("reading config {}: {e}", config_path.display()))?;
    let config: SandboxMonitorConfig = serde_json::from_slice(&bytes)
        .map_err(|e| format!("parsing config {}: {e}", config_path.display()))?;
    config.validate()?;
    let run_dir = &config.run_dir;
    let ns_dir = run_dir.join(NS_DIR);
    fs::create_dir_all(&ns_dir).map_err(|e| format!("creating {}: {e}", ns_dir.display()))?;
    if let Some(cgroup) = config.cgroup_path.as_deref().filter(|c| !c.is_empty()) {
        join_cgroup(cgroup)?;
    }
    unshare(namespace_flags(&config)).map_err(|e| format!("unsharing namespaces: {e}"))?;
    if config.network == NamespaceChoice::New {
        loopback_up()?;
    }
    if config.uts == NamespaceChoice::New && !config.hostname.is_empty() {
        nix::unistd::sethostname(&config.hostname)
            .map_err(|e| format!("setting hostname {:?}: {e}", config.hostname))?;
    }
    for (name, value) in &config.sysctls {
        let path = sysctl_path(name)?;
        fs::write(&path, value.as_bytes()).map_err(|e| format!("setting sysctl {name}: {e}"))?;
    }
    for (kind, choice) in [
        ("net", config.network),
        ("ipc", config.ipc),
        ("uts", config.uts),
    ] {
        if choice == NamespaceChoice::New {
            pin_namespace(kind, &ns_dir.join(kind))?;
        }
    }
    let listener = listen(&run_dir.join(SOCKET_FILE))?;
    Ok(Prepared { config, listener })
}

fn namespace_flags(config: &SandboxMonitorConfig) -> CloneFlags {
    let mut flags = CloneFlags::empty();
    for (choice, flag) in [
        (config.network, CloneFlags::CLONE_NEWNET),
        (config.ipc, CloneFlags::CLONE_NEWIPC),
        (config.uts, CloneFlags::CLONE_NEWUTS),
    ] {
        if choice == NamespaceChoice::New {
            flags |= flag;
        }
    }
    if config.pid == PidChoice::Pod {
        // Applies to children: the monitor forked next becomes PID 1.
        flags |= CloneFlags::CLONE_NEWPID;
    }
    flags
}

fn join_cgroup(path: &str) -> Result<(), String> {
    let cgroup = Cgroup::load(hierarchies::auto(), path.trim_start_matches('/'));
    if !cgroup.exists() {
        return Err(format!("cgroup {path} does not exist"));
    }
    let pid = CgroupPid::from(u64::from(std::process::id()));
    cgroup
        .add_task_by_tgid(pid)
        .map_err(|e| format!("joining cgroup {path}: {e}"))
}

/// `ip link set lo up`, so the pod has loopback without a CNI loopback plugin.
fn loopback_up() -> Result<(), String> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("loopback: socket: {e}"))?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own; the socket is open.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(format!(
                "loopback: reading flags: {}",
                std::io::Error::last_os_error()
            ));
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(format!(
                "loopback: setting it up: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// Keep a namespace alive without a process: bind-mount its nsfs file onto `pin`.
fn pin_namespace(kind: &str, pin: &Path) -> Result<(), String> {
    fs::File::create(pin).map_err(|e| format!("creating {}: {e}", pin.display()))?;
    let source = format!("/proc/self/ns/{kind}");
    mount(
        Some(source.as_str()),
        pin,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("pinning the {kind} namespace at {}: {e}", pin.display()))
}

fn listen(path: &Path) -> Result<UnixListener, String> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("removing stale {}: {e}", path.display())),
    }
    let listener =
        UnixListener::bind(path).map_err(|e| format!("listening on {}: {e}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("restricting {}: {e}", path.display()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("listening on {}: {e}", path.display()))?;
    Ok(listener)
}
