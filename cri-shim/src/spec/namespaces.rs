//! Which namespaces the container creates and which of the pod's pinned ones it joins.

use std::path::PathBuf;

use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

use super::{PidNamespace, SandboxNamespaces};

/// A new mount namespace always; the pod's network, IPC and UTS namespaces unless they are
/// the host's (then none is listed, so the host's stays); PID per mode; a new cgroup
/// namespace when asked (cgroup v2 hosts, as containerd does).
pub(crate) fn build(ns: &SandboxNamespaces, cgroup: bool) -> Vec<LinuxNamespace> {
    let mut out = Vec::new();
    match &ns.pid {
        PidNamespace::Node => {}
        PidNamespace::Pod(path) => out.push(namespace(LinuxNamespaceType::Pid, Some(path))),
        // The monitor forks the container into a fresh PID namespace; listing it without a
        // path says so to runc as well.
        PidNamespace::Container => out.push(namespace(LinuxNamespaceType::Pid, None)),
    }
    let pinned = [
        (LinuxNamespaceType::Network, &ns.network),
        (LinuxNamespaceType::Ipc, &ns.ipc),
        (LinuxNamespaceType::Uts, &ns.uts),
    ];
    for (typ, path) in pinned {
        if let Some(path) = path {
            out.push(namespace(typ, Some(path)));
        }
    }
    out.push(namespace(LinuxNamespaceType::Mount, None));
    if cgroup {
        out.push(namespace(LinuxNamespaceType::Cgroup, None));
    }
    out
}

fn namespace(typ: LinuxNamespaceType, path: Option<&PathBuf>) -> LinuxNamespace {
    let mut ns = LinuxNamespace::default();
    ns.set_typ(typ).set_path(path.cloned());
    ns
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(list: &[LinuxNamespace]) -> Vec<(LinuxNamespaceType, Option<String>)> {
        list.iter()
            .map(|n| (n.typ(), n.path().as_ref().map(|p| p.display().to_string())))
            .collect()
    }

    #[test]
    fn pod_namespaces_are_joined() {
        let ns = SandboxNamespaces {
            network: Some("/run/p/ns/net".into()),
            ipc: Some("/run/p/ns/ipc".into()),
            uts: Some("/run/p/ns/uts".into()),
            pid: PidNamespace::Pod("/run/p/ns/pid".into()),
        };
        assert_eq!(
            kinds(&build(&ns, false)),
            [
                (LinuxNamespaceType::Pid, Some("/run/p/ns/pid".into())),
                (LinuxNamespaceType::Network, Some("/run/p/ns/net".into())),
                (LinuxNamespaceType::Ipc, Some("/run/p/ns/ipc".into())),
                (LinuxNamespaceType::Uts, Some("/run/p/ns/uts".into())),
                (LinuxNamespaceType::Mount, None),
            ]
        );
    }

    #[test]
    fn host_namespaces_are_not_listed() {
        let ns = SandboxNamespaces {
            network: None,
            ipc: None,
            uts: None,
            pid: PidNamespace::Node,
        };
        assert_eq!(
            kinds(&build(&ns, false)),
            [(LinuxNamespaceType::Mount, None)]
        );
        let ns = SandboxNamespaces {
            pid: PidNamespace::Container,
            ..ns
        };
        assert_eq!(
            kinds(&build(&ns, true)),
            [
                (LinuxNamespaceType::Pid, None),
                (LinuxNamespaceType::Mount, None),
                (LinuxNamespaceType::Cgroup, None),
            ]
        );
    }
}
