//! The cgroup filesystems listed in `/proc/self/mountinfo`.

use std::path::PathBuf;

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// `cgroup` (v1) or `cgroup2`.
    pub fstype: String,
    /// Superblock options without `rw`/`ro`: the controllers of a v1 hierarchy
    /// (`cpu`, `cpuacct`, `name=systemd`, ...).
    pub options: Vec<String>,
}

impl CgroupMount {
    /// Whether this hierarchy carries the controllers of a `/proc/<pid>/cgroup` entry
    /// (`hierarchy-id:controllers:path`; v2 entries have id 0 and no controllers).
    pub fn serves(&self, id: &str, controllers: &str) -> bool {
        if id == "0" && controllers.is_empty() {
            return self.fstype == "cgroup2";
        }
        self.fstype == "cgroup"
            && !controllers.is_empty()
            && controllers
                .split(',')
                .all(|c| self.options.iter().any(|o| o == c))
    }
}

/// Every cgroup and cgroup2 mount of a mountinfo text.
pub fn cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    mountinfo
        .lines()
        .filter_map(parse_line)
        .filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2")
        .collect()
}

fn parse_line(line: &str) -> Option<CgroupMount> {
    let (before, after) = line.split_once(" - ")?;
    let mount_point = unescape(before.split(' ').nth(4)?);
    let mut after = after.split(' ');
    let fstype = after.next()?.to_owned();
    let _source = after.next()?;
    let options = after
        .next()
        .unwrap_or("")
        .split(',')
        .filter(|o| !o.is_empty() && *o != "rw" && *o != "ro")
        .map(str::to_owned)
        .collect();
    Some(CgroupMount {
        mount_point: PathBuf::from(mount_point),
        fstype,
        options,
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(value) = u8::from_str_radix(digits, 8) {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
27 26 0:25 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
28 26 0:26 / /sys/fs/cgroup/systemd rw,nosuid shared:10 master:3 - cgroup cgroup rw,xattr,name=systemd
31 26 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
";

    #[test]
    fn cgroup_mounts_with_their_controllers() {
        let mounts = cgroup_mounts(HYBRID);
        assert_eq!(mounts.len(), 3);
        assert_eq!(
            mounts[0].mount_point,
            PathBuf::from("/sys/fs/cgroup/unified")
        );
        assert_eq!(mounts[0].options, vec!["nsdelegate".to_owned()]);
        assert_eq!(
            mounts[1].options,
            vec!["xattr".to_owned(), "name=systemd".to_owned()]
        );
        assert_eq!(mounts[2].fstype, "cgroup");
    }

    #[test]
    fn entries_find_their_hierarchy() {
        let mounts = cgroup_mounts(HYBRID);
        let find = |id: &str, controllers: &str| {
            mounts
                .iter()
                .find(|m| m.serves(id, controllers))
                .map(|m| m.mount_point.clone())
        };
        assert_eq!(find("0", ""), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(
            find("4", "cpu,cpuacct"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(
            find("1", "name=systemd"),
            Some(PathBuf::from("/sys/fs/cgroup/systemd"))
        );
        assert_eq!(find("9", "memory"), None);
    }

    #[test]
    fn escaped_mount_points() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/end\04"), r"/end\04");
    }
}
