//! Joining the container's cgroup (cgroups-rs; cgroup v1 and v2).

use cgroups_rs::fs::hierarchies;
use cgroups_rs::fs::Cgroup;
use cgroups_rs::CgroupPid;

use super::error::{ExecutorError, Result, SysContext};

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

/// The cgroup of the running process `pid`, as seen from our cgroup namespace.
pub fn of_process(pid: i32) -> Result<Option<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .sys(|| format!("reading /proc/{pid}/cgroup"))?;
    Ok(parse_proc_cgroup(&text))
}

/// The path to join from a `/proc/<pid>/cgroup` text: the unified entry (`0::/path`)
/// on a v2 host, otherwise the first v1 controller's path.
pub fn parse_proc_cgroup(text: &str) -> Option<String> {
    let entries: Vec<(&str, &str, &str)> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            Some((fields.next()?, fields.next()?, fields.next()?))
        })
        .collect();
    let v1 = entries
        .iter()
        .find(|(_, controllers, _)| !controllers.is_empty() && !controllers.starts_with("name="));
    let chosen = if hierarchies::is_cgroup2_unified_mode() || v1.is_none() {
        entries.iter().find(|(id, _, _)| *id == "0")
    } else {
        v1
    };
    chosen.map(|(_, _, path)| (*path).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_controller_path_is_preferred_on_v1_hosts() {
        let text = "12:pids:/capstan/pod/ctr\n1:name=systemd:/user.slice\n0::/unified\n";
        if hierarchies::is_cgroup2_unified_mode() {
            assert_eq!(parse_proc_cgroup(text).as_deref(), Some("/unified"));
        } else {
            assert_eq!(parse_proc_cgroup(text).as_deref(), Some("/capstan/pod/ctr"));
        }
    }

    #[test]
    fn unified_only() {
        assert_eq!(
            parse_proc_cgroup("0::/capstan/pod/ctr\n").as_deref(),
            Some("/capstan/pod/ctr")
        );
        assert_eq!(parse_proc_cgroup(""), None);
    }

    #[test]
    fn climbing_paths_are_refused() {
        assert!(join("/capstan/../../etc").is_err());
    }
}
