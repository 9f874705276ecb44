//! Device nodes created in the container and the device cgroup rules that go with them.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use k8s_cri::v1::Device;
use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType};

use super::SpecError;

/// Directories of the host's /dev that hold no devices a privileged container should get.
const HOST_DEV_SKIP: &[&str] = &["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];

/// Nodes to create plus the cgroup rules allowing them.
#[derive(Debug, Default)]
pub(crate) struct DevicePlan {
    /// `linux.devices`.
    pub devices: Vec<LinuxDevice>,
    /// `linux.resources.devices`, evaluated in order (last match wins).
    pub cgroup: Vec<LinuxDeviceCgroup>,
}

/// Deny everything, allow the devices every container has (/dev/null, zero, full, random,
/// urandom, tty, ptmx and pts, tun) and mknod of any node, then the CRI devices. Privileged
/// containers get every host device and no restriction.
pub(crate) fn build(cri: &[Device], privileged: bool) -> Result<DevicePlan, SpecError> {
    let mut plan = DevicePlan::default();
    for device in cri {
        let access = permissions(device)?;
        let mut found = Vec::new();
        let host = PathBuf::from(&device.host_path);
        let container = PathBuf::from(&device.container_path);
        if !container.is_absolute() {
            return Err(SpecError::Device {
                path: device.host_path.clone(),
                reason: format!("container_path {:?} is not absolute", device.container_path),
            });
        }
        collect(&host, &container, &mut found, true)?;
        for dev in found {
            plan.cgroup.push(allow(
                dev.typ(),
                Some(dev.major()),
                Some(dev.minor()),
                &access,
            ));
            plan.devices.push(dev);
        }
    }
    if privileged {
        let mut host = Vec::new();
        collect_host_devices(Path::new("/dev"), &mut host);
        for dev in host {
            if !plan.devices.iter().any(|d| d.path() == dev.path()) {
                plan.devices.push(dev);
            }
        }
        plan.cgroup = vec![allow(LinuxDeviceType::A, None, None, "rwm")];
        return Ok(plan);
    }
    let mut rules = vec![deny_all()];
    rules.extend(default_rules());
    rules.append(&mut plan.cgroup);
    plan.cgroup = rules;
    Ok(plan)
}

fn permissions(device: &Device) -> Result<String, SpecError> {
    if device.permissions.is_empty() {
        return Ok("rwm".to_owned());
    }
    if device
        .permissions
        .chars()
        .all(|c| matches!(c, 'r' | 'w' | 'm'))
    {
        Ok(device.permissions.clone())
    } else {
        Err(SpecError::Device {
            path: device.host_path.clone(),
            reason: format!(
                "permissions {:?} may only contain r, w and m",
                device.permissions
            ),
        })
    }
}

/// A host device node (followed through symlinks) or, for a directory, every device node
/// below it, mapped to the same relative paths under `container`.
fn collect(
    host: &Path,
    container: &Path,
    out: &mut Vec<LinuxDevice>,
    top: bool,
) -> Result<(), SpecError> {
    let err = |reason: String| SpecError::Device {
        path: host.display().to_string(),
        reason,
    };
    let meta = std::fs::metadata(host).map_err(|e| err(e.to_string()))?;
    if meta.is_dir() {
        let entries = std::fs::read_dir(host).map_err(|e| err(e.to_string()))?;
        for entry in entries {
            let entry = entry.map_err(|e| err(e.to_string()))?;
            let name = entry.file_name();
            collect(&host.join(&name), &container.join(&name), out, false)?;
        }
        return Ok(());
    }
    match node(container, &meta) {
        Some(dev) => out.push(dev),
        None if top => return Err(err("not a device node".into())),
        None => {}
    }
    Ok(())
}

fn node(path: &Path, meta: &std::fs::Metadata) -> Option<LinuxDevice> {
    let typ = if meta.file_type().is_char_device() {
        LinuxDeviceType::C
    } else if meta.file_type().is_block_device() {
        LinuxDeviceType::B
    } else {
        return None;
    };
    let rdev = meta.rdev();
    let mut dev = LinuxDevice::default();
    dev.set_path(path.to_path_buf())
        .set_typ(typ)
        .set_major(nix::sys::stat::major(rdev) as i64)
        .set_minor(nix::sys::stat::minor(rdev) as i64)
        .set_file_mode(Some(meta.mode() & 0o7777))
        .set_uid(Some(meta.uid()))
        .set_gid(Some(meta.gid()));
    Some(dev)
}

/// Every device node under the host's /dev except pty/shm/fd plumbing and the console;
/// entries that vanish or cannot be read while walking are skipped.
fn collect_host_devices(dir: &Path, out: &mut Vec<LinuxDevice>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if !HOST_DEV_SKIP.iter().any(|s| entry.file_name() == *s) {
                collect_host_devices(&path, out);
            }
        } else if entry.file_name() != "console" {
            if let Some(dev) = node(&path, &meta) {
                out.push(dev);
            }
        }
    }
}

fn allow(
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut rule = LinuxDeviceCgroup::default();
    rule.set_allow(true)
        .set_typ(Some(typ))
        .set_major(major)
        .set_minor(minor)
        .set_access(Some(access.to_owned()));
    rule
}

fn deny_all() -> LinuxDeviceCgroup {
    let mut rule = LinuxDeviceCgroup::default();
    rule.set_allow(false).set_access(Some("rwm".to_owned()));
    rule
}

fn default_rules() -> Vec<LinuxDeviceCgroup> {
    use LinuxDeviceType::{B, C};
    let c = |major, minor| allow(C, Some(major), Some(minor), "rwm");
    vec![
        allow(C, None, None, "m"),
        allow(B, None, None, "m"),
        c(1, 3),                          // null
        c(1, 5),                          // zero
        c(1, 7),                          // full
        c(1, 8),                          // random
        c(1, 9),                          // urandom
        c(5, 0),                          // tty
        c(5, 2),                          // ptmx
        allow(C, Some(136), None, "rwm"), // pts
        c(10, 200),                       // net/tun
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(container: &str, host: &str, perms: &str) -> Device {
        Device {
            container_path: container.into(),
            host_path: host.into(),
            permissions: perms.into(),
        }
    }

    #[test]
    fn default_rules_deny_first() {
        let plan = build(&[], false).unwrap();
        assert!(plan.devices.is_empty());
        assert!(!plan.cgroup[0].allow());
        assert_eq!(plan.cgroup[0].access().as_deref(), Some("rwm"));
        assert!(plan
            .cgroup
            .iter()
            .any(|r| r.allow() && r.major() == Some(1) && r.minor() == Some(3)));
    }

    #[test]
    fn cri_device_reads_host_node() {
        let plan = build(&[device("/dev/mynull", "/dev/null", "rw")], false).unwrap();
        let dev = &plan.devices[0];
        assert_eq!(dev.path(), Path::new("/dev/mynull"));
        assert_eq!(dev.typ(), LinuxDeviceType::C);
        assert_eq!((dev.major(), dev.minor()), (1, 3));
        assert_eq!(dev.file_mode(), Some(0o666));
        let last = plan.cgroup.last().unwrap();
        assert!(last.allow());
        assert_eq!(last.typ(), Some(LinuxDeviceType::C));
        assert_eq!((last.major(), last.minor()), (Some(1), Some(3)));
        assert_eq!(last.access().as_deref(), Some("rw"));
    }

    #[test]
    fn cri_device_errors() {
        let err = build(&[device("/dev/x", "/nonexistent-dev", "")], false).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dev"), "{err}");
        let file = tempfile::NamedTempFile::new().unwrap();
        let path = file.path().to_str().unwrap();
        let err = build(&[device("/dev/x", path, "")], false).unwrap_err();
        assert!(err.to_string().contains("not a device"), "{err}");
        assert!(build(&[device("/dev/x", "/dev/null", "rwx")], false).is_err());
        assert!(build(&[device("dev/x", "/dev/null", "")], false).is_err());
    }

    #[test]
    fn cri_device_directory_walks_nodes() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("z")).unwrap();
        std::fs::write(dir.path().join("not-a-device"), "").unwrap();
        let plan = build(
            &[device("/dev/grp", dir.path().to_str().unwrap(), "")],
            false,
        )
        .unwrap();
        assert_eq!(plan.devices.len(), 1);
        assert_eq!(plan.devices[0].path(), Path::new("/dev/grp/z"));
        assert_eq!(plan.devices[0].minor(), 5);
    }

    #[test]
    fn privileged_gets_host_devices_and_no_restriction() {
        let plan = build(&[], true).unwrap();
        assert!(plan
            .devices
            .iter()
            .any(|d| d.path() == Path::new("/dev/null") && d.major() == 1 && d.minor() == 3));
        assert!(plan
            .devices
            .iter()
            .all(|d| !d.path().starts_with("/dev/pts") && d.path() != Path::new("/dev/console")));
        assert_eq!(plan.cgroup.len(), 1);
        assert!(plan.cgroup[0].allow());
        assert_eq!(plan.cgroup[0].typ(), Some(LinuxDeviceType::A));
    }
}
