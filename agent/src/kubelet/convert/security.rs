//! Security settings: namespaces, users and groups, capabilities, seccomp and AppArmor
//! (`determineEffectiveSecurityContext`, `NamespacesForPod`, `getSeccompProfile`).

use std::path::{Component, Path};

use k8s_cri::v1::{
    security_profile::ProfileType, Capability, Int64Value, LinuxContainerSecurityContext,
    LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, SeLinuxOption, SecurityProfile,
    SupplementalGroupsPolicy, UserNamespace,
};
use k8s_openapi::api::core::v1::{
    Container, Pod, PodSecurityContext, SELinuxOptions, SeccompProfile, SecurityContext,
};

use super::error::ConvertError;
use super::{container_path, NodeInfo};

/// Namespace modes for the pod (host network/PID/IPC, shared PID namespace).
pub fn namespace_options(pod: &Pod) -> Result<NamespaceOption, ConvertError> {
    let spec = pod.spec.as_ref();
    let flag = |f: fn(&k8s_openapi::api::core::v1::PodSpec) -> Option<bool>| {
        spec.and_then(f).unwrap_or(false)
    };
    if spec.and_then(|s| s.host_users) == Some(false) {
        return Err(ConvertError::invalid(
            "spec.hostUsers",
            "user namespaces are not supported on this node",
        ));
    }
    let mode = |host: bool, otherwise: NamespaceMode| {
        (if host { NamespaceMode::Node } else { otherwise }) as i32
    };
    let pid = if flag(|s| s.host_pid) {
        NamespaceMode::Node
    } else if flag(|s| s.share_process_namespace) {
        NamespaceMode::Pod
    } else {
        NamespaceMode::Container
    };
    Ok(NamespaceOption {
        network: mode(flag(|s| s.host_network), NamespaceMode::Pod),
        pid: pid as i32,
        ipc: mode(flag(|s| s.host_ipc), NamespaceMode::Pod),
        target_id: String::new(),
        userns_options: Some(UserNamespace {
            mode: NamespaceMode::Node as i32,
            ..Default::default()
        }),
    })
}

fn pod_sc(pod: &Pod) -> Option<&PodSecurityContext> {
    pod.spec.as_ref().and_then(|s| s.security_context.as_ref())
}

/// fsGroup, then supplementalGroups (the order the kubelet appends them in).
fn supplemental_groups(pod: &Pod) -> Vec<i64> {
    let sc = pod_sc(pod);
    sc.and_then(|s| s.fs_group)
        .into_iter()
        .chain(
            sc.and_then(|s| s.supplemental_groups.clone())
                .into_iter()
                .flatten(),
        )
        .collect()
}

fn supplemental_groups_policy(pod: &Pod) -> Result<i32, ConvertError> {
    match pod_sc(pod).and_then(|s| s.supplemental_groups_policy.as_deref()) {
        None | Some("Merge") => Ok(SupplementalGroupsPolicy::Merge as i32),
        Some("Strict") => Ok(SupplementalGroupsPolicy::Strict as i32),
        Some(other) => Err(ConvertError::invalid(
            "spec.securityContext.supplementalGroupsPolicy",
            format!("unsupported supplementalGroupsPolicy: {other}"),
        )),
    }
}

fn selinux(options: Option<&SELinuxOptions>) -> Option<SeLinuxOption> {
    options.map(|o| SeLinuxOption {
        user: o.user.clone().unwrap_or_default(),
        role: o.role.clone().unwrap_or_default(),
        r#type: o.type_.clone().unwrap_or_default(),
        level: o.level.clone().unwrap_or_default(),
    })
}

fn all_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    let spec = pod.spec.as_ref();
    spec.map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .chain(
            spec.and_then(|s| s.init_containers.as_deref())
                .unwrap_or_default(),
        )
}

/// The sandbox's security context (`generatePodSandboxLinuxConfig`); the sandbox itself
/// always runs RuntimeDefault seccomp so pod-level profiles can be least-privilege.
pub fn sandbox_security_context(pod: &Pod) -> Result<LinuxSandboxSecurityContext, ConvertError> {
    let sc = pod_sc(pod);
    let privileged = all_containers(pod).any(|c| {
        c.security_context
            .as_ref()
            .and_then(|s| s.privileged)
            .unwrap_or(false)
    }) || pod
        .spec
        .as_ref()
        .and_then(|s| s.ephemeral_containers.as_deref())
        .unwrap_or_default()
        .iter()
        .any(|c| {
            c.security_context
                .as_ref()
                .and_then(|s| s.privileged)
                .unwrap_or(false)
        });
    Ok(LinuxSandboxSecurityContext {
        namespace_options: Some(namespace_options(pod)?),
        selinux_options: selinux(sc.and_then(|s| s.se_linux_options.as_ref())),
        run_as_user: sc
            .and_then(|s| s.run_as_user)
            .map(|value| Int64Value { value }),
        run_as_group: sc
            .and_then(|s| s.run_as_group)
            .map(|value| Int64Value { value }),
        supplemental_groups: supplemental_groups(pod),
        supplemental_groups_policy: supplemental_groups_policy(pod)?,
        privileged,
        seccomp: Some(SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        }),
        ..Default::default()
    })
}

/// `DetermineEffectiveSecurityContext`: the pod's user settings overridden by the
/// container's.
fn effective(pod: &Pod, container: &Container) -> SecurityContext {
    let mut out = SecurityContext::default();
    if let Some(p) = pod_sc(pod) {
        out.se_linux_options = p.se_linux_options.clone();
        out.run_as_user = p.run_as_user;
        out.run_as_group = p.run_as_group;
        out.run_as_non_root = p.run_as_non_root;
    }
    if let Some(c) = &container.security_context {
        fn or<T: Clone>(mine: &mut Option<T>, theirs: &Option<T>) {
            if theirs.is_some() {
                mine.clone_from(theirs);
            }
        }
        or(&mut out.se_linux_options, &c.se_linux_options);
        or(&mut out.capabilities, &c.capabilities);
        or(&mut out.privileged, &c.privileged);
        or(&mut out.run_as_user, &c.run_as_user);
        or(&mut out.run_as_group, &c.run_as_group);
        or(&mut out.run_as_non_root, &c.run_as_non_root);
        or(
            &mut out.read_only_root_filesystem,
            &c.read_only_root_filesystem,
        );
        or(
            &mut out.allow_privilege_escalation,
            &c.allow_privilege_escalation,
        );
        or(&mut out.proc_mount, &c.proc_mount);
    }
    out
}

/// `verifyRunAsNonRoot`: with runAsNonRoot, refuse uid 0 and users that cannot be checked.
/// `image_uid`/`image_user` are the image's user as CRI ImageStatus reports it.
pub fn verify_run_as_non_root(
    pod: &Pod,
    container: &Container,
    image_uid: Option<i64>,
    image_user: &str,
) -> Result<(), ConvertError> {
    let sc = effective(pod, container);
    if sc.run_as_non_root != Some(true) {
        return Ok(());
    }
    let field = format!(
        "{}.securityContext.runAsNonRoot",
        container_path(pod, container)
    );
    match (sc.run_as_user, image_uid) {
        (Some(0), _) => Err(ConvertError::invalid(
            field,
            "container's runAsUser breaks non-root policy",
        )),
        (Some(_), _) => Ok(()),
        (None, Some(0)) => Err(ConvertError::invalid(
            field,
            "container has runAsNonRoot and image will run as root",
        )),
        (None, None) if !image_user.is_empty() => Err(ConvertError::invalid(
            field,
            format!(
                "container has runAsNonRoot and image has non-numeric user ({image_user}), cannot verify user is non-root"
            ),
        )),
        _ => Ok(()),
    }
}

/// The container's CRI security context; the image user fills in when no runAsUser is set.
pub fn container_security_context(
    pod: &Pod,
    container: &Container,
    image_uid: Option<i64>,
    image_user: &str,
    node: &NodeInfo,
) -> Result<LinuxContainerSecurityContext, ConvertError> {
    let sc = effective(pod, container);
    let base = container_path(pod, container);
    let mut out = LinuxContainerSecurityContext {
        capabilities: sc.capabilities.as_ref().map(|c| Capability {
            add_capabilities: c.add.clone().unwrap_or_default(),
            drop_capabilities: c.drop.clone().unwrap_or_default(),
            add_ambient_capabilities: Vec::new(),
        }),
        privileged: sc.privileged.unwrap_or(false),
        selinux_options: selinux(sc.se_linux_options.as_ref()),
        run_as_user: sc.run_as_user.map(|value| Int64Value { value }),
        run_as_group: sc.run_as_group.map(|value| Int64Value { value }),
        readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
        namespace_options: Some(namespace_options(pod)?),
        supplemental_groups: supplemental_groups(pod),
        supplemental_groups_policy: supplemental_groups_policy(pod)?,
        no_new_privs: sc.allow_privilege_escalation == Some(false),
        seccomp: Some(seccomp_profile(pod, container, node, &base)?),
        apparmor: apparmor_profile(pod, container, &base)?,
        ..Default::default()
    };
    if out.run_as_user.is_none() {
        out.run_as_user = image_uid.map(|value| Int64Value { value });
        out.run_as_username = image_user.to_owned();
    }
    if let Some(mount) = sc.proc_mount.as_deref() {
        if mount != "Default" && mount != "Unmasked" {
            return Err(ConvertError::invalid(
                format!("{base}.securityContext.procMount"),
                format!("unsupported procMount {mount:?} (Default or Unmasked)"),
            ));
        }
    }
    Ok(out)
}

/// `getSeccompProfile`: the container's profile, else the pod's, else the node default.
fn seccomp_profile(
    pod: &Pod,
    container: &Container,
    node: &NodeInfo,
    base: &str,
) -> Result<SecurityProfile, ConvertError> {
    let from_container = container
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref())
        .map(|p| (p, format!("{base}.securityContext.seccompProfile")));
    let from_pod = pod_sc(pod)
        .and_then(|s| s.seccomp_profile.as_ref())
        .map(|p| (p, "spec.securityContext.seccompProfile".to_owned()));
    let profile = |t: ProfileType, localhost_ref: String| SecurityProfile {
        profile_type: t as i32,
        localhost_ref,
    };
    let Some((chosen, field)) = from_container.or(from_pod) else {
        let t = if node.seccomp_default {
            ProfileType::RuntimeDefault
        } else {
            ProfileType::Unconfined
        };
        return Ok(profile(t, String::new()));
    };
    let SeccompProfile {
        type_,
        localhost_profile,
    } = chosen;
    match type_.as_str() {
        "RuntimeDefault" => Ok(profile(ProfileType::RuntimeDefault, String::new())),
        "Localhost" => {
            let name = localhost_profile
                .as_deref()
                .filter(|p| !p.is_empty())
                .ok_or_else(|| {
                    ConvertError::invalid(
                        format!("{field}.localhostProfile"),
                        "must be set if seccompProfile type is Localhost",
                    )
                })?;
            let relative = Path::new(name);
            if !relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
            {
                return Err(ConvertError::invalid(
                    format!("{field}.localhostProfile"),
                    format!("{name:?} must be a relative path without '..'"),
                ));
            }
            let path = node.seccomp_profile_root.join(relative);
            Ok(profile(ProfileType::Localhost, path.display().to_string()))
        }
        _ => Ok(profile(ProfileType::Unconfined, String::new())),
    }
}

/// AppArmor: the container's field, the beta annotation, then the pod's field; none means
/// the runtime's default.
fn apparmor_profile(
    pod: &Pod,
    container: &Container,
    base: &str,
) -> Result<Option<SecurityProfile>, ConvertError> {
    let field_profile = container
        .security_context
        .as_ref()
        .and_then(|s| s.app_armor_profile.as_ref())
        .map(|p| (p.type_.clone(), p.localhost_profile.clone()));
    let annotation_key = format!(
        "container.apparmor.security.beta.kubernetes.io/{}",
        container.name
    );
    let annotation_profile = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(&annotation_key))
        .map(|v| match v.as_str() {
            "runtime/default" => ("RuntimeDefault".to_owned(), None),
            "unconfined" => ("Unconfined".to_owned(), None),
            other => match other.strip_prefix("localhost/") {
                Some(name) => ("Localhost".to_owned(), Some(name.to_owned())),
                None => (other.to_owned(), None),
            },
        });
    let pod_profile = pod_sc(pod)
        .and_then(|s| s.app_armor_profile.as_ref())
        .map(|p| (p.type_.clone(), p.localhost_profile.clone()));
    let Some((kind, localhost)) = field_profile.or(annotation_profile).or(pod_profile) else {
        return Ok(None);
    };
    let field = format!("{base}.securityContext.appArmorProfile");
    let (profile_type, localhost_ref) = match kind.as_str() {
        "RuntimeDefault" => (ProfileType::RuntimeDefault, String::new()),
        "Unconfined" => (ProfileType::Unconfined, String::new()),
        "Localhost" => match localhost.filter(|l| !l.is_empty()) {
            Some(name) => (ProfileType::Localhost, name),
            None => {
                return Err(ConvertError::invalid(
                    field,
                    "missing localhost apparmor profile name",
                ))
            }
        },
        other => {
            return Err(ConvertError::invalid(
                field,
                format!("unknown apparmor profile type: {other:?}"),
            ))
        }
    };
    Ok(Some(SecurityProfile {
        profile_type: profile_type as i32,
        localhost_ref,
    }))
}

#[cfg(test)]
mod tests;
