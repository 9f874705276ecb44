//! Joining the container's cgroup (cgroups-rs; cgroup v1 and v2).

use cgroups_rs::fs::hierarchies;
use cgroups_rs::fs::Cgroup;
use cgroups_rs::CgroupPid;

use super::error::{ExecutorError, Result, SysContext};
use super::mountinfo::cgroup_mounts;

/// Moves the calling process into `path` (absolute within each hierarchy, like
/// `linux.cgroupsPath`), in every hierarchy the host mounts.
pub fn join(path: &str) -> Result<()> {
    let relative = path.trim_start_matches('/');
    if relative.split('/').any(|c| c == "..") {
        return Err(ExecutorError::Invalid(format!(
            "cgroup path {path:?} climbs with .."
        )));
    }
    let cgroup = Cgroup::load(hierarchies::auto(), relative);
    if !cgroup.exists() {
        return Err(ExecutorError::Cgroup {
            path: path.to_owned(),
            message: "does not exist".into(),
        });
    }
    cgroup
        .add_task_by_tgid(CgroupPid::from(std::process::id() as u64))
        .map_err(|e| ExecutorError::Cgroup {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

/// Moves the calling process into every cgroup the running process `pid` is in, hierarchy
/// by hierarchy (the paths may differ between v1 hierarchies). Entries of hierarchies the
/// host does not mount are skipped.
pub fn join_process(pid: i32) -> Result<()> {
    let entries = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .sys(|| format!("reading /proc/{pid}/cgroup"))?;
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").sys(|| "reading /proc/self/mountinfo")?;
    let mounts = cgroup_mounts(&mountinfo);
    let me = std::process::id().to_string();
    for (id, controllers, path) in parse_proc_cgroup(&entries) {
        let Some(mount) = mounts.iter().find(|m| m.serves(id, controllers)) else {
            continue;
        };
        let relative = path.trim_start_matches('/');
        if relative.split('/').any(|c| c == "..") {
            return Err(ExecutorError::Invalid(format!(
                "cgroup path {path:?} of process {pid} climbs with .."
            )));
        }
        let procs = mount.mount_point.join(relative).join("cgroup.procs");
        std::fs::write(&procs, &me).sys(|| format!("joining cgroup {}", procs.display()))?;
    }
    Ok(())
}

/// The `(hierarchy id, controllers, path)` entries of a `/proc/<pid>/cgroup` text.
pub fn parse_proc_cgroup(text: &str) -> Vec<(&str, &str, &str)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            Some((fields.next()?, fields.next()?, fields.next()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_cgroup_entries() {
        let text = "12:pids:/capstan/pod/ctr\n1:name=systemd:/user.slice\n0::/a:b\n";
        assert_eq!(
            parse_proc_cgroup(text),
            vec![
                ("12", "pids", "/capstan/pod/ctr"),
                ("1", "name=systemd", "/user.slice"),
                ("0", "", "/a:b"),
            ]
        );
        assert!(parse_proc_cgroup("garbage").is_empty());
    }

    #[test]
    fn climbing_paths_are_refused() {
        assert!(join("/capstan/../../etc").is_err());
    }
}
