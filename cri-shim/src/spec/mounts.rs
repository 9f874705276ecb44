//! The container's mounts: the standard filesystems, the pod's shared files, then the CRI
//! mounts, ordered so that a parent directory is always mounted before its children.

use std::path::{Component, Path, PathBuf};

use k8s_cri::v1::{Mount as CriMount, MountPropagation};
use oci_spec::runtime::Mount;

use super::{SandboxFiles, SpecError};

/// Size of a container-private /dev and /dev/shm.
const TMPFS_SIZE: &str = "size=65536k";

/// Mounts plus the rootfs propagation they need.
#[derive(Debug)]
pub(crate) struct MountPlan {
    /// In mount order.
    pub mounts: Vec<Mount>,
    /// `rshared` or `rslave` when a CRI mount propagates from (or to) the host.
    pub rootfs_propagation: Option<String>,
}

/// What the mount list depends on besides the CRI mounts.
pub(crate) struct MountContext<'a> {
    /// The pod's hosts, hostname, resolv.conf and shm.
    pub files: &'a SandboxFiles,
    /// The pod shares the host's IPC namespace (and so its /dev/shm).
    pub host_ipc: bool,
    /// Privileged containers get /sys and its cgroup tree writable.
    pub privileged: bool,
    /// The pod files are mounted read-only on a read-only rootfs.
    pub readonly_rootfs: bool,
}

/// Build the ordered mount list.
pub(crate) fn build(cri: &[CriMount], ctx: &MountContext<'_>) -> Result<MountPlan, SpecError> {
    let mut requested = Vec::with_capacity(cri.len());
    let mut propagation = None;
    for m in cri {
        let (mount, prop) = cri_mount(m)?;
        match (prop, propagation) {
            (MountPropagation::PropagationBidirectional, _) => propagation = Some(prop),
            (MountPropagation::PropagationHostToContainer, None) => propagation = Some(prop),
            _ => {}
        }
        requested.push(mount);
    }
    let overridden = |dest: &Path| requested.iter().any(|m| dest.starts_with(m.destination()));

    let mut mounts: Vec<Mount> = standard_mounts(ctx)
        .into_iter()
        .filter(|m| !overridden(m.destination()))
        .collect();
    let rw = if ctx.readonly_rootfs { "ro" } else { "rw" };
    let pod_files = [
        ("/etc/hosts", &ctx.files.hosts),
        ("/etc/hostname", &ctx.files.hostname),
        ("/etc/resolv.conf", &ctx.files.resolv_conf),
    ];
    for (dest, source) in pod_files {
        if let Some(source) = source {
            if !requested.iter().any(|m| m.destination() == Path::new(dest)) {
                mounts.push(bind(dest, source, &["rbind", "rprivate", rw]));
            }
        }
    }
    mounts.extend(requested);
    // Stable: among equally deep paths, the order above (and the CRI order) is kept.
    mounts.sort_by_key(|m| depth(m.destination()));
    Ok(MountPlan {
        mounts,
        rootfs_propagation: propagation.map(|p| propagation_option(p).to_owned()),
    })
}

fn standard_mounts(ctx: &MountContext<'_>) -> Vec<Mount> {
    let mut sys = vec!["nosuid", "noexec", "nodev"];
    let mut cgroup = vec!["nosuid", "noexec", "nodev", "relatime"];
    if !ctx.privileged {
        sys.push("ro");
        cgroup.push("ro");
    }
    let shm = match (&ctx.files.shm, ctx.host_ipc) {
        (Some(dir), _) => bind("/dev/shm", dir, &["rbind", "rprivate", "rw"]),
        // A pod in the host's IPC namespace sees the host's POSIX shared memory.
        (None, true) => bind(
            "/dev/shm",
            Path::new("/dev/shm"),
            &["rbind", "rprivate", "rw"],
        ),
        (None, false) => mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", TMPFS_SIZE],
        ),
    };
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", TMPFS_SIZE],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        shm,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount("/sys", "sysfs", "sysfs", &sys),
        mount("/sys/fs/cgroup", "cgroup", "cgroup", &cgroup),
    ]
}

fn cri_mount(m: &CriMount) -> Result<(Mount, MountPropagation), SpecError> {
    let dest = container_path(&m.container_path)?;
    if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
        return Err(SpecError::UnsupportedMount {
            path: m.container_path.clone(),
            reason: "ID-mapped mounts are not supported".into(),
        });
    }
    if m.host_path.is_empty() {
        return Err(SpecError::UnsupportedMount {
            path: m.container_path.clone(),
            reason: "host_path is empty (image volumes are not supported)".into(),
        });
    }
    // Resolve symlinks now so the spec names the real source, whatever changes later.
    let source = std::fs::canonicalize(&m.host_path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            SpecError::MountSourceMissing(m.host_path.clone())
        } else {
            SpecError::MountSource {
                path: m.host_path.clone(),
                source,
            }
        }
    })?;
    let propagation = MountPropagation::try_from(m.propagation).map_err(|_| {
        SpecError::field(
            "mount propagation",
            format!("{} for {:?}", m.propagation, m.container_path),
        )
    })?;
    let mut options = vec!["rbind", propagation_option(propagation)];
    if m.recursive_read_only {
        if !m.readonly || propagation != MountPropagation::PropagationPrivate {
            return Err(SpecError::UnsupportedMount {
                path: m.container_path.clone(),
                reason: "recursive_read_only needs readonly and private propagation".into(),
            });
        }
        options.extend(["ro", "rro"]);
    } else {
        options.push(if m.readonly { "ro" } else { "rw" });
    }
    let mut mount = bind("/", &source, &options);
    mount.set_destination(dest);
    Ok((mount, propagation))
}

/// CRI container paths must be absolute and must not walk with `.` or `..`; repeated and
/// trailing slashes are normalised away.
fn container_path(path: &str) -> Result<PathBuf, SpecError> {
    let invalid = |reason: &str| SpecError::InvalidMountPath {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    if !path.starts_with('/') {
        return Err(invalid("must be an absolute path"));
    }
    if path.contains('\0') {
        return Err(invalid("contains a NUL byte"));
    }
    if path.split('/').any(|c| c == "." || c == "..") {
        return Err(invalid("must be clean (no . or .. components)"));
    }
    let clean: PathBuf = Path::new(path).components().collect();
    if clean == Path::new("/") {
        return Err(invalid("cannot mount over the container's root"));
    }
    Ok(clean)
}

fn depth(path: &Path) -> usize {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count()
}

fn propagation_option(p: MountPropagation) -> &'static str {
    match p {
        MountPropagation::PropagationPrivate => "rprivate",
        MountPropagation::PropagationHostToContainer => "rslave",
        MountPropagation::PropagationBidirectional => "rshared",
    }
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(dest))
        .set_typ(Some(typ.to_owned()))
        .set_source(Some(PathBuf::from(source)))
        .set_options(Some(options.iter().map(|o| (*o).to_owned()).collect()));
    m
}

fn bind(dest: &str, source: &Path, options: &[&str]) -> Mount {
    let mut m = mount(dest, "bind", "", options);
    m.set_source(Some(source.to_path_buf()));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> SandboxFiles {
        SandboxFiles {
            hosts: Some("/run/pod/etc/hosts".into()),
            hostname: Some("/run/pod/etc/hostname".into()),
            resolv_conf: Some("/run/pod/etc/resolv.conf".into()),
            shm: Some("/run/pod/shm".into()),
        }
    }

    fn ctx(files: &SandboxFiles) -> MountContext<'_> {
        MountContext {
            files,
            host_ipc: false,
            privileged: false,
            readonly_rootfs: false,
        }
    }

    fn cri(container: &str, host: &Path) -> CriMount {
        CriMount {
            container_path: container.into(),
            host_path: host.to_string_lossy().into_owned(),
            ..Default::default()
        }
    }

    fn find<'a>(plan: &'a MountPlan, dest: &str) -> &'a Mount {
        plan.mounts
            .iter()
            .find(|m| m.destination() == Path::new(dest))
            .unwrap_or_else(|| panic!("no mount at {dest}"))
    }

    fn opts(m: &Mount) -> Vec<&str> {
        m.options()
            .as_ref()
            .unwrap()
            .iter()
            .map(String::as_str)
            .collect()
    }

    fn dests(plan: &MountPlan) -> Vec<String> {
        plan.mounts
            .iter()
            .map(|m| m.destination().display().to_string())
            .collect()
    }

    #[test]
    fn defaults_and_pod_files() {
        let f = files();
        let plan = build(&[], &ctx(&f)).unwrap();
        assert_eq!(
            dests(&plan),
            [
                "/proc",
                "/dev",
                "/sys",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/etc/hosts",
                "/etc/hostname",
                "/etc/resolv.conf",
                "/sys/fs/cgroup"
            ]
        );
        let dev = find(&plan, "/dev");
        assert_eq!(dev.typ().as_deref(), Some("tmpfs"));
        assert_eq!(
            opts(dev),
            ["nosuid", "strictatime", "mode=755", "size=65536k"]
        );
        let pts = find(&plan, "/dev/pts");
        assert!(opts(pts).contains(&"newinstance") && opts(pts).contains(&"ptmxmode=0666"));
        assert!(opts(pts).contains(&"mode=0620") && opts(pts).contains(&"gid=5"));
        let shm = find(&plan, "/dev/shm");
        assert_eq!(shm.typ().as_deref(), Some("bind"));
        assert_eq!(shm.source().as_deref(), Some(Path::new("/run/pod/shm")));
        assert!(opts(find(&plan, "/sys")).contains(&"ro"));
        assert!(opts(find(&plan, "/sys/fs/cgroup")).contains(&"ro"));
        assert_eq!(
            find(&plan, "/sys/fs/cgroup").typ().as_deref(),
            Some("cgroup")
        );
        assert_eq!(find(&plan, "/dev/mqueue").typ().as_deref(), Some("mqueue"));
        let hosts = find(&plan, "/etc/hosts");
        assert_eq!(
            hosts.source().as_deref(),
            Some(Path::new("/run/pod/etc/hosts"))
        );
        assert_eq!(opts(hosts), ["rbind", "rprivate", "rw"]);
        assert!(plan.rootfs_propagation.is_none());
    }

    #[test]
    fn shm_without_a_pod_dir() {
        let f = SandboxFiles {
            shm: None,
            ..files()
        };
        let plan = build(&[], &ctx(&f)).unwrap();
        let shm = find(&plan, "/dev/shm");
        assert_eq!(shm.typ().as_deref(), Some("tmpfs"));
        assert!(opts(shm).contains(&"size=65536k"));
        let host = MountContext {
            host_ipc: true,
            ..ctx(&f)
        };
        let plan = build(&[], &host).unwrap();
        assert_eq!(
            find(&plan, "/dev/shm").source().as_deref(),
            Some(Path::new("/dev/shm"))
        );
    }

    #[test]
    fn privileged_and_readonly_rootfs() {
        let f = files();
        let plan = build(
            &[],
            &MountContext {
                privileged: true,
                readonly_rootfs: true,
                ..ctx(&f)
            },
        )
        .unwrap();
        assert!(!opts(find(&plan, "/sys")).contains(&"ro"));
        assert!(!opts(find(&plan, "/sys/fs/cgroup")).contains(&"ro"));
        assert!(opts(find(&plan, "/etc/resolv.conf")).contains(&"ro"));
    }

    #[test]
    fn cri_mounts_options_and_propagation() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().canonicalize().unwrap();
        let f = files();
        let mut ro = cri("/data/ro", &src);
        ro.readonly = true;
        let mut slave = cri("/data/slave", &src);
        slave.propagation = MountPropagation::PropagationHostToContainer as i32;
        let plan = build(&[cri("/data", &src), ro, slave.clone()], &ctx(&f)).unwrap();
        let data = find(&plan, "/data");
        assert_eq!(data.typ().as_deref(), Some("bind"));
        assert_eq!(data.source().as_deref(), Some(src.as_path()));
        assert_eq!(opts(data), ["rbind", "rprivate", "rw"]);
        assert_eq!(opts(find(&plan, "/data/ro")), ["rbind", "rprivate", "ro"]);
        assert_eq!(opts(find(&plan, "/data/slave")), ["rbind", "rslave", "rw"]);
        assert_eq!(plan.rootfs_propagation.as_deref(), Some("rslave"));

        let mut shared = cri("/shared", &src);
        shared.propagation = MountPropagation::PropagationBidirectional as i32;
        let plan = build(&[shared, slave], &ctx(&f)).unwrap();
        assert_eq!(opts(find(&plan, "/shared")), ["rbind", "rshared", "rw"]);
        assert_eq!(plan.rootfs_propagation.as_deref(), Some("rshared"));
    }

    #[test]
    fn recursive_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let f = files();
        let mut m = cri("/rro", dir.path());
        m.recursive_read_only = true;
        assert!(matches!(
            build(std::slice::from_ref(&m), &ctx(&f)),
            Err(SpecError::UnsupportedMount { .. })
        ));
        m.readonly = true;
        let plan = build(&[m], &ctx(&f)).unwrap();
        assert_eq!(
            opts(find(&plan, "/rro")),
            ["rbind", "rprivate", "ro", "rro"]
        );
    }

    #[test]
    fn parents_before_children_and_stable_order() {
        let dir = tempfile::tempdir().unwrap();
        let f = files();
        let mounts = [
            cri("/a/b/c", dir.path()),
            cri("/z", dir.path()),
            cri("/a/b", dir.path()),
            cri("/a", dir.path()),
            cri("/y", dir.path()),
        ];
        let plan = build(&mounts, &ctx(&f)).unwrap();
        let d = dests(&plan);
        let pos = |p: &str| d.iter().position(|x| x == p).unwrap();
        assert!(pos("/a") < pos("/a/b") && pos("/a/b") < pos("/a/b/c"));
        // same depth keeps the CRI order, after the standard mounts of that depth
        assert!(pos("/sys") < pos("/z") && pos("/z") < pos("/a") && pos("/a") < pos("/y"));
    }

    #[test]
    fn cri_mounts_override_standard_and_pod_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = files();
        let file = dir.path().join("hosts");
        std::fs::write(&file, "").unwrap();
        let plan = build(
            &[cri("/etc/hosts", &file), cri("/dev", dir.path())],
            &ctx(&f),
        )
        .unwrap();
        let hosts: Vec<_> = plan
            .mounts
            .iter()
            .filter(|m| m.destination() == Path::new("/etc/hosts"))
            .collect();
        assert_eq!(hosts.len(), 1);
        assert_eq!(
            hosts[0].source().as_deref(),
            Some(file.canonicalize().unwrap().as_path())
        );
        // A CRI /dev replaces /dev and everything the runtime would mount beneath it.
        let d = dests(&plan);
        assert_eq!(d.iter().filter(|p| p.starts_with("/dev")).count(), 1);
        assert!(d.contains(&"/etc/hostname".to_owned()));
    }

    #[test]
    fn invalid_container_paths() {
        let dir = tempfile::tempdir().unwrap();
        let f = files();
        for bad in ["relative", "/a/../b", "/a/./b", "/", "//"] {
            let err = build(&[cri(bad, dir.path())], &ctx(&f)).unwrap_err();
            assert!(
                matches!(&err, SpecError::InvalidMountPath { path, .. } if path == bad),
                "{bad}: {err}"
            );
        }
        let plan = build(&[cri("/a//b/", dir.path())], &ctx(&f)).unwrap();
        find(&plan, "/a/b");
    }

    #[test]
    fn missing_host_path() {
        let f = files();
        let err = build(
            &[cri("/x", Path::new("/nonexistent/capstan-test"))],
            &ctx(&f),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "mount source /nonexistent/capstan-test does not exist"
        );
    }
}
