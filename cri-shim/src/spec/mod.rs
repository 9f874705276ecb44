//! CRI container config + image config → OCI runtime spec (`config.json`), executed the
//! same way by the built-in executor and by runc.
//!
//! Host facts the spec depends on (cgroup version, swap accounting, the kernel's highest
//! capability, device nodes) are read from the running node; files of the image are read
//! only through its rootfs, never following a link out of it.

mod capabilities;
mod devices;
mod error;
mod mounts;
mod namespaces;
mod process;
mod resources;
mod rootfs_file;
mod seccomp;
mod user;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use k8s_cri::v1::{ContainerConfig, PodSandboxConfig};
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{Linux, PosixRlimitBuilder, PosixRlimitType, Process, Root, Spec, User};

pub use error::SpecError;

/// OCI runtime-spec version written into `ociVersion`.
pub const OCI_VERSION: &str = "1.1.0";

/// Open-file limit (soft and hard) of container processes, lowered to what the node lets
/// the runtime grant.
pub const DEFAULT_NOFILE: u64 = 1 << 20;

/// Annotation: `container` for workload containers.
pub const ANNOTATION_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// Annotation: the pod sandbox's ID.
pub const ANNOTATION_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
/// Annotation: the pod sandbox's name.
pub const ANNOTATION_SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
/// Annotation: the pod sandbox's namespace.
pub const ANNOTATION_SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
/// Annotation: the pod sandbox's UID.
pub const ANNOTATION_SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
/// Annotation: the container's name from its CRI metadata.
pub const ANNOTATION_CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
/// Annotation: the image the container runs.
pub const ANNOTATION_IMAGE_NAME: &str = "io.kubernetes.cri.image-name";

/// Masked unless the CRI config gives its own list (or the container is privileged).
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Read-only unless the CRI config gives its own list (or the container is privileged).
pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Everything the spec of one container is built from.
#[derive(Debug)]
pub struct SpecInput<'a> {
    /// The container's ID.
    pub container_id: &'a str,
    /// The CRI CreateContainer config.
    pub container: &'a ContainerConfig,
    /// The config of the pod the container joins.
    pub sandbox: &'a PodSandboxConfig,
    /// The pod sandbox's ID.
    pub sandbox_id: &'a str,
    /// The pulled image's config.
    pub image: &'a ImageConfiguration,
    /// The image reference recorded in annotations.
    pub image_ref: &'a str,
    /// The container's mounted rootfs (its /etc/passwd and /etc/group are read).
    pub rootfs: &'a Path,
    /// The pod's pinned namespaces.
    pub namespaces: SandboxNamespaces,
    /// The pod's shared files.
    pub sandbox_files: SandboxFiles,
    /// Cgroup of the container, relative to each hierarchy's root.
    pub cgroups_path: String,
}

/// Paths of the pod's pinned namespaces; `None` means the host's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxNamespaces {
    /// Network namespace.
    pub network: Option<PathBuf>,
    /// IPC namespace.
    pub ipc: Option<PathBuf>,
    /// UTS namespace (hostname).
    pub uts: Option<PathBuf>,
    /// PID namespace mode.
    pub pid: PidNamespace,
}

/// Which PID namespace the container lives in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PidNamespace {
    /// The host's.
    Node,
    /// The pod's, pinned at this path.
    Pod(PathBuf),
    /// A new one of its own.
    Container,
}

/// Host files of the pod bind-mounted into each container; `None` skips the mount.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxFiles {
    /// Mounted at /etc/hosts.
    pub hosts: Option<PathBuf>,
    /// Mounted at /etc/hostname.
    pub hostname: Option<PathBuf>,
    /// Mounted at /etc/resolv.conf.
    pub resolv_conf: Option<PathBuf>,
    /// The pod's /dev/shm directory; `None` gives the host's /dev/shm to host-IPC pods
    /// and a private tmpfs to the others.
    pub shm: Option<PathBuf>,
}

/// Facts about the node that shape the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostFacts {
    /// Capabilities the runtime can grant ("all" for privileged containers and `ALL`).
    capabilities: BTreeSet<usize>,
    /// The memory controller can limit swap.
    swap_accounting: bool,
    /// Cgroup v2 is mounted at /sys/fs/cgroup (containers then get a cgroup namespace).
    cgroup2: bool,
    /// RLIMIT_NOFILE given to containers.
    nofile: u64,
}

impl HostFacts {
    fn detect() -> Self {
        Self {
            capabilities: capabilities::runtime_capabilities(),
            swap_accounting: swap_accounting(),
            cgroup2: cgroup2(),
            nofile: grantable_nofile(),
        }
    }
}

fn cgroup2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// Whether the node's memory controller can limit swap.
fn swap_accounting() -> bool {
    if cgroup2() {
        // The root cgroup has no memory.swap.max; any child shows whether it exists.
        std::fs::read_dir("/sys/fs/cgroup").is_ok_and(|dir| {
            dir.flatten()
                .any(|e| e.path().join("memory.swap.max").exists())
        })
    } else {
        Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
    }
}

/// A container's `linux.resources` without device rules, as [`build`] writes them: what
/// UpdateContainerResources applies to a running container.
pub fn container_resources(
    resources: &k8s_cri::v1::LinuxContainerResources,
) -> Result<oci_spec::runtime::LinuxResources, SpecError> {
    resources::build(Some(resources), swap_accounting())
}

/// [`DEFAULT_NOFILE`], bounded by the kernel's `fs.nr_open` and by this process's own hard
/// limit: raising a hard limit can be refused even to root (sandboxed hosts, or no
/// CAP_SYS_RESOURCE inside another container), and the container would then not start.
fn grantable_nofile() -> u64 {
    use nix::sys::resource::{getrlimit, Resource};
    let mut limit = DEFAULT_NOFILE;
    if let Some(nr_open) = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
    {
        limit = limit.min(nr_open);
    }
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        limit = limit.min(hard);
    }
    limit
}

/// Build the complete OCI runtime spec of a container.
pub fn build(input: &SpecInput<'_>) -> Result<Spec, SpecError> {
    build_with(input, &HostFacts::detect())
}

fn build_with(input: &SpecInput<'_>, host: &HostFacts) -> Result<Spec, SpecError> {
    let container = input.container;
    let linux_config = container.linux.as_ref();
    let sc = linux_config.and_then(|l| l.security_context.as_ref());
    let cri_resources = linux_config.and_then(|l| l.resources.as_ref());
    let privileged = sc.is_some_and(|s| s.privileged);
    let readonly_rootfs = sc.is_some_and(|s| s.readonly_rootfs);
    if privileged && !sandbox_privileged(input.sandbox) {
        return Err(SpecError::field(
            "privileged",
            "a privileged container needs a privileged pod sandbox",
        ));
    }
    let metadata = container
        .metadata
        .as_ref()
        .ok_or_else(|| SpecError::field("metadata", "missing"))?;

    let hostname = hostname(input.sandbox);
    let image_user = input
        .image
        .config()
        .as_ref()
        .and_then(|c| c.user().as_deref())
        .unwrap_or_default();
    let resolved = user::resolve(sc, image_user, input.rootfs)?;
    let caps = capabilities::build(
        sc.and_then(|s| s.capabilities.as_ref()),
        privileged,
        &host.capabilities,
    )?;

    let mut user = User::default();
    user.set_uid(resolved.uid)
        .set_gid(resolved.gid)
        .set_additional_gids(Some(resolved.additional_gids.clone()));
    let nofile = PosixRlimitBuilder::default()
        .typ(PosixRlimitType::RlimitNofile)
        .soft(host.nofile)
        .hard(host.nofile)
        .build()
        // Every field is set and the builder has no validator.
        .expect("rlimit builder cannot fail");
    let mut process = Process::default();
    process
        .set_terminal(Some(container.tty))
        .set_console_size(None)
        .set_user(user)
        .set_args(Some(process::args(container, input.image)?))
        .set_env(Some(process::env(
            container,
            input.image,
            &hostname,
            &resolved.home,
        )))
        .set_cwd(PathBuf::from(process::cwd(container, input.image)?))
        .set_capabilities(Some(caps.to_oci()))
        .set_rlimits(Some(vec![nofile]))
        .set_no_new_privileges(Some(sc.is_some_and(|s| s.no_new_privs)))
        .set_apparmor_profile(None)
        .set_selinux_label(None)
        .set_oom_score_adj(resources::oom_score_adj(cri_resources)?);

    let mount_plan = mounts::build(
        &container.mounts,
        &mounts::MountContext {
            files: &input.sandbox_files,
            host_ipc: input.namespaces.ipc.is_none(),
            privileged,
            readonly_rootfs,
        },
    )?;
    let device_plan = devices::build(&container.devices, privileged)?;
    let mut linux_resources = resources::build(cri_resources, host.swap_accounting)?;
    linux_resources.set_devices(Some(device_plan.cgroup));

    let (masked, readonly) = if privileged {
        (None, None)
    } else {
        let masked = sc.map(|s| s.masked_paths.as_slice()).unwrap_or_default();
        let readonly = sc.map(|s| s.readonly_paths.as_slice()).unwrap_or_default();
        (
            Some(paths_or_default(masked, DEFAULT_MASKED_PATHS)),
            Some(paths_or_default(readonly, DEFAULT_READONLY_PATHS)),
        )
    };

    let mut linux = Linux::default();
    linux
        .set_uid_mappings(None)
        .set_gid_mappings(None)
        .set_sysctl(None)
        .set_resources(Some(linux_resources))
        .set_cgroups_path(Some(PathBuf::from(&input.cgroups_path)))
        .set_namespaces(Some(namespaces::build(
            &input.namespaces,
            host.cgroup2 && !privileged,
        )))
        .set_devices(Some(device_plan.devices))
        .set_seccomp(seccomp::build(sc, privileged, &caps)?)
        .set_rootfs_propagation(mount_plan.rootfs_propagation)
        .set_masked_paths(masked)
        .set_readonly_paths(readonly)
        .set_mount_label(None);

    let mut root = Root::default();
    root.set_path(PathBuf::from("rootfs"))
        .set_readonly(Some(readonly_rootfs));

    let mut spec = Spec::default();
    spec.set_version(OCI_VERSION.to_owned())
        .set_root(Some(root))
        .set_mounts(Some(mount_plan.mounts))
        .set_process(Some(process))
        // Only a container with its own (the pod's) UTS namespace may name it; in the
        // host's, setting it would rename the node (and runc refuses).
        .set_hostname(input.namespaces.uts.is_some().then_some(hostname))
        .set_domainname(None)
        .set_hooks(None)
        .set_annotations(Some(annotations(input, &metadata.name)))
        .set_linux(Some(linux));
    Ok(spec)
}

fn sandbox_privileged(sandbox: &PodSandboxConfig) -> bool {
    sandbox
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .is_some_and(|s| s.privileged)
}

/// The pod's hostname; the node's own name when the pod config gives none.
fn hostname(sandbox: &PodSandboxConfig) -> String {
    if !sandbox.hostname.is_empty() {
        return sandbox.hostname.clone();
    }
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

/// An empty CRI list means "not given" (protobuf cannot tell the two apart).
fn paths_or_default(given: &[String], default: &[&str]) -> Vec<String> {
    if given.is_empty() {
        default.iter().map(|p| (*p).to_owned()).collect()
    } else {
        given.to_vec()
    }
}

/// The CRI annotations, then the runtime's own (which win, so a pod cannot forge them).
fn annotations(input: &SpecInput<'_>, container_name: &str) -> HashMap<String, String> {
    let mut out = input.container.annotations.clone();
    let mut set = |k: &str, v: &str| {
        out.insert(k.to_owned(), v.to_owned());
    };
    set(ANNOTATION_CONTAINER_TYPE, "container");
    set(ANNOTATION_SANDBOX_ID, input.sandbox_id);
    set(ANNOTATION_CONTAINER_NAME, container_name);
    set(ANNOTATION_IMAGE_NAME, input.image_ref);
    if let Some(meta) = &input.sandbox.metadata {
        set(ANNOTATION_SANDBOX_NAME, &meta.name);
        set(ANNOTATION_SANDBOX_NAMESPACE, &meta.namespace);
        set(ANNOTATION_SANDBOX_UID, &meta.uid);
    }
    out
}
