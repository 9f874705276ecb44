//! Localhost seccomp profiles: Docker/OCI JSON files on the node.

use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag, LinuxSyscall,
};
use serde::Deserialize;

use super::native_architectures;
use crate::spec::capabilities::CapabilityPlan;
use crate::spec::SpecError;

/// Most bytes read from a profile file (Docker's own default profile is ~20 KiB).
const MAX_PROFILE_BYTES: u64 = 4 << 20;

/// The JSON shape: OCI `linux.seccomp` plus Docker's `name`, `archMap` and conditional
/// `includes`/`excludes`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProfileFile {
    default_action: LinuxSeccompAction,
    default_errno_ret: Option<u32>,
    architectures: Option<Vec<String>>,
    arch_map: Option<Vec<ArchMapEntry>>,
    flags: Option<Vec<LinuxSeccompFilterFlag>>,
    listener_path: Option<PathBuf>,
    listener_metadata: Option<String>,
    syscalls: Option<Vec<SyscallRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMapEntry {
    architecture: String,
    sub_architectures: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SyscallRule {
    name: Option<String>,
    names: Option<Vec<String>>,
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    args: Option<Vec<LinuxSeccompArg>>,
    #[serde(default)]
    includes: Condition,
    #[serde(default)]
    excludes: Condition,
}

/// Docker's rule conditions: capabilities held, CPU architecture (Go names), kernel version.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Condition {
    caps: Option<Vec<String>>,
    arches: Option<Vec<String>>,
    min_kernel: Option<String>,
}

/// Read and convert the profile at `path` for a process holding `caps`.
pub(super) fn load(path: &Path, caps: &CapabilityPlan) -> Result<LinuxSeccomp, SpecError> {
    let read_err = |source| SpecError::SeccompProfileRead {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(read_err)?
        .take(MAX_PROFILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    let invalid = |reason: String| SpecError::SeccompProfileInvalid {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() as u64 > MAX_PROFILE_BYTES {
        return Err(invalid(format!("larger than {MAX_PROFILE_BYTES} bytes")));
    }
    let file: ProfileFile = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
    convert(file, caps, &Host::current()).map_err(invalid)
}

/// Facts about the node the conditions are evaluated against.
struct Host {
    /// Go's GOARCH name for this CPU (Docker profiles use these in `arches`).
    go_arch: &'static str,
    /// Kernel (major, minor).
    kernel: (u32, u32),
}

impl Host {
    fn current() -> Self {
        let go_arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "powerpc64" => "ppc64",
            "loongarch64" => "loong64",
            other => other,
        };
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .and_then(|r| parse_kernel(&r))
            .unwrap_or((0, 0));
        Self { go_arch, kernel }
    }
}

fn parse_kernel(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

fn convert(file: ProfileFile, caps: &CapabilityPlan, host: &Host) -> Result<LinuxSeccomp, String> {
    let arch_names = match (file.architectures, file.arch_map) {
        (Some(archs), _) if !archs.is_empty() => archs,
        (_, Some(map)) => {
            let native: Vec<String> = native_architectures()
                .into_iter()
                .filter_map(|a| serde_json::to_value(a).ok())
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            map.into_iter()
                .filter(|e| native.first() == Some(&e.architecture))
                .flat_map(|e| {
                    std::iter::once(e.architecture).chain(e.sub_architectures.unwrap_or_default())
                })
                .collect()
        }
        _ => Vec::new(),
    };
    let architectures = arch_names
        .iter()
        .map(|name| {
            serde_json::from_value::<Arch>(serde_json::Value::String(name.clone()))
                .map_err(|_| format!("unknown architecture {name:?}"))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let mut syscalls = Vec::new();
    for (i, rule) in file.syscalls.unwrap_or_default().into_iter().enumerate() {
        if !applies(&rule, caps, host)? {
            continue;
        }
        let names: Vec<String> = rule
            .name
            .into_iter()
            .chain(rule.names.unwrap_or_default())
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() {
            return Err(format!("syscalls[{i}] names no system call"));
        }
        let mut out = LinuxSyscall::default();
        out.set_names(names)
            .set_action(rule.action)
            .set_errno_ret(rule.errno_ret)
            .set_args(rule.args.filter(|a| !a.is_empty()));
        syscalls.push(out);
    }

    let mut seccomp = LinuxSeccomp::default();
    seccomp
        .set_default_action(file.default_action)
        .set_default_errno_ret(file.default_errno_ret)
        .set_architectures((!architectures.is_empty()).then_some(architectures))
        .set_flags(file.flags.filter(|f| !f.is_empty()))
        .set_listener_path(file.listener_path)
        .set_listener_metadata(file.listener_metadata)
        .set_syscalls((!syscalls.is_empty()).then_some(syscalls));
    Ok(seccomp)
}

/// Docker semantics: every `includes` condition must hold, no `excludes` condition may.
fn applies(rule: &SyscallRule, caps: &CapabilityPlan, host: &Host) -> Result<bool, String> {
    let inc = &rule.includes;
    if let Some(needed) = &inc.caps {
        if !needed.iter().all(|c| caps.has(c)) {
            return Ok(false);
        }
    }
    if let Some(arches) = inc.arches.as_ref().filter(|a| !a.is_empty()) {
        if !arches.iter().any(|a| a == host.go_arch) {
            return Ok(false);
        }
    }
    if let Some(min) = inc.min_kernel.as_deref().filter(|m| !m.is_empty()) {
        let min = parse_kernel(min).ok_or_else(|| format!("invalid minKernel {min:?}"))?;
        if host.kernel < min {
            return Ok(false);
        }
    }
    let exc = &rule.excludes;
    if exc
        .caps
        .as_ref()
        .is_some_and(|c| c.iter().any(|c| caps.has(c)))
    {
        return Ok(false);
    }
    if exc
        .arches
        .as_ref()
        .is_some_and(|a| a.iter().any(|a| a == host.go_arch))
    {
        return Ok(false);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::capabilities;
    use std::io::Write;

    fn write(json: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(json.as_bytes()).unwrap();
        f
    }

    fn default_caps() -> CapabilityPlan {
        capabilities::build(None, false, &capabilities::every_capability()).unwrap()
    }

    #[test]
    fn loads_an_oci_profile() {
        let f = write(
            r#"{
              "defaultAction": "SCMP_ACT_ERRNO",
              "defaultErrnoRet": 38,
              "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
              "flags": ["SECCOMP_FILTER_FLAG_LOG"],
              "syscalls": [
                {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                {"name": "personality", "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "comment": "x"}
              ]
            }"#,
        );
        let p = load(f.path(), &default_caps()).unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), Some(38));
        assert_eq!(
            p.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchAarch64][..])
        );
        assert_eq!(
            p.flags().as_deref(),
            Some(&[LinuxSeccompFilterFlag::SeccompFilterFlagLog][..])
        );
        let calls = p.syscalls().as_ref().unwrap();
        assert_eq!(calls.len(), 3);
        assert_eq!(calls[0].names(), &["read", "write"]);
        assert_eq!(calls[1].names(), &["personality"]);
        assert_eq!(calls[1].args().as_ref().unwrap()[0].value(), 8);
        assert_eq!(calls[2].errno_ret(), Some(1));
    }

    #[test]
    fn docker_conditions_and_arch_map() {
        let f = write(
            r#"{
              "defaultAction": "SCMP_ACT_ERRNO",
              "archMap": [
                {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
                {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}
              ],
              "syscalls": [
                {"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": null},
                {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["chown"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_CHOWN"]}},
                {"names": ["archonly"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["nonexistent-arch"]}},
                {"names": ["oldkernel"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "2.6"}},
                {"names": ["futurekernel"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "999.0"}}
              ]
            }"#,
        );
        let p = load(f.path(), &default_caps()).unwrap();
        let names: Vec<&str> = p
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .flat_map(|s| s.names().iter().map(String::as_str))
            .collect();
        assert_eq!(names, ["read", "oldkernel"]);
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(
                p.architectures().as_deref(),
                Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
            );
        }
        let admin = capabilities::build(
            Some(&k8s_cri::v1::Capability {
                add_capabilities: vec!["SYS_ADMIN".into()],
                ..Default::default()
            }),
            false,
            &capabilities::every_capability(),
        )
        .unwrap();
        let p = load(f.path(), &admin).unwrap();
        assert!(p
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .any(|s| s.names() == &["mount".to_owned()]));
    }

    #[test]
    fn missing_and_invalid_files_name_the_path() {
        let err = load(
            Path::new("/nonexistent/capstan/profile.json"),
            &default_caps(),
        )
        .unwrap_err();
        assert!(matches!(err, SpecError::SeccompProfileRead { .. }));
        assert!(err
            .to_string()
            .contains("/nonexistent/capstan/profile.json"));

        for bad in [
            "not json",
            r#"{"syscalls": []}"#,
            r#"{"defaultAction": "SCMP_ACT_BOGUS"}"#,
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"]}"#,
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"action": "SCMP_ACT_ERRNO"}]}"#,
        ] {
            let f = write(bad);
            let err = load(f.path(), &default_caps()).unwrap_err();
            assert!(
                matches!(&err, SpecError::SeccompProfileInvalid { path, .. } if path == f.path()),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains(&f.path().display().to_string()));
        }
    }

    #[test]
    fn kernel_release_parsing() {
        assert_eq!(parse_kernel("6.18.44-fc-v470\n"), Some((6, 18)));
        assert_eq!(parse_kernel("4.8"), Some((4, 8)));
        assert_eq!(parse_kernel("5"), Some((5, 0)));
        assert_eq!(parse_kernel("x"), None);
    }
}
