//! End-to-end tests of the built-in executor: a busybox rootfs in a temp dir, runc's
//! default spec adjusted per case, `init_container` in a forked child (inside a new PID
//! namespace, as the monitor does), the gate released from here.
//!
//! `harness = false`: the cases run one after another on the main thread, so forking is
//! safe. Needs root (namespaces, mounts, cgroups). Run with
//! `cargo test -p cri-shim --test executor`.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::symlink;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cgroups_rs::fs::{hierarchies, Cgroup};
use cri_shim::executor;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use oci_spec::runtime::{
    Capability, LinuxCapabilities, LinuxDeviceBuilder, LinuxDeviceType, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxSeccompAction, LinuxSeccompBuilder, LinuxSyscallBuilder, MountBuilder,
    Process, Spec,
};

/// Longest a container may take to report or finish.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The hostname every case's spec sets.
const HOSTNAME: &str = "capstan-test";

type CaseResult = Result<(), String>;
/// A named test case.
type Case = (&'static str, fn() -> CaseResult);

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("executor tests need root; skipped");
        return;
    }
    let cases: &[Case] = &[
        (
            "id_of_non_root_user_with_additional_gids",
            id_of_non_root_user,
        ),
        (
            "proc_dev_hostname_sysctl_and_devices",
            proc_dev_and_hostname,
        ),
        ("masked_and_readonly_paths", masked_and_readonly_paths),
        ("readonly_root_refuses_writes", readonly_root),
        ("capabilities_of_root", capabilities_of_root),
        (
            "ambient_capabilities_of_a_user",
            ambient_capabilities_of_a_user,
        ),
        (
            "seccomp_denies_mkdir_with_no_new_privs",
            seccomp_with_no_new_privs,
        ),
        ("seccomp_without_no_new_privs", seccomp_without_no_new_privs),
        ("cgroup_is_joined", cgroup_is_joined),
        (
            "bind_through_absolute_symlink_stays_in_rootfs",
            bind_through_symlink,
        ),
        ("missing_bind_source_is_reported", missing_bind_source),
        ("missing_executable_is_reported", missing_executable),
        ("missing_cwd_is_reported", missing_cwd),
        ("user_namespace_is_refused", user_namespace_refused),
        ("gate_eof_exits_without_running", gate_eof),
        ("terminal_becomes_controlling_tty", terminal),
        ("exec_main_joins_a_running_container", exec_joins_container),
    ];
    let mut failed = 0;
    for (name, case) in cases {
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(case));
        match outcome {
            Ok(Ok(())) => println!("test {name} ... ok"),
            Ok(Err(message)) => {
                failed += 1;
                println!("test {name} ... FAILED\n    {message}");
            }
            Err(_) => {
                failed += 1;
                println!("test {name} ... FAILED (panicked)");
            }
        }
    }
    println!(
        "\ntest result: {}. {} passed; {failed} failed",
        if failed == 0 { "ok" } else { "FAILED" },
        cases.len() - failed
    );
    if failed > 0 {
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------
// Cases

fn id_of_non_root_user() -> CaseResult {
    let bundle = Bundle::new()?;
    let mut spec = bundle.spec(&["id"]);
    let user = process_mut(&mut spec).user_mut();
    user.set_uid(1000);
    user.set_gid(1000);
    user.set_additional_gids(Some(vec![2000, 3000]));
    let run = bundle.run(&spec)?;
    run.expect_success()?;
    expect_eq(
        run.output.trim(),
        "uid=1000(user) gid=1000(user) groups=2000(extra),3000(other)",
    )
}

fn proc_dev_and_hostname() -> CaseResult {
    let bundle = Bundle::new()?;
    let mut spec = bundle.spec(&[
        "sh",
        "-c",
        "hostname; \
         echo pid=$$; \
         echo hi > /dev/null && echo null=ok; \
         echo zero=$(head -c 5 /dev/zero | wc -c); \
         test -c /dev/urandom && echo urandom=ok; \
         echo stdout=$(readlink /dev/stdout) ptmx=$(readlink /dev/ptmx); \
         test -c /dev/pts/ptmx && echo pts=ok; \
         echo mynull=$(stat -c %t:%T /dev/mynull); \
         echo sysctl=$(cat /proc/sys/kernel/shm_rmid_forced); \
         test -d /sys/fs/cgroup/memory -o -f /sys/fs/cgroup/cgroup.controllers && echo cgroupfs=ok",
    ]);
    let device = LinuxDeviceBuilder::default()
        .path("/dev/mynull")
        .typ(LinuxDeviceType::C)
        .major(1)
        .minor(3)
        .file_mode(0o666u32)
        .build()
        .map_err(|e| e.to_string())?;
    let linux = linux_mut(&mut spec);
    linux.set_devices(Some(vec![device]));
    linux.set_sysctl(Some(HashMap::from([(
        "kernel.shm_rmid_forced".to_owned(),
        "1".to_owned(),
    )])));
    let run = bundle.run(&spec)?;
    run.expect_success()?;
    let lines: Vec<&str> = run.output.lines().collect();
    expect_eq(
        &lines.join("\n"),
        &[
            HOSTNAME,
            "pid=1",
            "null=ok",
            "zero=5",
            "urandom=ok",
            "stdout=/proc/self/fd/1 ptmx=pts/ptmx",
            "pts=ok",
            "mynull=1:3",
            "sysctl=1",
            "cgroupfs=ok",
        ]
        .join("\n"),
    )
}

fn masked_and_readonly_paths() -> CaseResult {
    let bundle = Bundle::new()?;
    std::fs::write(bundle.rootfs.join("etc/secret"), "SECRET\n").map_err(err)?;
    std::fs::create_dir(bundle.rootfs.join("data-ro")).map_err(err)?;
    let mut spec = bundle.spec(&[
        "sh",
        "-c",
        "echo secret=[$(cat /etc/secret)]; \
         echo timer_list=$(wc -c < /proc/timer_list); \
         echo firmware=$(ls /sys/firmware | wc -l); \
         touch /data-ro/x 2>/dev/null; echo data-ro=$?; \
         (echo x > /proc/sys/kernel/hostname) 2>/dev/null; echo proc-sys=$?; \
         touch /tmp/ok; echo tmp=$?; \
         touch /rootfile; echo root=$?",
    ]);
    let linux = linux_mut(&mut spec);
    let mut masked = linux.masked_paths().clone().unwrap_or_default();
    masked.push("/etc/secret".into());
    masked.push("/does/not/exist".into());
    linux.set_masked_paths(Some(masked));
    let mut readonly = linux.readonly_paths().clone().unwrap_or_default();
    readonly.push("/data-ro".into());
    readonly.push("/does/not/exist/either".into());
    linux.set_readonly_paths(Some(readonly));
    let run = bundle.run(&spec)?;
    run.expect_success()?;
    expect_eq(
        run.output.trim(),
        "secret=[]\ntimer_list=0\nfirmware=0\ndata-ro=1\nproc-sys=1\ntmp=0\nroot=0",
    )
}

fn readonly_root() -> CaseResult {
    let bundle = Bundle::new()?;
    let mut spec = bundle.spec(&[
        "sh",
        "-c",
        "touch /newfile 2>&1; echo root=$?; touch /tmp/x; echo tmp=$?",
    ]);
    spec.root_mut()
        .as_mut()
        .ok_or("no root")?
        .set_readonly(Some(true));
    let run = bundle.run(&spec)?;
    run.expect_success()?;
    expect_contains(&run.output, "Read-only file system")?;
    expect_contains(&run.output, "root=1\ntmp=0")?;
    if bundle.rootfs.join("newfile").exists() {
        return Err("/newfile was created in a read-only root".into());
    }
    Ok(())
}

fn capabilities_of_root() -> CaseResult {
    let bundle = Bundle::new()?;
    let mut spec = bundle.spec(&["grep", "^Cap", "/proc/self/status"]);
    let set: oci_spec::runtime::Capabilities =
        [Capability::Chown, Capability::NetRaw, Capability::Kill]
            .into_iter()
            .collect();
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(set.clone()));
    caps.set_effective(Some(set.clone()));
    caps.set_permitted(Some(set.clone()));
    caps.set_inheritable(Some(set.clone()));
    caps.set_ambient(Some(set));
    process_mut(&mut spec).set_capabilities(Some(caps));
    let run = bundle.run(&spec)?;
    run.expect_success()?;
    let mask = cap_mask(&[
        caps::Capability::CAP_CHOWN,
        caps::Capability::CAP_NET_RAW,
        caps::Capability::CAP_KILL,
    ]);
    for field in ["CapEff", "CapBnd", "CapPrm"] {
        expect_eq(&status_field(&run.output, field)?, &mask)?;
    }
    Ok(())
}

fn ambient_capabilities_of_a_user() -> CaseResult {
    let bundle = Bundle::new()?;
    let mut spec = bundle.spec(&["grep", "^Cap", "/proc/self/status"]);
    let both: oci_spec::runtime::Capabilities = [Capability::NetBindService, Capability::Kill]
        .into_iter()
        .collect();
    let ambient: oci_spec::runtime::Capabilities =
        [Capability::NetBindService].into_iter().collect();
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(both.clone()));
    caps.set_effective(Some(both.clone()));
    caps.set_permitted(Some(both.clone()));
    caps.set_inheritable(Some(both));
    caps.set_ambient(Some(ambient));
    let process = process_mut(&mut spec);
    process.set_capabilities(Some(caps));
    process.user_mut().set_uid(1000);
    process.user_mut().set_gid(1000);
    let run = bundle.run(&spec)?;
    run.expect_success()?;
    let nbs = cap_mask(&[caps::Capability::CAP_NET_BIND_SERVICE]);
    let both = cap_mask(&[
        caps::Capability::CAP_NET_BIND_SERVICE,
        caps::Capability::CAP_KILL,
    ]);
    // After execve a non-root process keeps exactly its ambient set.
    expect_eq(&status_field(&run.output, "CapEff")?, &nbs)?;
    expect_eq(&status_field(&run.output, "CapAmb")?, &nbs)?;
    expect_eq(&status_field(&run.output, "CapBnd")?, &both)
}

fn seccomp_with_no_new_privs() -> CaseResult {
    seccomp_case(true)
}

fn seccomp_without_no_new_privs() -> CaseResult {
    seccomp_case(false)
}

fn seccomp_case(no_new_privs: bool) -> CaseResult {
    let bundle = Bundle::new()?;
    let mut spec = bundle.spec(&[
        "sh",
        "-c",
        "mkdir /tmp/x 2>&1; echo mkdir=$?; \
         grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; \
         touch /tmp/file && echo touch=ok",
    ]);
    let deny = LinuxSyscallBuilder::default()
        .names(vec![
            "mkdir".to_owned(),
            "mkdirat".to_owned(),
            "syscall_of_another_kernel".to_owned(),
        ])
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(libc::EPERM as u32)
        .build()
        .map_err(|e| e.to_string())?;
    let profile = LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .syscalls(vec![deny])
        .build()
        .map_err(|e| e.to_string())?;
    linux_mut(&mut spec).set_seccomp(Some(profile));
    process_mut(&mut spec).set_no_new_privileges(Some(no_new_privs));
    let run = bundle.run(&spec)?;
    run.expect_success()?;
    expect_contains(&run.output, "Operation not permitted")?;
    expect_contains(&run.output, "mkdir=1")?;
    expect_eq(&status_field(&run.output, "Seccomp")?, "2")?;
    expect_eq(
        &status_field(&run.output, "NoNewPrivs")?,
        if no_new_privs { "1" } else { "0" },
    )?;
    expect_contains(&run.output, "touch=ok")
}

fn cgroup_is_joined() -> CaseResult {
    let name = format!("capstan-executor-test-{}", std::process::id());
    let cgroup = TestCgroup::create(&name)?;
    let bundle = Bundle::new()?;
    let mut spec = bundle.spec(&["cat", "/proc/self/cgroup"]);
    linux_mut(&mut spec).set_cgroups_path(Some(PathBuf::from(format!("/{name}"))));
    let mut container = Container::start(&bundle.dir, &spec)?;
    container.wait_ready()?;
    // Seen from the host, the waiting container is in the test cgroup.
    let host_view =
        std::fs::read_to_string(format!("/proc/{}/cgroup", container.pid)).map_err(err)?;
    expect_contains(&host_view, &format!(":/{name}"))?;
    let run = container.release()?;
    run.expect_success()?;
    // Inside, its own cgroup namespace makes that cgroup the root.
    if run.output.lines().any(|l| l.contains(&name)) {
        return Err(format!(
            "the cgroup namespace shows host paths:\n{}",
            run.output
        ));
    }
    drop(cgroup);
    Ok(())
}

fn bind_through_symlink() -> CaseResult {
    let bundle = Bundle::new()?;
    let host_dir = tempfile::tempdir().map_err(err)?;
    std::fs::write(host_dir.path().join("host-marker"), "").map_err(err)?;
    let source = tempfile::tempdir().map_err(err)?;
    std::fs::write(source.path().join("bound"), "").map_err(err)?;
    // The image's /data points at a path that also exists on the host.
    symlink(host_dir.path(), bundle.rootfs.join("data")).map_err(err)?;
    let mut spec = bundle.spec(&["ls", "/data"]);
    // The host directory is under /tmp: keep the container's /tmp on the rootfs so the
    // mount point created for it can be checked from here.
    let mounts = spec.mounts().clone().unwrap_or_default();
    spec.set_mounts(Some(
        mounts
            .into_iter()
            .filter(|m| m.destination() != Path::new("/tmp"))
            .collect(),
    ));
    add_mount(&mut spec, bind_mount("/data", source.path()))?;
    let run = bundle.run(&spec)?;
    run.expect_success()?;
    expect_eq(run.output.trim(), "bound")?;
    let host_entries: Vec<_> = std::fs::read_dir(host_dir.path())
        .map_err(err)?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    expect_eq(&format!("{host_entries:?}"), "[\"host-marker\"]")?;
    let inside = bundle
        .rootfs
        .join(host_dir.path().strip_prefix("/").map_err(err)?);
    if !inside.is_dir() {
        return Err(format!(
            "mount point {} was not created inside the rootfs",
            inside.display()
        ));
    }
    Ok(())
}

fn missing_bind_source() -> CaseResult {
    let bundle = Bundle::new()?;
    let mut spec = bundle.spec(&["true"]);
    add_mount(
        &mut spec,
        bind_mount("/mnt/x", Path::new("/nonexistent-capstan-source")),
    )?;
    let run = bundle.run(&spec)?;
    run.expect_error_containing("/nonexistent-capstan-source")
}

fn missing_executable() -> CaseResult {
    let bundle = Bundle::new()?;
    let spec = bundle.spec(&["no-such-command"]);
    let run = bundle.run(&spec)?;
    run.expect_error_containing("executable file `no-such-command` not found in $PATH")
}

fn missing_cwd() -> CaseResult {
    let bundle = Bundle::new()?;
    let mut spec = bundle.spec(&["true"]);
    process_mut(&mut spec).set_cwd(PathBuf::from("/no/such/dir"));
    let run = bundle.run(&spec)?;
    run.expect_error_containing("/no/such/dir")
}

fn user_namespace_refused() -> CaseResult {
    let bundle = Bundle::new()?;
    let mut spec = bundle.spec(&["true"]);
    let linux = linux_mut(&mut spec);
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    namespaces.push(
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::User)
            .build()
            .map_err(|e| e.to_string())?,
    );
    linux.set_namespaces(Some(namespaces));
    let run = bundle.run(&spec)?;
    run.expect_error_containing("user namespaces are not supported")
}

fn gate_eof() -> CaseResult {
    let bundle = Bundle::new()?;
    let spec = bundle.spec(&["sh", "-c", "echo ran"]);
    let mut container = Container::start(&bundle.dir, &spec)?;
    container.wait_ready()?;
    let run = container.cancel()?;
    expect_eq(&run.report, "R")?;
    expect_eq(&run.output, "")?;
    expect_eq(&run.status.to_string(), "0")
}

fn terminal() -> CaseResult {
    let bundle = Bundle::new()?;
    let mut spec = bundle.spec(&[
        "sh",
        "-c",
        "test -t 0 && echo stdin=tty; \
         test \"$(cut -d' ' -f7 /proc/self/stat)\" != 0 && echo ctty=yes; \
         test -e /dev/console && echo console=ok; \
         echo session=$(cut -d' ' -f6 /proc/self/stat)",
    ]);
    process_mut(&mut spec).set_terminal(Some(true));
    let run = bundle.run(&spec)?;
    run.expect_success()?;
    // The pty turns newlines into CR LF.
    expect_eq(
        run.output.replace('\r', "").trim(),
        "stdin=tty\nctty=yes\nconsole=ok\nsession=1",
    )
}

fn exec_joins_container() -> CaseResult {
    let bundle = Bundle::new()?;
    std::fs::write(bundle.rootfs.join("only-in-container"), "inside\n").map_err(err)?;
    let spec = bundle.spec(&["sleep", "30"]);
    let mut container = Container::start(&bundle.dir, &spec)?;
    container.wait_ready()?;
    container.open_gate()?;

    let script =
        "hostname; cat /only-in-container; echo pid1=$(tr '\\0' ' ' < /proc/1/cmdline); exit 3";
    let (status, output) = exec_in(&bundle, container.pid, &["sh", "-c", script])?;
    expect_eq(&output, &format!("{HOSTNAME}\ninside\npid1=sleep 30\n"))?;
    expect_eq(&status.to_string(), "3")?;

    let (status, output) = exec_in(&bundle, container.pid, &["no-such-command"])?;
    expect_eq(&status.to_string(), "127")?;
    expect_contains(
        &output,
        "capstan exec: executable file `no-such-command` not found in $PATH",
    )?;

    let (status, _) = exec_in(&bundle, container.pid, &["sh", "-c", "kill -9 $$"])?;
    expect_eq(&status.to_string(), "137")?;
    container.kill();
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Fixtures

/// A bundle directory with a busybox rootfs; removed on drop.
struct Bundle {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    rootfs: PathBuf,
}

impl Bundle {
    fn new() -> Result<Self, String> {
        let tmp = tempfile::Builder::new()
            .prefix("capstan-executor-")
            .tempdir()
            .map_err(err)?;
        let dir = std::fs::canonicalize(tmp.path()).map_err(err)?;
        let rootfs = dir.join("rootfs");
        for sub in [
            "bin",
            "etc",
            "proc",
            "sys",
            "dev",
            "tmp",
            "root",
            "home/user",
        ] {
            std::fs::create_dir_all(rootfs.join(sub)).map_err(err)?;
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).map_err(err)?;
        let list = std::process::Command::new("/bin/busybox")
            .arg("--list")
            .output()
            .map_err(err)?;
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" && !applet.is_empty() {
                symlink("busybox", rootfs.join("bin").join(applet)).map_err(err)?;
            }
        }
        std::fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n",
        )
        .map_err(err)?;
        std::fs::write(
            rootfs.join("etc/group"),
            "root:x:0:\nuser:x:1000:\nextra:x:2000:user\nother:x:3000:user\n",
        )
        .map_err(err)?;
        Ok(Self {
            _tmp: tmp,
            dir,
            rootfs,
        })
    }

    /// runc's default spec, writable root, a tmpfs on /tmp, running `args`.
    fn spec(&self, args: &[&str]) -> Spec {
        let mut spec = Spec::default();
        spec.set_hostname(Some(HOSTNAME.to_owned()));
        if let Some(root) = spec.root_mut() {
            root.set_readonly(Some(false));
        }
        let process = process_mut(&mut spec);
        process.set_args(Some(args.iter().map(|a| (*a).to_owned()).collect()));
        process.set_terminal(Some(false));
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        mounts.push(
            MountBuilder::default()
                .destination("/tmp")
                .typ("tmpfs")
                .source("tmpfs")
                .options(vec![
                    "nosuid".to_owned(),
                    "nodev".to_owned(),
                    "mode=1777".to_owned(),
                ])
                .build()
                .expect("static mount"),
        );
        spec.set_mounts(Some(mounts));
        spec
    }

    /// Runs `spec` to completion with the gate opened.
    fn run(&self, spec: &Spec) -> Result<Run, String> {
        let mut container = Container::start(&self.dir, spec)?;
        match container.wait_ready() {
            Ok(()) => container.release(),
            Err(_) => container.finish(),
        }
    }
}

fn process_mut(spec: &mut Spec) -> &mut Process {
    spec.process_mut()
        .as_mut()
        .expect("default spec has a process")
}

fn linux_mut(spec: &mut Spec) -> &mut oci_spec::runtime::Linux {
    spec.linux_mut().as_mut().expect("default spec has linux")
}

fn add_mount(spec: &mut Spec, mount: oci_spec::runtime::Mount) -> CaseResult {
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.push(mount);
    spec.set_mounts(Some(mounts));
    Ok(())
}

fn bind_mount(destination: &str, source: &Path) -> oci_spec::runtime::Mount {
    MountBuilder::default()
        .destination(destination)
        .typ("bind")
        .source(source)
        .options(vec!["rbind".to_owned(), "ro".to_owned()])
        .build()
        .expect("static mount")
}

/// A cgroup in every hierarchy, deleted on drop.
struct TestCgroup(Cgroup);

impl TestCgroup {
    fn create(name: &str) -> Result<Self, String> {
        Cgroup::new(hierarchies::auto(), name)
            .map(Self)
            .map_err(|e| format!("creating cgroup {name}: {e}"))
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if self.0.delete().is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("could not remove test cgroup {}", self.0.path());
    }
}

/// What a finished container left behind.
#[derive(Debug)]
struct Run {
    /// Everything written on the report pipe (`R`, `E...`).
    report: String,
    /// stdout and stderr.
    output: String,
    /// Exit code (128+signal when killed).
    status: i32,
}

impl Run {
    fn expect_success(&self) -> CaseResult {
        if self.status == 0 && self.report == "R" {
            Ok(())
        } else {
            Err(format!("container failed: {self:?}"))
        }
    }

    fn expect_error_containing(&self, needle: &str) -> CaseResult {
        if self.report.starts_with('E') && self.report.contains(needle) && self.status == 127 {
            Ok(())
        } else {
            Err(format!(
                "expected an E report naming {needle:?}, got {self:?}"
            ))
        }
    }
}

/// A container being set up or running: the intermediate process (new PID namespace,
/// reaps the container's init and exits with its status) and our ends of the pipes.
struct Container {
    /// The container's init, as a PID of our namespace.
    pid: i32,
    intermediate: Option<Pid>,
    report: Option<OwnedFd>,
    gate: Option<OwnedFd>,
    output: Option<OwnedFd>,
    report_text: String,
}

impl Container {
    fn start(bundle: &Path, spec: &Spec) -> Result<Self, String> {
        spec.save(bundle.join("config.json"))
            .map_err(|e| e.to_string())?;
        let (report_r, report_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(err)?;
        let (gate_r, gate_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(err)?;
        let terminal = spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        // With a terminal, the container's stdio is a pty slave, as the monitor sets it up.
        let (out_r, out_w) = if terminal {
            let pty = nix::pty::openpty(None, None).map_err(err)?;
            (pty.master, pty.slave)
        } else {
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(err)?
        };
        let (pid_r, pid_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(err)?;
        // SAFETY: the test binary is single-threaded (harness = false).
        match unsafe { fork() }.map_err(err)? {
            ForkResult::Child => {
                drop((report_r, gate_w, out_r, pid_r));
                intermediate(bundle, terminal, gate_r, report_w, out_w, pid_w)
            }
            ForkResult::Parent { child } => {
                drop((report_w, gate_r, out_w, pid_w));
                let mut container = Self {
                    pid: 0,
                    intermediate: Some(child),
                    report: Some(report_r),
                    gate: Some(gate_w),
                    output: Some(out_r),
                    report_text: String::new(),
                };
                let pid_bytes = read_to_end(&pid_r)?;
                container.pid = String::from_utf8_lossy(&pid_bytes)
                    .trim()
                    .parse()
                    .map_err(|_| "the intermediate process sent no pid".to_owned())?;
                Ok(container)
            }
        }
    }

    /// Waits for `R` (Ok) or `E`/EOF (Err, the report kept for `finish`).
    fn wait_ready(&mut self) -> CaseResult {
        let report = self.report.as_ref().ok_or("report already read")?;
        let first = read_some(report, 1)?;
        self.report_text.push_str(&String::from_utf8_lossy(&first));
        if first == b"R" {
            Ok(())
        } else {
            Err(format!("not ready: {:?}", self.report_text))
        }
    }

    fn open_gate(&mut self) -> CaseResult {
        let gate = self.gate.take().ok_or("gate already used")?;
        std::fs::File::from(gate).write_all(b"g").map_err(err)
    }

    /// Opens the gate and collects the run.
    fn release(mut self) -> Result<Run, String> {
        self.open_gate()?;
        self.finish()
    }

    /// Closes the gate without a byte and collects the run.
    fn cancel(mut self) -> Result<Run, String> {
        self.gate.take();
        self.finish()
    }

    /// Reads the rest of the report and the output, then reaps the intermediate.
    fn finish(mut self) -> Result<Run, String> {
        self.gate.take();
        if let Some(report) = self.report.take() {
            let rest = read_to_end(&report)?;
            self.report_text.push_str(&String::from_utf8_lossy(&rest));
        }
        let output = match self.output.take() {
            Some(fd) => String::from_utf8_lossy(&read_to_end(&fd)?).into_owned(),
            None => String::new(),
        };
        let intermediate = self.intermediate.take().ok_or("already reaped")?;
        let status = wait_status(intermediate)?;
        Ok(Run {
            report: std::mem::take(&mut self.report_text),
            output,
            status,
        })
    }

    fn kill(&mut self) {
        if self.pid > 0 {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
        if let Some(intermediate) = self.intermediate.take() {
            let _ = kill(intermediate, Signal::SIGKILL);
            let _ = waitpid(intermediate, None);
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The intermediate process: a new PID namespace for the container, like the monitor's
/// CLONE_NEWPID fork; reports the container's PID and exits with its status.
fn intermediate(
    bundle: &Path,
    terminal: bool,
    gate_r: OwnedFd,
    report_w: OwnedFd,
    out_w: OwnedFd,
    pid_w: OwnedFd,
) -> ! {
    if nix::sched::unshare(CloneFlags::CLONE_NEWPID).is_err() {
        exit_now(126);
    }
    // SAFETY: single-threaded.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(pid_w);
            let stdin = if terminal {
                out_w.try_clone()
            } else {
                std::fs::File::open("/dev/null").map(OwnedFd::from)
            };
            let redirected = stdin.is_ok_and(|stdin| dup_onto(&stdin, 0))
                && dup_onto(&out_w, 1)
                && dup_onto(&out_w, 2);
            drop(out_w);
            if !redirected {
                exit_now(126);
            }
            executor::init_container(bundle, gate_r, report_w)
        }
        Ok(ForkResult::Parent { child }) => {
            drop((gate_r, report_w, out_w));
            let _ = std::fs::File::from(pid_w).write_all(child.as_raw().to_string().as_bytes());
            exit_now(wait_status(child).unwrap_or(126))
        }
        Err(_) => exit_now(126),
    }
}

/// Runs `exec_main` against the container `pid` in a forked child, returning its exit
/// status and combined output.
fn exec_in(bundle: &Bundle, pid: i32, args: &[&str]) -> Result<(i32, String), String> {
    let mut process = Process::default();
    process.set_args(Some(args.iter().map(|a| (*a).to_owned()).collect()));
    process.set_terminal(Some(false));
    let process_file = bundle.dir.join("exec-process.json");
    std::fs::write(&process_file, serde_json::to_vec(&process).map_err(err)?).map_err(err)?;
    let (out_r, out_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(err)?;
    // SAFETY: single-threaded.
    match unsafe { fork() }.map_err(err)? {
        ForkResult::Child => {
            drop(out_r);
            if !(dup_onto(&out_w, 1) && dup_onto(&out_w, 2)) {
                exit_now(126);
            }
            drop(out_w);
            executor::exec_main(pid, &bundle.dir, &process_file)
        }
        ForkResult::Parent { child } => {
            drop(out_w);
            let output = read_to_end(&out_r);
            let status = wait_status(child)?;
            Ok((status, String::from_utf8_lossy(&output?).into_owned()))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Helpers

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn expect_eq(got: &str, want: &str) -> CaseResult {
    if got == want {
        Ok(())
    } else {
        Err(format!("expected\n{want}\ngot\n{got}"))
    }
}

fn expect_contains(haystack: &str, needle: &str) -> CaseResult {
    if haystack.contains(needle) {
        Ok(())
    } else {
        Err(format!("expected {needle:?} in\n{haystack}"))
    }
}

/// `CapEff:\t0000000000000400` → the value of a `/proc/<pid>/status` field.
fn status_field(status: &str, field: &str) -> Result<String, String> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_owned())
        .ok_or_else(|| format!("no {field} in\n{status}"))
}

fn cap_mask(caps: &[caps::Capability]) -> String {
    format!(
        "{:016x}",
        caps.iter().fold(0u64, |acc, c| acc | c.bitmask())
    )
}

fn dup_onto(fd: &OwnedFd, target: i32) -> bool {
    // SAFETY: dup2 onto a standard descriptor number of our own process.
    unsafe { libc::dup2(fd.as_raw_fd(), target) == target }
}

fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns; a forked child must not run the parent's destructors.
    unsafe { libc::_exit(code) }
}

fn wait_status(pid: Pid) -> Result<i32, String> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(128 + signal as i32),
            Ok(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(_) => {
                let _ = kill(pid, Signal::SIGKILL);
                return Err(format!("process {pid} did not exit in time"));
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("waiting for {pid}: {e}")),
        }
    }
}

/// Reads at most `max` bytes once data (or EOF) is there, within the timeout.
fn read_some(fd: &OwnedFd, max: usize) -> Result<Vec<u8>, String> {
    wait_readable(fd, Instant::now() + TIMEOUT)?;
    let mut buf = vec![0u8; max];
    let n = nix::unistd::read(fd.as_fd(), &mut buf).map_err(err)?;
    buf.truncate(n);
    Ok(buf)
}

/// Reads until EOF, within the timeout.
fn read_to_end(fd: &OwnedFd) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + TIMEOUT;
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        wait_readable(fd, deadline)?;
        match nix::unistd::read(fd.as_fd(), &mut buf) {
            // EIO: a pty master whose slave is closed everywhere.
            Ok(0) | Err(nix::errno::Errno::EIO) => return Ok(all),
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn wait_readable(fd: &OwnedFd, deadline: Instant) -> CaseResult {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out reading from the container".into());
        }
        let millis = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
    }
}
