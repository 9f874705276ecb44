//! Namespaces of the spec: joined (`path` given), created (no path), or refused.
//!
//! The PID namespace is never handled here: unsharing it would only apply to children,
//! and the container's init execs rather than forks. The monitor forks the container's
//! process with CLONE_NEWPID (or inside the sandbox's PID namespace), so it is already
//! in the right one when `init_container` runs.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

use super::error::{ExecutorError, Result, SysContext};

/// What to do with the spec's namespaces, in order.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// Namespaces to join (setns), the mount namespace last.
    pub join: Vec<(CloneFlags, PathBuf)>,
    /// Namespaces to create (unshare), after joining.
    pub unshare: CloneFlags,
}

impl Plan {
    /// Whether we create the UTS namespace ourselves (only then may we set the hostname).
    pub fn owns_uts(&self) -> bool {
        self.unshare.contains(CloneFlags::CLONE_NEWUTS)
    }
}

/// The clone flag of a namespace type.
pub fn flag(typ: LinuxNamespaceType) -> CloneFlags {
    match typ {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        // CLONE_NEWTIME is not in nix's CloneFlags.
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// The file name of a namespace type under `/proc/<pid>/ns/`.
pub fn proc_name(typ: LinuxNamespaceType) -> &'static str {
    match typ {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// Decides what `init_container` does with each namespace of the spec.
pub fn plan(namespaces: &[LinuxNamespace]) -> Result<Plan> {
    let mut plan = Plan {
        join: Vec::new(),
        unshare: CloneFlags::empty(),
    };
    let mut seen = CloneFlags::empty();
    let mut mount_join = None;
    for namespace in namespaces {
        let typ = namespace.typ();
        let bit = flag(typ);
        if seen.contains(bit) {
            return Err(ExecutorError::Invalid(format!(
                "namespace {} listed twice",
                proc_name(typ)
            )));
        }
        seen |= bit;
        match (typ, namespace.path()) {
            (LinuxNamespaceType::User, _) => {
                return Err(ExecutorError::Invalid(
                    "user namespaces are not supported".into(),
                ))
            }
            (LinuxNamespaceType::Pid, _) => {}
            (LinuxNamespaceType::Time, None) => {
                return Err(ExecutorError::Invalid(
                    "creating time namespaces is not supported".into(),
                ))
            }
            (LinuxNamespaceType::Mount, Some(path)) => mount_join = Some((bit, path.clone())),
            (_, Some(path)) => plan.join.push((bit, path.clone())),
            (_, None) => plan.unshare |= bit,
        }
    }
    plan.join.extend(mount_join);
    Ok(plan)
}

/// Joins and creates the planned namespaces. Every file is opened before the first setns,
/// since joining a mount namespace changes how later paths resolve.
pub fn apply(plan: &Plan) -> Result<()> {
    let files = plan
        .join
        .iter()
        .map(|(bit, path)| Ok((*bit, path, open(path)?)))
        .collect::<Result<Vec<_>>>()?;
    for (bit, path, file) in &files {
        nix::sched::setns(file, *bit).sys(|| format!("joining namespace {}", path.display()))?;
    }
    if !plan.unshare.is_empty() {
        nix::sched::unshare(plan.unshare)
            .sys(|| format!("creating namespaces {:?}", plan.unshare))?;
    }
    Ok(())
}

/// Joins, in namespaces of the running process `pid`, every type the spec lists (for an
/// exec). The mount namespace is joined last.
pub fn join_process(pid: i32, namespaces: &[LinuxNamespace]) -> Result<()> {
    let mut types: Vec<LinuxNamespaceType> = Vec::new();
    for namespace in namespaces {
        match namespace.typ() {
            LinuxNamespaceType::User => {
                return Err(ExecutorError::Invalid(
                    "user namespaces are not supported".into(),
                ))
            }
            typ if !types.contains(&typ) => types.push(typ),
            _ => {}
        }
    }
    types.sort_by_key(|typ| *typ == LinuxNamespaceType::Mount);
    let join = types
        .into_iter()
        .map(|typ| {
            (
                flag(typ),
                PathBuf::from(format!("/proc/{pid}/ns/{}", proc_name(typ))),
            )
        })
        .collect();
    apply(&Plan {
        join,
        unshare: CloneFlags::empty(),
    })
}

fn open(path: &Path) -> Result<OwnedFd> {
    std::fs::File::open(path)
        .map(OwnedFd::from)
        .sys(|| format!("opening namespace {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxNamespaceBuilder;

    fn ns(typ: LinuxNamespaceType, path: Option<&str>) -> LinuxNamespace {
        let builder = LinuxNamespaceBuilder::default().typ(typ);
        match path {
            Some(path) => builder.path(path).build(),
            None => builder.build(),
        }
        .expect("namespace")
    }

    #[test]
    fn paths_are_joined_mount_last_and_the_rest_created() {
        let plan = plan(&[
            ns(LinuxNamespaceType::Mount, Some("/run/mnt")),
            ns(LinuxNamespaceType::Network, Some("/run/net")),
            ns(LinuxNamespaceType::Ipc, None),
            ns(LinuxNamespaceType::Uts, None),
            ns(LinuxNamespaceType::Pid, None),
        ])
        .expect("plan");
        assert_eq!(
            plan.join,
            vec![
                (CloneFlags::CLONE_NEWNET, PathBuf::from("/run/net")),
                (CloneFlags::CLONE_NEWNS, PathBuf::from("/run/mnt")),
            ]
        );
        assert_eq!(
            plan.unshare,
            CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS
        );
        assert!(plan.owns_uts());
    }

    #[test]
    fn joined_uts_is_not_ours() {
        let plan = plan(&[ns(LinuxNamespaceType::Uts, Some("/run/uts"))]).expect("plan");
        assert!(!plan.owns_uts());
    }

    #[test]
    fn user_namespaces_and_duplicates_are_refused() {
        let err = plan(&[ns(LinuxNamespaceType::User, None)]).expect_err("user ns");
        assert_eq!(err.to_string(), "user namespaces are not supported");
        assert!(plan(&[
            ns(LinuxNamespaceType::Ipc, None),
            ns(LinuxNamespaceType::Ipc, Some("/x"))
        ])
        .is_err());
        assert!(join_process(1, &[ns(LinuxNamespaceType::User, None)]).is_err());
    }

    #[test]
    fn proc_names() {
        assert_eq!(proc_name(LinuxNamespaceType::Mount), "mnt");
        assert_eq!(proc_name(LinuxNamespaceType::Network), "net");
    }
}
