//! Linux capabilities: the default set adjusted by the CRI add/drop lists, or every
//! capability the kernel knows for privileged containers.

use std::collections::BTreeSet;

use k8s_cri::v1::Capability as CriCapabilities;
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

use super::SpecError;

/// Every capability with its kernel number, in kernel order.
const ALL: &[(&str, Capability)] = &[
    ("CHOWN", Capability::Chown),
    ("DAC_OVERRIDE", Capability::DacOverride),
    ("DAC_READ_SEARCH", Capability::DacReadSearch),
    ("FOWNER", Capability::Fowner),
    ("FSETID", Capability::Fsetid),
    ("KILL", Capability::Kill),
    ("SETGID", Capability::Setgid),
    ("SETUID", Capability::Setuid),
    ("SETPCAP", Capability::Setpcap),
    ("LINUX_IMMUTABLE", Capability::LinuxImmutable),
    ("NET_BIND_SERVICE", Capability::NetBindService),
    ("NET_BROADCAST", Capability::NetBroadcast),
    ("NET_ADMIN", Capability::NetAdmin),
    ("NET_RAW", Capability::NetRaw),
    ("IPC_LOCK", Capability::IpcLock),
    ("IPC_OWNER", Capability::IpcOwner),
    ("SYS_MODULE", Capability::SysModule),
    ("SYS_RAWIO", Capability::SysRawio),
    ("SYS_CHROOT", Capability::SysChroot),
    ("SYS_PTRACE", Capability::SysPtrace),
    ("SYS_PACCT", Capability::SysPacct),
    ("SYS_ADMIN", Capability::SysAdmin),
    ("SYS_BOOT", Capability::SysBoot),
    ("SYS_NICE", Capability::SysNice),
    ("SYS_RESOURCE", Capability::SysResource),
    ("SYS_TIME", Capability::SysTime),
    ("SYS_TTY_CONFIG", Capability::SysTtyConfig),
    ("MKNOD", Capability::Mknod),
    ("LEASE", Capability::Lease),
    ("AUDIT_WRITE", Capability::AuditWrite),
    ("AUDIT_CONTROL", Capability::AuditControl),
    ("SETFCAP", Capability::Setfcap),
    ("MAC_OVERRIDE", Capability::MacOverride),
    ("MAC_ADMIN", Capability::MacAdmin),
    ("SYSLOG", Capability::Syslog),
    ("WAKE_ALARM", Capability::WakeAlarm),
    ("BLOCK_SUSPEND", Capability::BlockSuspend),
    ("AUDIT_READ", Capability::AuditRead),
    ("PERFMON", Capability::Perfmon),
    ("BPF", Capability::Bpf),
    ("CHECKPOINT_RESTORE", Capability::CheckpointRestore),
];

/// What an unprivileged container keeps (the Docker/containerd default).
const DEFAULT: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// The capability sets of the container process, as kernel numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CapabilityPlan {
    /// Bounding, permitted and effective.
    pub granted: BTreeSet<usize>,
    /// Ambient (and so inheritable); always a subset of `granted`.
    pub ambient: BTreeSet<usize>,
}

impl CapabilityPlan {
    /// Whether the process holds `name` (without the CAP_ prefix).
    pub fn has(&self, name: &str) -> bool {
        index(name).is_some_and(|i| self.granted.contains(&i))
    }

    /// The OCI form.
    pub fn to_oci(&self) -> LinuxCapabilities {
        let set = |s: &BTreeSet<usize>| -> Capabilities { s.iter().map(|i| ALL[*i].1).collect() };
        let mut caps = LinuxCapabilities::default();
        caps.set_bounding(Some(set(&self.granted)))
            .set_effective(Some(set(&self.granted)))
            .set_permitted(Some(set(&self.granted)))
            .set_inheritable(Some(set(&self.ambient)))
            .set_ambient(Some(set(&self.ambient)));
        caps
    }
}

/// Unprivileged: the default set, then `add: ALL`, `drop: ALL`, the named adds, the named
/// drops (containerd's order). Privileged: everything in `all`, ignoring add/drop. `all`
/// is what "every capability" means on this node: those the runtime itself holds (see
/// [`runtime_capabilities`]).
pub(crate) fn build(
    cri: Option<&CriCapabilities>,
    privileged: bool,
    all: &BTreeSet<usize>,
) -> Result<CapabilityPlan, SpecError> {
    if privileged {
        return Ok(CapabilityPlan {
            granted: all.clone(),
            ambient: BTreeSet::new(),
        });
    }
    let empty = CriCapabilities::default();
    let cri = cri.unwrap_or(&empty);
    let is_all = |n: &String| n.eq_ignore_ascii_case("ALL");
    let mut granted: BTreeSet<usize> = DEFAULT.iter().filter_map(|n| index(n)).collect();
    if cri.add_capabilities.iter().any(is_all) {
        granted.extend(all);
    }
    if cri.drop_capabilities.iter().any(is_all) {
        granted.clear();
    }
    for name in cri.add_capabilities.iter().filter(|n| !is_all(n)) {
        granted.insert(parse(name)?);
    }
    for name in cri.drop_capabilities.iter().filter(|n| !is_all(n)) {
        granted.remove(&parse(name)?);
    }
    let mut ambient = BTreeSet::new();
    for name in &cri.add_ambient_capabilities {
        let cap = parse(name)?;
        granted.insert(cap);
        ambient.insert(cap);
    }
    Ok(CapabilityPlan { granted, ambient })
}

/// The capabilities this process's bounding set holds (and so can hand to a container it
/// starts), limited to those the kernel knows; a runtime inside a restricted container
/// cannot grant more than it has.
pub(crate) fn runtime_capabilities() -> BTreeSet<usize> {
    let last_cap: usize = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(ALL.len() - 1);
    let known = (0..ALL.len().min(last_cap + 1)).collect();
    match caps::read(None, caps::CapSet::Bounding) {
        Ok(held) => held
            .iter()
            .map(|c| usize::from(c.index()))
            .filter(|i| *i < ALL.len() && *i <= last_cap)
            .collect(),
        Err(_) => known,
    }
}

/// Every capability the table knows, for tests and callers that want no host limit.
#[cfg(test)]
pub(crate) fn every_capability() -> BTreeSet<usize> {
    (0..ALL.len()).collect()
}

fn parse(name: &str) -> Result<usize, SpecError> {
    index(name).ok_or_else(|| SpecError::UnknownCapability(name.to_owned()))
}

fn index(name: &str) -> Option<usize> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    ALL.iter().position(|(n, _)| *n == bare)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(add: &[&str], drop: &[&str]) -> CriCapabilities {
        CriCapabilities {
            add_capabilities: add.iter().map(|s| s.to_string()).collect(),
            drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
            add_ambient_capabilities: vec![],
        }
    }

    fn names(plan: &CapabilityPlan) -> Vec<&'static str> {
        plan.granted.iter().map(|i| ALL[*i].0).collect()
    }

    #[test]
    fn table_is_in_kernel_order() {
        assert_eq!(index("CHOWN"), Some(0));
        assert_eq!(index("SYS_ADMIN"), Some(21));
        assert_eq!(index("MKNOD"), Some(27));
        assert_eq!(index("AUDIT_READ"), Some(37));
        assert_eq!(index("CHECKPOINT_RESTORE"), Some(40));
    }

    #[test]
    fn default_set() {
        let plan = build(None, false, &every_capability()).unwrap();
        assert_eq!(plan.granted.len(), DEFAULT.len());
        assert!(plan.has("NET_BIND_SERVICE") && plan.has("AUDIT_WRITE"));
        assert!(!plan.has("SYS_ADMIN") && !plan.has("NET_ADMIN"));
        assert!(plan.ambient.is_empty());
    }

    #[test]
    fn add_and_drop_with_or_without_prefix() {
        let plan = build(
            Some(&caps(
                &["NET_ADMIN", "cap_sys_time"],
                &["CAP_NET_RAW", "mknod"],
            )),
            false,
            &every_capability(),
        )
        .unwrap();
        assert!(plan.has("NET_ADMIN") && plan.has("SYS_TIME"));
        assert!(!plan.has("NET_RAW") && !plan.has("MKNOD"));
        // drop wins over add of the same capability
        let plan = build(
            Some(&caps(&["NET_ADMIN"], &["NET_ADMIN"])),
            false,
            &every_capability(),
        )
        .unwrap();
        assert!(!plan.has("NET_ADMIN"));
    }

    #[test]
    fn all_keyword() {
        let plan = build(Some(&caps(&[], &["ALL"])), false, &every_capability()).unwrap();
        assert!(plan.granted.is_empty());
        let plan = build(
            Some(&caps(&["NET_BIND_SERVICE"], &["all"])),
            false,
            &every_capability(),
        )
        .unwrap();
        assert_eq!(names(&plan), ["NET_BIND_SERVICE"]);
        let plan = build(
            Some(&caps(&["ALL"], &["SYS_ADMIN"])),
            false,
            &every_capability(),
        )
        .unwrap();
        assert_eq!(plan.granted.len(), 40);
        assert!(!plan.has("SYS_ADMIN") && plan.has("BPF"));
        // what the runtime holds bounds ALL
        let held: BTreeSet<usize> = (0..=37).collect();
        let plan = build(Some(&caps(&["ALL"], &[])), false, &held).unwrap();
        assert_eq!(plan.granted.len(), 38);
        let plan = build(None, true, &held).unwrap();
        assert_eq!(plan.granted, held);
    }

    #[test]
    fn runtime_capabilities_match_this_process() {
        let held = runtime_capabilities();
        let bounding = caps::read(None, caps::CapSet::Bounding).unwrap();
        assert_eq!(
            held.len(),
            bounding.iter().filter(|c| c.index() < 41).count()
        );
        assert!(held.iter().all(|i| *i < ALL.len()));
    }

    #[test]
    fn unknown_names_are_errors() {
        let err = build(Some(&caps(&["NET_FLY"], &[])), false, &every_capability()).unwrap_err();
        assert_eq!(err.to_string(), "unknown capability \"NET_FLY\"");
        assert!(build(Some(&caps(&[], &["CAP_"])), false, &every_capability()).is_err());
    }

    #[test]
    fn privileged_gets_everything() {
        let plan = build(Some(&caps(&[], &["ALL"])), true, &every_capability()).unwrap();
        assert_eq!(plan.granted.len(), 41);
        let oci = plan.to_oci();
        assert!(oci
            .bounding()
            .as_ref()
            .unwrap()
            .contains(&Capability::SysAdmin));
        assert!(oci.inheritable().as_ref().unwrap().is_empty());
    }

    #[test]
    fn ambient_capabilities() {
        let mut cri = caps(&[], &[]);
        cri.add_ambient_capabilities = vec!["NET_ADMIN".into()];
        let plan = build(Some(&cri), false, &every_capability()).unwrap();
        assert!(plan.has("NET_ADMIN"));
        let oci = plan.to_oci();
        assert_eq!(oci.ambient().as_ref().unwrap().len(), 1);
        assert!(oci
            .inheritable()
            .as_ref()
            .unwrap()
            .contains(&Capability::NetAdmin));
        assert!(oci
            .permitted()
            .as_ref()
            .unwrap()
            .contains(&Capability::NetAdmin));
    }
}
