//! The process itself: resource limits, OOM score, umask, user and groups, session and
//! terminal, working directory, environment, and the final execve.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::resource::Resource;
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{PosixRlimit, PosixRlimitType, Process, User};

use super::error::{ExecutorError, Result, SysContext};

/// umask when the spec gives none (what runc uses).
const DEFAULT_UMASK: u32 = 0o022;

/// Applies `process.rlimits` (before dropping CAP_SYS_RESOURCE, so hard limits may rise).
pub fn set_rlimits(rlimits: &[PosixRlimit]) -> Result<()> {
    for rlimit in rlimits {
        nix::sys::resource::setrlimit(resource(rlimit.typ()), rlimit.soft(), rlimit.hard()).sys(
            || {
                format!(
                    "setting {} to {}/{}",
                    rlimit.typ(),
                    rlimit.soft(),
                    rlimit.hard()
                )
            },
        )?;
    }
    Ok(())
}

/// The kernel resource of a spec rlimit type.
pub fn resource(typ: PosixRlimitType) -> Resource {
    match typ {
        PosixRlimitType::RlimitCpu => Resource::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => Resource::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => Resource::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => Resource::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => Resource::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => Resource::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => Resource::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => Resource::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => Resource::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => Resource::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => Resource::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => Resource::RLIMIT_RTTIME,
    }
}

/// Writes `process.oomScoreAdj`. Some machines refuse negative values (EIO/EACCES/EPERM);
/// those are skipped, as the server already warned about them.
pub fn set_oom_score_adj(value: Option<i32>) -> Result<()> {
    let Some(value) = value else {
        return Ok(());
    };
    match std::fs::write("/proc/self/oom_score_adj", value.to_string()) {
        Ok(()) => Ok(()),
        Err(e)
            if value < 0
                && matches!(
                    e.raw_os_error(),
                    Some(libc::EIO) | Some(libc::EACCES) | Some(libc::EPERM)
                ) =>
        {
            Ok(())
        }
        Err(e) => Err(e).sys(|| format!("setting oom_score_adj to {value}")),
    }
}

/// Sets the file mode creation mask of `user` (0022 when not given).
pub fn set_umask(user: &User) {
    let mask = user.umask().unwrap_or(DEFAULT_UMASK) & 0o777;
    // SAFETY: umask cannot fail and has no memory-safety preconditions.
    unsafe { libc::umask(mask as libc::mode_t) };
}

/// Becomes `user`: supplementary groups, gid, uid. Permitted capabilities survive the uid
/// change (PR_SET_KEEPCAPS) so the spec's sets can still be applied afterwards.
pub fn switch_user(user: &User) -> Result<()> {
    let groups: Vec<Gid> = user
        .additional_gids()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|&gid| Gid::from_raw(gid))
        .collect();
    nix::unistd::setgroups(&groups).sys(|| format!("setting supplementary groups {groups:?}"))?;
    let gid = Gid::from_raw(user.gid());
    nix::unistd::setresgid(gid, gid, gid).sys(|| format!("setting gid {gid}"))?;
    nix::sys::prctl::set_keepcaps(true).sys(|| "keeping capabilities across setuid")?;
    let uid = Uid::from_raw(user.uid());
    nix::unistd::setresuid(uid, uid, uid).sys(|| format!("setting uid {uid}"))?;
    nix::sys::prctl::set_keepcaps(false).sys(|| "resetting PR_SET_KEEPCAPS")
}

/// Starts a new session; with a terminal, makes stdin (the pty slave the monitor set up)
/// the controlling terminal.
pub fn new_session(terminal: bool) -> Result<()> {
    match nix::unistd::setsid() {
        Ok(_) => {}
        // Already a process group leader: only matters when a terminal must be acquired.
        Err(Errno::EPERM) if !terminal => {}
        Err(e) => return Err(e).sys(|| "setsid"),
    }
    if terminal {
        // SAFETY: TIOCSCTTY takes an integer argument; fd 0 is ours.
        let rc = unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) };
        Errno::result(rc).sys(|| "making stdin the controlling terminal")?;
    }
    Ok(())
}

/// Enters the working directory (relative paths are relative to `/`).
pub fn enter_cwd(cwd: &Path) -> Result<()> {
    let cwd = if cwd.as_os_str().is_empty() {
        Path::new("/").to_owned()
    } else {
        Path::new("/").join(cwd)
    };
    nix::unistd::chdir(&cwd).sys(|| format!("working directory {}", cwd.display()))
}

/// Everything execve needs, prepared before the gate so failures are reported early.
#[derive(Debug)]
pub struct Command {
    /// The resolved executable.
    pub path: CString,
    /// argv.
    pub args: Vec<CString>,
    /// envp (exactly the spec's environment, plus HOME when missing).
    pub env: Vec<CString>,
}

/// Resolves `process.args[0]` in the PATH of `process.env` and builds argv and envp. Runs
/// inside the container (after pivot_root) as the process' user.
pub fn command(process: &Process) -> Result<Command> {
    let args = process.args().as_deref().unwrap_or_default();
    let Some(program) = args.first() else {
        return Err(ExecutorError::Invalid("process.args is empty".into()));
    };
    let mut env: Vec<String> = process.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let home = home_of(&passwd, process.user().uid()).unwrap_or_else(|| "/".into());
        env.push(format!("HOME={home}"));
    }
    let path_var = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("");
    let path = if program.contains('/') {
        PathBuf::from(program)
    } else {
        find_in_path(program, path_var, is_executable).ok_or_else(|| {
            ExecutorError::Invalid(format!("executable file `{program}` not found in $PATH"))
        })?
    };
    Ok(Command {
        path: cstring(path.as_os_str().as_bytes(), "executable path")?,
        args: args
            .iter()
            .map(|a| cstring(a.as_bytes(), "argument"))
            .collect::<Result<_>>()?,
        env: env
            .iter()
            .map(|e| cstring(e.as_bytes(), "environment variable"))
            .collect::<Result<_>>()?,
    })
}

/// Replaces the process image; returns only on failure.
pub fn exec(command: &Command) -> ExecutorError {
    let err = match nix::unistd::execve(&command.path, &command.args, &command.env) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    ExecutorError::Sys {
        what: format!("exec {}", command.path.to_string_lossy()),
        source: err.into(),
    }
}

/// Marks every descriptor above stderr close-on-exec, so nothing the monitor (or we)
/// opened leaks into the container.
pub fn close_on_exec_above_stdio() -> Result<()> {
    let entries = std::fs::read_dir("/proc/self/fd").sys(|| "listing /proc/self/fd")?;
    for entry in entries.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if fd <= 2 {
            continue;
        }
        // SAFETY: F_GETFD/F_SETFD only touch descriptor flags; a descriptor closed
        // meanwhile (the directory listing's own) just fails with EBADF.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
    Ok(())
}

/// Restores default dispositions and an empty signal mask: ignored signals survive execve
/// (Rust programs such as the monitor ignore SIGPIPE) and the container must not inherit
/// them.
pub fn reset_signals() -> Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for signal in Signal::iterator() {
        if matches!(signal, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: installing SIG_DFL runs no code of ours in signal context.
        unsafe { sigaction(signal, &default) }.sys(|| format!("resetting {signal}"))?;
    }
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&SigSet::empty()),
        None,
    )
    .sys(|| "clearing the signal mask")
}

/// The first `dir/name` along `path_var` (colon-separated, empty entries meaning `.`)
/// that `usable` accepts.
pub fn find_in_path(name: &str, path_var: &str, usable: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    path_var
        .split(':')
        .map(|dir| {
            let dir = if dir.is_empty() { "." } else { dir };
            Path::new(dir).join(name)
        })
        .find(|candidate| usable(candidate))
}

/// A regular file with an execute bit.
fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The home directory of `uid` in an `/etc/passwd` text.
pub fn home_of(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 7 && fields[2].parse::<u32>().ok()? == uid && !fields[5].is_empty())
            .then(|| fields[5].to_owned())
    })
}

fn cstring(bytes: &[u8], what: &str) -> Result<CString> {
    CString::new(bytes).map_err(|_| {
        ExecutorError::Invalid(format!(
            "{what} {:?} contains a NUL byte",
            String::from_utf8_lossy(bytes)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_lookup_takes_the_first_usable_entry() {
        let usable = |p: &Path| p == Path::new("/bin/sh") || p == Path::new("/usr/bin/sh");
        assert_eq!(
            find_in_path("sh", "/usr/local/bin:/usr/bin:/bin", usable),
            Some(PathBuf::from("/usr/bin/sh"))
        );
        assert_eq!(find_in_path("sh", "/opt", usable), None);
        assert_eq!(
            find_in_path("tool", "/a::/b", |p| p == Path::new("./tool")),
            Some(PathBuf::from("./tool"))
        );
    }

    #[test]
    fn executables_need_an_x_bit_and_a_regular_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plain = dir.path().join("plain");
        let tool = dir.path().join("tool");
        std::fs::write(&plain, b"").expect("write");
        std::fs::write(&tool, b"").expect("write");
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert!(is_executable(&tool));
        assert!(!is_executable(&plain));
        assert!(!is_executable(dir.path()));
    }

    #[test]
    fn home_from_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n";
        assert_eq!(home_of(passwd, 1000).as_deref(), Some("/home/user"));
        assert_eq!(home_of(passwd, 0).as_deref(), Some("/root"));
        assert_eq!(home_of(passwd, 5), None);
        assert_eq!(home_of("garbage", 0), None);
    }

    #[test]
    fn command_reports_missing_programs_like_runc() {
        let mut process = Process::default();
        process.set_args(Some(vec!["no-such-program-here".into()]));
        process.set_env(Some(vec!["PATH=/nonexistent".into(), "HOME=/".into()]));
        let err = command(&process).expect_err("missing program");
        assert_eq!(
            err.to_string(),
            "executable file `no-such-program-here` not found in $PATH"
        );
        process.set_args(Some(vec![]));
        assert!(command(&process).is_err());
    }

    #[test]
    fn command_keeps_the_environment_and_adds_home() {
        let mut process = Process::default();
        process.set_args(Some(vec!["/bin/true".into(), "a".into()]));
        process.set_env(Some(vec!["A=1".into()]));
        let command = command(&process).expect("command");
        assert_eq!(command.path.to_str(), Ok("/bin/true"));
        assert_eq!(command.args.len(), 2);
        assert_eq!(command.env[0].to_str(), Ok("A=1"));
        assert!(command.env[1].to_str().expect("utf8").starts_with("HOME="));
    }
}
