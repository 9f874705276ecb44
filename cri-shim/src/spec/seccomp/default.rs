//! Capstan's RuntimeDefault seccomp profile.
//!
//! Everything is allowed except system calls that reach kernel state a container does not
//! own (modules, kexec, reboot, swap, the keyring, clock, accounting, raw I/O, BPF, perf,
//! io_uring) or that create or enter namespaces and mounts. A rule tied to a capability is
//! lifted when the container holds it, so adding e.g. SYS_ADMIN or SYS_TIME keeps working.
//! A deny list rather than an allow list: an allow list turns every syscall newer than the
//! list (clone3, faccessat2, ...) into EPERM, which breaks ordinary programs whose libc
//! only falls back on ENOSYS.

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall,
};

use super::native_architectures;
use crate::spec::capabilities::CapabilityPlan;

/// Denied system calls and the capabilities (any one suffices) that lift the denial.
const DENIED: &[(&[&str], &[&str])] = &[
    (
        &[
            "kexec_load",
            "kexec_file_load",
            "create_module",
            "get_kernel_syms",
            "query_module",
            "nfsservctl",
            "uselib",
            "vm86",
            "vm86old",
            "_sysctl",
            "keyctl",
            "add_key",
            "request_key",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
        ],
        &[],
    ),
    (
        &["init_module", "finit_module", "delete_module"],
        &["SYS_MODULE"],
    ),
    (&["reboot"], &["SYS_BOOT"]),
    (
        &[
            "mount",
            "umount",
            "umount2",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "pivot_root",
            "unshare",
            "setns",
            "swapon",
            "swapoff",
            "quotactl",
            "quotactl_fd",
            "lookup_dcookie",
            "fanotify_init",
        ],
        &["SYS_ADMIN"],
    ),
    (&["bpf"], &["SYS_ADMIN", "BPF"]),
    (&["perf_event_open"], &["SYS_ADMIN", "PERFMON"]),
    (&["open_by_handle_at"], &["DAC_READ_SEARCH"]),
    (
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
        &["SYS_TIME"],
    ),
    (&["acct"], &["SYS_PACCT"]),
    (&["iopl", "ioperm"], &["SYS_RAWIO"]),
    (&["syslog"], &["SYSLOG"]),
    (&["vhangup"], &["SYS_TTY_CONFIG"]),
    (&["kcmp", "pidfd_getfd", "process_madvise"], &["SYS_PTRACE"]),
];

/// clone(2) flags that create namespaces.
const CLONE_NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];

/// The default profile for a process holding `caps`.
pub(super) fn profile(caps: &CapabilityPlan) -> LinuxSeccomp {
    let mut syscalls = Vec::new();
    for (names, lifted_by) in DENIED {
        if !lifted_by.iter().any(|c| caps.has(c)) {
            syscalls.push(errno(names, libc::EPERM, None));
        }
    }
    if !caps.has("SYS_ADMIN") {
        // clone's flags register is the second argument on s390.
        let index: usize = if cfg!(target_arch = "s390x") { 1 } else { 0 };
        for flag in CLONE_NAMESPACE_FLAGS {
            let arg = LinuxSeccompArgBuilder::default()
                .index(index)
                .value(*flag)
                .value_two(*flag)
                .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                .build()
                // Every field is set and the builder has no validator.
                .expect("seccomp arg builder cannot fail");
            syscalls.push(errno(&["clone"], libc::EPERM, Some(vec![arg])));
        }
        // clone3 passes its flags in memory a filter cannot inspect; ENOSYS makes libc
        // fall back to clone, which the rules above do check.
        syscalls.push(errno(&["clone3"], libc::ENOSYS, None));
    }
    let mut seccomp = LinuxSeccomp::default();
    let arches = native_architectures();
    seccomp
        .set_default_action(LinuxSeccompAction::ScmpActAllow)
        .set_architectures((!arches.is_empty()).then_some(arches))
        .set_syscalls(Some(syscalls));
    seccomp
}

fn errno(names: &[&str], errno: i32, args: Option<Vec<LinuxSeccompArg>>) -> LinuxSyscall {
    let mut rule = LinuxSyscall::default();
    rule.set_names(names.iter().map(|n| (*n).to_owned()).collect())
        .set_action(LinuxSeccompAction::ScmpActErrno)
        .set_errno_ret(Some(errno as u32))
        .set_args(args);
    rule
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::capabilities;

    fn denied(profile: &LinuxSeccomp, name: &str) -> bool {
        profile
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .any(|s| s.names().iter().any(|n| n == name))
    }

    #[test]
    fn default_caps_deny_dangerous_calls_and_allow_the_rest() {
        let caps = capabilities::build(None, false, &capabilities::every_capability()).unwrap();
        let p = profile(&caps);
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActAllow);
        for name in [
            "kexec_load",
            "init_module",
            "finit_module",
            "delete_module",
            "reboot",
            "swapon",
            "mount",
            "umount2",
            "unshare",
            "setns",
            "bpf",
            "perf_event_open",
            "keyctl",
            "add_key",
            "request_key",
            "clone",
            "clone3",
        ] {
            assert!(denied(&p, name), "{name} should be denied");
        }
        for name in [
            "read", "execve", "fork", "ptrace", "chown", "chroot", "socket",
        ] {
            assert!(!denied(&p, name), "{name} should be allowed");
        }
        let clone3 = p
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .find(|s| s.names().contains(&"clone3".to_owned()))
            .unwrap();
        assert_eq!(clone3.errno_ret(), Some(libc::ENOSYS as u32));
        let clone_rules: Vec<_> = p
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|s| s.names() == &["clone".to_owned()])
            .collect();
        assert_eq!(clone_rules.len(), CLONE_NAMESPACE_FLAGS.len());
        let arg = clone_rules[0].args().as_ref().unwrap()[0];
        assert_eq!(arg.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        assert_eq!(Some(arg.value()), arg.value_two());
    }

    #[test]
    fn capabilities_lift_their_rules() {
        let cri = k8s_cri::v1::Capability {
            add_capabilities: vec!["SYS_ADMIN".into(), "SYS_TIME".into()],
            ..Default::default()
        };
        let caps =
            capabilities::build(Some(&cri), false, &capabilities::every_capability()).unwrap();
        let p = profile(&caps);
        for name in [
            "mount",
            "unshare",
            "setns",
            "bpf",
            "settimeofday",
            "clone",
            "clone3",
        ] {
            assert!(
                !denied(&p, name),
                "{name} should be allowed with SYS_ADMIN/SYS_TIME"
            );
        }
        assert!(denied(&p, "kexec_load") && denied(&p, "init_module"));
    }
}
