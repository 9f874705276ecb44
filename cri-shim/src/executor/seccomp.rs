//! `linux.seccomp` compiled into a BPF filter with libseccomp.

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator,
};

use super::error::{ExecutorError, Result};

/// Highest argument index a syscall has.
const MAX_ARG_INDEX: usize = 5;

/// Builds the filter of a spec profile. Syscall names libseccomp does not know are
/// skipped (profiles list syscalls of other kernels and architectures).
pub fn build(profile: &LinuxSeccomp) -> Result<ScmpFilterContext> {
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let mut filter = ScmpFilterContext::new(default).map_err(|e| error("creating filter", e))?;
    // no_new_privs is the spec's decision (noNewPrivileges), made by the caller;
    // libseccomp would otherwise set it on load.
    filter
        .set_ctl_nnp(false)
        .map_err(|e| error("clearing the no_new_privs attribute", e))?;
    for arch in profile.architectures().as_deref().unwrap_or_default() {
        filter
            .add_arch(architecture(*arch))
            .map_err(|e| error(&format!("adding architecture {arch}"), e))?;
    }
    for flag in profile.flags().as_deref().unwrap_or_default() {
        match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => filter.set_ctl_log(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => filter.set_ctl_ssb(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => filter.set_ctl_tsync(true),
            // Only meaningful with a notify listener, which is refused below.
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => Ok(&mut filter),
        }
        .map_err(|e| error(&format!("setting flag {flag}"), e))?;
    }
    for rule in profile.syscalls().as_deref().unwrap_or_default() {
        let rule_action = action(rule.action(), rule.errno_ret())?;
        // libseccomp refuses rules that repeat the default action; they change nothing.
        if rule_action == default {
            continue;
        }
        let conditions = conditions(rule.args().as_deref().unwrap_or_default())?;
        for name in rule.names() {
            let Ok(syscall) = ScmpSyscall::from_name(name) else {
                continue;
            };
            for condition in &conditions {
                filter
                    .add_rule_conditional(rule_action, syscall, condition)
                    .map_err(|e| error(&format!("adding a rule for {name}"), e))?;
            }
        }
    }
    Ok(filter)
}

/// Installs the filter on the calling thread.
pub fn load(filter: &ScmpFilterContext) -> Result<()> {
    filter.load().map_err(|e| error("loading the filter", e))
}

/// The libseccomp action of a spec action; `errno_ret` defaults to EPERM.
pub fn action(action: LinuxSeccompAction, errno_ret: Option<u32>) -> Result<ScmpAction> {
    let value = || -> Result<u16> {
        let value = errno_ret.unwrap_or(libc::EPERM as u32);
        u16::try_from(value).map_err(|_| {
            ExecutorError::Invalid(format!("seccomp: errnoRet {value} is out of range"))
        })
    };
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(i32::from(value()?)),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(value()?),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(ExecutorError::Invalid(
                "seccomp: SCMP_ACT_NOTIFY is not supported (no listener)".into(),
            ))
        }
    })
}

/// The libseccomp comparison of one spec argument condition. For `SCMP_CMP_MASKED_EQ`
/// the spec's `value` is the mask and `valueTwo` the expected value.
pub fn compare(arg: &LinuxSeccompArg) -> Result<ScmpArgCompare> {
    if arg.index() > MAX_ARG_INDEX {
        return Err(ExecutorError::Invalid(format!(
            "seccomp: argument index {} is out of range",
            arg.index()
        )));
    }
    let (op, datum) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => (ScmpCompareOp::NotEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (ScmpCompareOp::Less, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpEq => (ScmpCompareOp::Equal, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (ScmpCompareOp::Greater, arg.value()),
        LinuxSeccompOperator::ScmpCmpMaskedEq => (
            ScmpCompareOp::MaskedEqual(arg.value()),
            arg.value_two().unwrap_or(0),
        ),
    };
    Ok(ScmpArgCompare::new(arg.index() as u32, op, datum))
}

/// The rules one spec syscall entry becomes, each a list of AND-ed comparisons.
/// libseccomp compares an argument at most once per rule, so conditions repeating an
/// index become one rule each (any of them matching triggers the action), as runc does.
pub fn conditions(args: &[LinuxSeccompArg]) -> Result<Vec<Vec<ScmpArgCompare>>> {
    let compared = args.iter().map(compare).collect::<Result<Vec<_>>>()?;
    if compared.is_empty() {
        return Ok(vec![Vec::new()]);
    }
    let mut indexes: Vec<usize> = args.iter().map(|a| a.index()).collect();
    indexes.sort_unstable();
    indexes.dedup();
    if indexes.len() == args.len() {
        Ok(vec![compared])
    } else {
        Ok(compared.into_iter().map(|c| vec![c]).collect())
    }
}

/// The libseccomp token of a spec architecture.
pub fn architecture(arch: Arch) -> ScmpArch {
    match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

fn error(what: &str, e: impl std::fmt::Display) -> ExecutorError {
    ExecutorError::Seccomp {
        what: what.to_owned(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSyscallBuilder};

    fn arg(
        index: usize,
        op: LinuxSeccompOperator,
        value: u64,
        two: Option<u64>,
    ) -> LinuxSeccompArg {
        let builder = LinuxSeccompArgBuilder::default()
            .index(index)
            .op(op)
            .value(value);
        match two {
            Some(two) => builder.value_two(two).build(),
            None => builder.build(),
        }
        .expect("arg")
    }

    /// The filter in libseccomp's pseudo-filter-code text.
    fn pfc(filter: &ScmpFilterContext) -> String {
        let file = tempfile::tempfile().expect("tempfile");
        filter.export_pfc(&file).expect("export");
        let mut file = file;
        use std::io::{Read, Seek};
        file.rewind().expect("rewind");
        let mut text = String::new();
        file.read_to_string(&mut text).expect("read");
        text
    }

    #[test]
    fn actions_and_errno_defaults() {
        assert_eq!(
            action(LinuxSeccompAction::ScmpActErrno, None).expect("errno"),
            ScmpAction::Errno(libc::EPERM)
        );
        assert_eq!(
            action(LinuxSeccompAction::ScmpActErrno, Some(38)).expect("errno"),
            ScmpAction::Errno(38)
        );
        assert_eq!(
            action(LinuxSeccompAction::ScmpActKill, None).expect("kill"),
            ScmpAction::KillThread
        );
        assert_eq!(
            action(LinuxSeccompAction::ScmpActKillProcess, None).expect("kill"),
            ScmpAction::KillProcess
        );
        assert_eq!(
            action(LinuxSeccompAction::ScmpActTrace, Some(7)).expect("trace"),
            ScmpAction::Trace(7)
        );
        assert!(action(LinuxSeccompAction::ScmpActNotify, None).is_err());
        assert!(action(LinuxSeccompAction::ScmpActErrno, Some(70_000)).is_err());
    }

    #[test]
    fn unknown_action_names_do_not_parse() {
        let json = r#"{"defaultAction":"SCMP_ACT_EXPLODE"}"#;
        assert!(serde_json::from_str::<LinuxSeccomp>(json).is_err());
    }

    #[test]
    fn operators() {
        let cmp = compare(&arg(1, LinuxSeccompOperator::ScmpCmpGe, 10, None)).expect("ge");
        assert_eq!(cmp, ScmpArgCompare::new(1, ScmpCompareOp::GreaterEqual, 10));
        let masked = compare(&arg(
            2,
            LinuxSeccompOperator::ScmpCmpMaskedEq,
            0xf0,
            Some(0x10),
        ))
        .expect("masked");
        assert_eq!(
            masked,
            ScmpArgCompare::new(2, ScmpCompareOp::MaskedEqual(0xf0), 0x10)
        );
        assert!(compare(&arg(6, LinuxSeccompOperator::ScmpCmpEq, 0, None)).is_err());
    }

    #[test]
    fn repeated_indexes_become_separate_rules() {
        let distinct = conditions(&[
            arg(0, LinuxSeccompOperator::ScmpCmpEq, 1, None),
            arg(1, LinuxSeccompOperator::ScmpCmpEq, 2, None),
        ])
        .expect("conditions");
        assert_eq!(distinct.len(), 1);
        assert_eq!(distinct[0].len(), 2);
        let repeated = conditions(&[
            arg(0, LinuxSeccompOperator::ScmpCmpEq, 1, None),
            arg(0, LinuxSeccompOperator::ScmpCmpEq, 2, None),
        ])
        .expect("conditions");
        assert_eq!(repeated.len(), 2);
        assert_eq!(conditions(&[]).expect("none"), vec![Vec::new()]);
    }

    #[test]
    fn profile_compiles_known_syscalls_and_skips_unknown_ones() {
        let rule = LinuxSyscallBuilder::default()
            .names(vec![
                "mkdir".to_string(),
                "no_such_syscall_anywhere".to_string(),
            ])
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(1u32)
            .build()
            .expect("rule");
        let same_as_default = LinuxSyscallBuilder::default()
            .names(vec!["getpid".to_string()])
            .action(LinuxSeccompAction::ScmpActAllow)
            .build()
            .expect("rule");
        let profile = LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActAllow)
            .architectures(vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86])
            .syscalls(vec![rule, same_as_default])
            .build()
            .expect("profile");
        let filter = build(&profile).expect("build");
        assert!(!filter.get_ctl_nnp().expect("nnp attribute"));
        let text = pfc(&filter);
        assert!(text.contains("mkdir"), "{text}");
        assert!(text.contains("ERRNO(1)"), "{text}");
        assert!(!text.contains("getpid"), "{text}");
    }
}
