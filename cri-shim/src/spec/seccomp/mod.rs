//! The seccomp filter: none, Capstan's default profile, or a profile file from the node.

mod default;
mod profile;

use std::path::PathBuf;

use k8s_cri::v1::security_profile::ProfileType;
use k8s_cri::v1::LinuxContainerSecurityContext;
use oci_spec::runtime::{Arch, LinuxSeccomp};

use super::capabilities::CapabilityPlan;
use super::SpecError;

/// Which profile the CRI config asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Requested {
    /// No filter.
    Unconfined,
    /// Capstan's default profile.
    RuntimeDefault,
    /// A Docker/OCI JSON profile at this host path.
    Localhost(PathBuf),
}

/// The CRI `seccomp` SecurityProfile, else the deprecated `seccomp_profile_path`
/// ("runtime/default", "docker/default", "unconfined", "localhost/<path>", "" = unconfined).
pub(crate) fn requested(
    sc: Option<&LinuxContainerSecurityContext>,
) -> Result<Requested, SpecError> {
    let Some(sc) = sc else {
        return Ok(Requested::Unconfined);
    };
    if let Some(profile) = &sc.seccomp {
        return match ProfileType::try_from(profile.profile_type) {
            Ok(ProfileType::Unconfined) => Ok(Requested::Unconfined),
            Ok(ProfileType::RuntimeDefault) => Ok(Requested::RuntimeDefault),
            Ok(ProfileType::Localhost) if profile.localhost_ref.is_empty() => Err(
                SpecError::field("seccomp", "Localhost profile without localhost_ref"),
            ),
            Ok(ProfileType::Localhost) => {
                Ok(Requested::Localhost(PathBuf::from(&profile.localhost_ref)))
            }
            Err(_) => Err(SpecError::UnknownSeccompProfile(format!(
                "profile type {}",
                profile.profile_type
            ))),
        };
    }
    #[allow(deprecated)]
    let path = sc.seccomp_profile_path.as_str();
    match path {
        "" | "unconfined" => Ok(Requested::Unconfined),
        "runtime/default" | "docker/default" => Ok(Requested::RuntimeDefault),
        _ => match path.strip_prefix("localhost/") {
            Some(file) if !file.is_empty() => Ok(Requested::Localhost(PathBuf::from(file))),
            _ => Err(SpecError::UnknownSeccompProfile(path.to_owned())),
        },
    }
}

/// `linux.seccomp` for the container. Privileged containers run unconfined unless a
/// Localhost profile names a filter explicitly (RuntimeDefault may be a node-wide default
/// the kubelet applies to every container, which privileged ones are exempt from).
pub(crate) fn build(
    sc: Option<&LinuxContainerSecurityContext>,
    privileged: bool,
    caps: &CapabilityPlan,
) -> Result<Option<LinuxSeccomp>, SpecError> {
    match requested(sc)? {
        Requested::Unconfined => Ok(None),
        Requested::RuntimeDefault if privileged => Ok(None),
        Requested::RuntimeDefault => Ok(Some(default::profile(caps))),
        Requested::Localhost(path) => profile::load(&path, caps).map(Some),
    }
}

/// Architectures a filter for this host must cover: the native one and the compat ABIs it
/// can also execute.
fn native_architectures() -> Vec<Arch> {
    match std::env::consts::ARCH {
        "x86_64" => vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
        "aarch64" => vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm],
        "riscv64" => vec![Arch::ScmpArchRiscv64],
        "s390x" => vec![Arch::ScmpArchS390x, Arch::ScmpArchS390],
        "powerpc64" if cfg!(target_endian = "little") => vec![Arch::ScmpArchPpc64le],
        "loongarch64" => vec![Arch::ScmpArchLoongarch64],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::SecurityProfile;

    fn sc_with(profile: Option<SecurityProfile>, path: &str) -> LinuxContainerSecurityContext {
        #[allow(deprecated)]
        LinuxContainerSecurityContext {
            seccomp: profile,
            seccomp_profile_path: path.into(),
            ..Default::default()
        }
    }

    fn profile(t: ProfileType, r: &str) -> Option<SecurityProfile> {
        Some(SecurityProfile {
            profile_type: t as i32,
            localhost_ref: r.into(),
        })
    }

    #[test]
    fn profile_field_wins_over_deprecated_path() {
        let sc = sc_with(profile(ProfileType::Unconfined, ""), "runtime/default");
        assert_eq!(requested(Some(&sc)).unwrap(), Requested::Unconfined);
        let sc = sc_with(profile(ProfileType::RuntimeDefault, ""), "");
        assert_eq!(requested(Some(&sc)).unwrap(), Requested::RuntimeDefault);
        let sc = sc_with(profile(ProfileType::Localhost, "/p.json"), "");
        assert_eq!(
            requested(Some(&sc)).unwrap(),
            Requested::Localhost("/p.json".into())
        );
        let sc = sc_with(profile(ProfileType::Localhost, ""), "");
        assert!(requested(Some(&sc)).is_err());
    }

    #[test]
    fn deprecated_path_strings() {
        let cases = [
            ("", Requested::Unconfined),
            ("unconfined", Requested::Unconfined),
            ("runtime/default", Requested::RuntimeDefault),
            ("docker/default", Requested::RuntimeDefault),
            (
                "localhost//etc/p.json",
                Requested::Localhost("/etc/p.json".into()),
            ),
        ];
        for (path, want) in cases {
            assert_eq!(
                requested(Some(&sc_with(None, path))).unwrap(),
                want,
                "{path}"
            );
        }
        let err = requested(Some(&sc_with(None, "bogus"))).unwrap_err();
        assert!(err.to_string().contains("bogus"));
        assert_eq!(requested(None).unwrap(), Requested::Unconfined);
    }

    #[test]
    fn privileged_ignores_runtime_default_but_not_localhost() {
        let caps = CapabilityPlan::default();
        let sc = sc_with(profile(ProfileType::RuntimeDefault, ""), "");
        assert!(build(Some(&sc), true, &caps).unwrap().is_none());
        assert!(build(Some(&sc), false, &caps).unwrap().is_some());
        let sc = sc_with(profile(ProfileType::Localhost, "/nonexistent/p.json"), "");
        assert!(build(Some(&sc), true, &caps).is_err());
    }
}
