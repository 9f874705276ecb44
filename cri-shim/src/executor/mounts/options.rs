//! fstab-style mount options of the spec split into mount(2) flags, propagation changes
//! and filesystem data.

use nix::mount::MsFlags;

/// A spec mount's options, ready for mount(2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags of the mount itself (`ro`, `nosuid`, ...).
    pub flags: MsFlags,
    /// Propagation to apply after mounting (`rslave`, `private`, ...), applied in order.
    pub propagation: Vec<MsFlags>,
    /// Options the filesystem interprets (`mode=755`, `size=64m`, ...), comma-joined.
    pub data: Vec<String>,
    /// `bind` or `rbind` was given.
    pub bind: bool,
    /// `rbind`: submounts of the source come along.
    pub recursive: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        Self {
            flags: MsFlags::empty(),
            propagation: Vec::new(),
            data: Vec::new(),
            bind: false,
            recursive: false,
        }
    }
}

impl MountOptions {
    /// The data string for mount(2), `None` when empty.
    pub fn data(&self) -> Option<String> {
        (!self.data.is_empty()).then(|| self.data.join(","))
    }

    /// Flags a read-only or hardened bind needs in a second, remounting call (the first
    /// bind call ignores them).
    pub fn remount_flags(&self) -> MsFlags {
        self.flags
            & (MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC
                | MsFlags::MS_NOATIME
                | MsFlags::MS_NODIRATIME
                | MsFlags::MS_RELATIME
                | MsFlags::MS_STRICTATIME)
    }
}

/// Splits `options` (as in the spec) into flags, propagation and data.
pub fn parse<S: AsRef<str>>(options: &[S]) -> MountOptions {
    let mut parsed = MountOptions::default();
    for option in options {
        let option = option.as_ref();
        if let Some(flag) = propagation(option) {
            parsed.propagation.push(flag);
            continue;
        }
        match option {
            "bind" => parsed.bind = true,
            "rbind" => {
                parsed.bind = true;
                parsed.recursive = true;
            }
            // Options of other runtimes' features or no-ops for mount(2).
            "defaults" | "tmpcopyup" | "idmap" | "ridmap" | "nofail" | "auto" | "noauto"
            | "user" | "nouser" => {}
            _ => match flag(option) {
                Some((bits, true)) => parsed.flags.insert(bits),
                Some((bits, false)) => parsed.flags.remove(bits),
                None => parsed.data.push(option.to_owned()),
            },
        }
    }
    parsed
}

/// The propagation flags an option names.
pub fn propagation(option: &str) -> Option<MsFlags> {
    Some(match option {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// A flag option: its bits and whether it sets (`true`) or clears them.
fn flag(option: &str) -> Option<(MsFlags, bool)> {
    Some(match option {
        "ro" => (MsFlags::MS_RDONLY, true),
        "rw" => (MsFlags::MS_RDONLY, false),
        "nosuid" => (MsFlags::MS_NOSUID, true),
        "suid" => (MsFlags::MS_NOSUID, false),
        "nodev" => (MsFlags::MS_NODEV, true),
        "dev" => (MsFlags::MS_NODEV, false),
        "noexec" => (MsFlags::MS_NOEXEC, true),
        "exec" => (MsFlags::MS_NOEXEC, false),
        "sync" => (MsFlags::MS_SYNCHRONOUS, true),
        "async" => (MsFlags::MS_SYNCHRONOUS, false),
        "dirsync" => (MsFlags::MS_DIRSYNC, true),
        "mand" => (MsFlags::MS_MANDLOCK, true),
        "nomand" => (MsFlags::MS_MANDLOCK, false),
        "noatime" => (MsFlags::MS_NOATIME, true),
        "atime" => (MsFlags::MS_NOATIME, false),
        "nodiratime" => (MsFlags::MS_NODIRATIME, true),
        "diratime" => (MsFlags::MS_NODIRATIME, false),
        "relatime" => (MsFlags::MS_RELATIME, true),
        "norelatime" => (MsFlags::MS_RELATIME, false),
        "strictatime" => (MsFlags::MS_STRICTATIME, true),
        "nostrictatime" => (MsFlags::MS_STRICTATIME, false),
        "lazytime" => (MsFlags::MS_LAZYTIME, true),
        "nolazytime" => (MsFlags::MS_LAZYTIME, false),
        "silent" => (MsFlags::MS_SILENT, true),
        "loud" => (MsFlags::MS_SILENT, false),
        "remount" => (MsFlags::MS_REMOUNT, true),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_data_and_propagation_are_separated() {
        let parsed = parse(&["nosuid", "strictatime", "mode=755", "size=65536k", "rslave"]);
        assert_eq!(parsed.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(parsed.data(), Some("mode=755,size=65536k".to_owned()));
        assert_eq!(
            parsed.propagation,
            vec![MsFlags::MS_SLAVE | MsFlags::MS_REC]
        );
        assert!(!parsed.bind);
    }

    #[test]
    fn later_options_override_earlier_ones() {
        assert_eq!(parse(&["ro", "rw"]).flags, MsFlags::empty());
        assert_eq!(parse(&["rw", "ro"]).flags, MsFlags::MS_RDONLY);
        assert_eq!(parse(&["nodev", "dev", "noexec"]).flags, MsFlags::MS_NOEXEC);
    }

    #[test]
    fn bind_kinds() {
        let bind = parse(&["bind", "ro"]);
        assert!(bind.bind && !bind.recursive);
        assert_eq!(bind.remount_flags(), MsFlags::MS_RDONLY);
        let rbind = parse(&["rbind", "rprivate", "nosuid"]);
        assert!(rbind.bind && rbind.recursive);
        assert_eq!(
            rbind.propagation,
            vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]
        );
        assert_eq!(rbind.data(), None);
    }

    #[test]
    fn devpts_options_are_data() {
        let parsed = parse(&["nosuid", "noexec", "newinstance", "ptmxmode=0666", "gid=5"]);
        assert_eq!(parsed.flags, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC);
        assert_eq!(
            parsed.data(),
            Some("newinstance,ptmxmode=0666,gid=5".to_owned())
        );
    }

    #[test]
    fn unknown_propagation_words_are_not_propagation() {
        assert_eq!(
            propagation("rshared"),
            Some(MsFlags::MS_SHARED | MsFlags::MS_REC)
        );
        assert_eq!(propagation("shared-ish"), None);
    }
}
