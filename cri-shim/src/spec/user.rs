//! The process's uid, gid and supplementary groups, resolved against the image's own
//! /etc/passwd and /etc/group.

use std::path::Path;

use k8s_cri::v1::{LinuxContainerSecurityContext, SupplementalGroupsPolicy};

use super::rootfs_file::read_in_root;
use super::SpecError;

/// The identity the container process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResolvedUser {
    /// User ID.
    pub uid: u32,
    /// Primary group ID.
    pub gid: u32,
    /// Supplementary groups, the primary group first.
    pub additional_gids: Vec<u32>,
    /// Home directory from /etc/passwd (`/` when the user has no entry).
    pub home: String,
}

/// One /etc/passwd line.
#[derive(Debug, Clone)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

/// One /etc/group line.
#[derive(Debug, Clone)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// A user or group as written: numeric ID or name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Id {
    Numeric(u32),
    Name(String),
}

impl Id {
    fn parse(s: &str) -> Self {
        match s.parse::<u32>() {
            Ok(n) => Self::Numeric(n),
            Err(_) => Self::Name(s.to_owned()),
        }
    }
}

/// What the CRI config or image asks for, before lookup.
#[derive(Debug)]
struct Request {
    user: Id,
    group: Option<Id>,
    /// Add the groups that list the user in /etc/group.
    merge_image_groups: bool,
    supplemental: Vec<u32>,
}

/// Resolve the process identity: the CRI security context's user fields win, else the
/// image's `User` ("uid", "name", "uid:gid", "name:group", ...), else root.
pub(crate) fn resolve(
    sc: Option<&LinuxContainerSecurityContext>,
    image_user: &str,
    rootfs: &Path,
) -> Result<ResolvedUser, SpecError> {
    let request = request(sc, image_user)?;
    let passwd = read_db(rootfs, "etc/passwd")?
        .map(|t| parse_passwd(&t))
        .unwrap_or_default();
    let entry = match &request.user {
        Id::Numeric(uid) => passwd.iter().find(|e| e.uid == *uid),
        Id::Name(name) => Some(
            passwd
                .iter()
                .find(|e| &e.name == name)
                .ok_or_else(|| SpecError::UnknownUser(name.clone()))?,
        ),
    };
    let uid = match &request.user {
        Id::Numeric(uid) => *uid,
        Id::Name(_) => entry.map_or(0, |e| e.uid),
    };
    let needs_groups = request.merge_image_groups || matches!(request.group, Some(Id::Name(_)));
    let groups = if needs_groups {
        read_db(rootfs, "etc/group")?
            .map(|t| parse_group(&t))
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let gid = match &request.group {
        Some(Id::Numeric(gid)) => *gid,
        Some(Id::Name(name)) => {
            groups
                .iter()
                .find(|g| &g.name == name)
                .ok_or_else(|| SpecError::UnknownGroup(name.clone()))?
                .gid
        }
        None => entry.map_or(0, |e| e.gid),
    };
    let mut additional = vec![gid];
    if request.merge_image_groups {
        if let Some(name) = entry.map(|e| e.name.as_str()) {
            let listed = groups
                .iter()
                .filter(|g| g.members.iter().any(|m| m == name))
                .map(|g| g.gid);
            push_unique(&mut additional, listed);
        }
    }
    push_unique(&mut additional, request.supplemental.iter().copied());
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: additional,
        home: entry
            .map(|e| e.home.clone())
            .filter(|h| h.starts_with('/'))
            .unwrap_or_else(|| "/".to_owned()),
    })
}

fn push_unique(into: &mut Vec<u32>, gids: impl Iterator<Item = u32>) {
    for gid in gids {
        if !into.contains(&gid) {
            into.push(gid);
        }
    }
}

fn request(
    sc: Option<&LinuxContainerSecurityContext>,
    image_user: &str,
) -> Result<Request, SpecError> {
    let strict = sc
        .is_some_and(|sc| sc.supplemental_groups_policy == SupplementalGroupsPolicy::Strict as i32);
    let supplemental = sc
        .map(|sc| sc.supplemental_groups.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|g| {
            u32::try_from(*g).map_err(|_| {
                SpecError::field("supplemental_groups", format!("{g} is not a valid gid"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let run_as_group = sc
        .and_then(|sc| sc.run_as_group)
        .map(|g| {
            u32::try_from(g.value).map_err(|_| {
                SpecError::field("run_as_group", format!("{} is not a valid gid", g.value))
            })
        })
        .transpose()?;
    if let Some(uid) = sc.and_then(|sc| sc.run_as_user) {
        let uid = u32::try_from(uid.value).map_err(|_| {
            SpecError::field("run_as_user", format!("{} is not a valid uid", uid.value))
        })?;
        return Ok(Request {
            user: Id::Numeric(uid),
            group: run_as_group.map(Id::Numeric),
            merge_image_groups: !strict,
            supplemental,
        });
    }
    if let Some(name) = sc
        .map(|sc| sc.run_as_username.as_str())
        .filter(|n| !n.is_empty())
    {
        return Ok(Request {
            user: Id::Name(name.to_owned()),
            group: run_as_group.map(Id::Numeric),
            merge_image_groups: !strict,
            supplemental,
        });
    }
    if run_as_group.is_some() {
        return Err(SpecError::field(
            "run_as_group",
            "set without run_as_user or run_as_username",
        ));
    }
    let (user, group) = match image_user.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (image_user, None),
    };
    if group.is_some_and(str::is_empty) || (user.is_empty() && group.is_some()) {
        return Err(SpecError::InvalidUser {
            user: image_user.to_owned(),
            reason: "expected user, uid, user:group or uid:gid".into(),
        });
    }
    Ok(Request {
        user: if user.is_empty() {
            Id::Numeric(0)
        } else {
            Id::parse(user)
        },
        // An explicit group in the image replaces the user's /etc/group memberships, as the
        // OCI image spec describes for `User`.
        merge_image_groups: group.is_none() && !strict,
        group: group.map(Id::parse),
        supplemental,
    })
}

fn read_db(rootfs: &Path, relative: &'static str) -> Result<Option<String>, SpecError> {
    read_in_root(rootfs, relative).map_err(|source| SpecError::ImageFile {
        path: relative.to_owned(),
        source,
    })
}

/// Lines that do not parse (comments, NIS `+` entries, garbage) are skipped, as libc does.
fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() < 4 || fields[0].is_empty() || line.starts_with('#') {
                return None;
            }
            Some(PasswdEntry {
                name: fields[0].to_owned(),
                uid: fields[2].trim().parse().ok()?,
                gid: fields[3].trim().parse().ok()?,
                home: fields.get(5).map(|h| (*h).to_owned()).unwrap_or_default(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() < 3 || fields[0].is_empty() || line.starts_with('#') {
                return None;
            }
            Some(GroupEntry {
                name: fields[0].to_owned(),
                gid: fields[2].trim().parse().ok()?,
                members: fields
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|m| !m.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::Int64Value;
    use std::os::unix::fs::symlink;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
# a comment
daemon:x:1:1::/usr/sbin:/usr/sbin/nologin
app:x:1000:1001:App:/home/app:/bin/sh
broken:x:notanumber:1::/:/bin/sh
";
    const GROUP: &str = "\
root:x:0:
wheel:x:10:root,app
app:x:1001:
audio:x:29:daemon, app
staff:x:50:
";

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), PASSWD).unwrap();
        std::fs::write(dir.path().join("etc/group"), GROUP).unwrap();
        dir
    }

    fn base() -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext::default()
    }

    #[test]
    fn image_user_by_name() {
        let root = rootfs();
        let u = resolve(None, "app", root.path()).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1001));
        assert_eq!(u.additional_gids, vec![1001, 10, 29]);
        assert_eq!(u.home, "/home/app");
    }

    #[test]
    fn empty_image_user_is_root_with_its_groups() {
        let root = rootfs();
        let u = resolve(None, "", root.path()).unwrap();
        assert_eq!((u.uid, u.gid), (0, 0));
        assert_eq!(u.additional_gids, vec![0, 10]);
        assert_eq!(u.home, "/root");
    }

    #[test]
    fn numeric_uid_uses_passwd_entry_when_present() {
        let root = rootfs();
        let u = resolve(None, "1000", root.path()).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1001));
        assert_eq!(u.additional_gids, vec![1001, 10, 29]);
    }

    #[test]
    fn numeric_uid_without_entry_gets_gid_zero() {
        let root = rootfs();
        let u = resolve(None, "4242", root.path()).unwrap();
        assert_eq!((u.uid, u.gid), (4242, 0));
        assert_eq!(u.additional_gids, vec![0]);
        assert_eq!(u.home, "/");
        let u = resolve(None, "4242:77", root.path()).unwrap();
        assert_eq!((u.uid, u.gid), (4242, 77));
    }

    #[test]
    fn explicit_group_forms() {
        let root = rootfs();
        let u = resolve(None, "app:staff", root.path()).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 50));
        // An explicit group replaces the /etc/group memberships.
        assert_eq!(u.additional_gids, vec![50]);
        let u = resolve(None, "1000:wheel", root.path()).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 10));
        let u = resolve(None, "daemon:5", root.path()).unwrap();
        assert_eq!((u.uid, u.gid), (1, 5));
    }

    #[test]
    fn unknown_names_are_errors_naming_them() {
        let root = rootfs();
        let err = resolve(None, "nobody-here", root.path()).unwrap_err();
        assert!(matches!(&err, SpecError::UnknownUser(n) if n == "nobody-here"));
        assert!(err.to_string().contains("nobody-here"));
        let err = resolve(None, "app:nogroup", root.path()).unwrap_err();
        assert!(matches!(&err, SpecError::UnknownGroup(n) if n == "nogroup"));
    }

    #[test]
    fn malformed_user_strings() {
        let root = rootfs();
        for bad in ["app:", ":10"] {
            assert!(
                matches!(
                    resolve(None, bad, root.path()),
                    Err(SpecError::InvalidUser { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn missing_account_files() {
        let root = tempfile::tempdir().unwrap();
        let u = resolve(None, "123", root.path()).unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids), (123, 0, vec![0]));
        assert!(matches!(
            resolve(None, "app", root.path()),
            Err(SpecError::UnknownUser(_))
        ));
    }

    #[test]
    fn cri_run_as_user_overrides_image_user() {
        let root = rootfs();
        let sc = LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 1000 }),
            supplemental_groups: vec![4000, 10],
            ..base()
        };
        let u = resolve(Some(&sc), "daemon", root.path()).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1001));
        assert_eq!(u.additional_gids, vec![1001, 10, 29, 4000]);
    }

    #[test]
    fn cri_run_as_group_merges_image_groups_like_kubernetes() {
        let root = rootfs();
        let sc = LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 1000 }),
            run_as_group: Some(Int64Value { value: 3000 }),
            supplemental_groups: vec![4000],
            ..base()
        };
        let u = resolve(Some(&sc), "", root.path()).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 3000));
        assert_eq!(u.additional_gids, vec![3000, 10, 29, 4000]);

        let strict = LinuxContainerSecurityContext {
            supplemental_groups_policy: SupplementalGroupsPolicy::Strict as i32,
            ..sc
        };
        let u = resolve(Some(&strict), "", root.path()).unwrap();
        assert_eq!(u.additional_gids, vec![3000, 4000]);
    }

    #[test]
    fn cri_run_as_username() {
        let root = rootfs();
        let sc = LinuxContainerSecurityContext {
            run_as_username: "daemon".into(),
            ..base()
        };
        let u = resolve(Some(&sc), "app", root.path()).unwrap();
        assert_eq!((u.uid, u.gid), (1, 1));
        assert_eq!(u.additional_gids, vec![1, 29]);
        let sc = LinuxContainerSecurityContext {
            run_as_username: "ghost".into(),
            ..sc
        };
        assert!(matches!(
            resolve(Some(&sc), "", root.path()),
            Err(SpecError::UnknownUser(n)) if n == "ghost"
        ));
    }

    #[test]
    fn cri_group_without_user_is_an_error() {
        let root = rootfs();
        let sc = LinuxContainerSecurityContext {
            run_as_group: Some(Int64Value { value: 5 }),
            ..base()
        };
        let err = resolve(Some(&sc), "app", root.path()).unwrap_err();
        assert!(err.to_string().contains("run_as_group"), "{err}");
        let sc = LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: -1 }),
            ..base()
        };
        assert!(resolve(Some(&sc), "", root.path())
            .unwrap_err()
            .to_string()
            .contains("run_as_user"));
    }

    #[test]
    fn symlinked_passwd_to_host_file_is_not_read() {
        let host = tempfile::tempdir().unwrap();
        let host_passwd = host.path().join("passwd");
        std::fs::write(&host_passwd, "hostonly:x:4242:4242::/host:/bin/sh\n").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        symlink(&host_passwd, root.path().join("etc/passwd")).unwrap();
        let err = resolve(None, "hostonly", root.path()).unwrap_err();
        assert!(matches!(err, SpecError::UnknownUser(n) if n == "hostonly"));
        // A numeric uid that exists only in the host file gets no gid from it either.
        let u = resolve(None, "4242", root.path()).unwrap();
        assert_eq!((u.gid, u.home.as_str()), (0, "/"));
    }
}
