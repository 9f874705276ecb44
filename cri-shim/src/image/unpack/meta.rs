//! Ownership, mode, times and extended attributes of an entry, from its header and PAX records.

use std::io::{self, Read};
use std::os::fd::AsFd;

use rustix::fs::{self as rfs, Gid, Mode, Timespec, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;

use super::error::UnpackError;

/// Prefix of PAX records that carry extended attributes.
const PAX_XATTR: &[u8] = b"SCHILY.xattr.";

/// What an entry's header says about the object besides its name and data.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub(crate) uid: Uid,
    pub(crate) gid: Gid,
    /// Permission bits including setuid, setgid and sticky.
    pub(crate) mode: Mode,
    pub(crate) mtime: Timespec,
    /// Extended attributes to apply, already filtered to the allowed ones.
    pub(crate) xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Meta {
    /// Read the metadata of `entry`, shown as `path` in errors.
    pub(crate) fn read<R: Read>(
        entry: &mut tar::Entry<'_, R>,
        path: &str,
    ) -> Result<Self, UnpackError> {
        let header = entry.header();
        let old = header.as_old();
        let uid = numeric(header.uid(), &old.uid, path, "uid")?;
        let gid = numeric(header.gid(), &old.gid, path, "gid")?;
        let mode = numeric(header.mode().map(u64::from), &old.mode, path, "mode")?;
        let mtime = numeric(header.mtime(), &old.mtime, path, "mtime")?;
        let mut meta = Self {
            uid: Uid::from_raw(
                id(uid)
                    .ok_or_else(|| UnpackError::header(path, format!("uid {uid} out of range")))?,
            ),
            gid: Gid::from_raw(
                id(gid)
                    .ok_or_else(|| UnpackError::header(path, format!("gid {gid} out of range")))?,
            ),
            // Masked to 12 bits, so the cast cannot truncate anything that matters.
            mode: Mode::from_raw_mode((mode & 0o7777) as u32),
            mtime: Timespec {
                tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX),
                tv_nsec: 0,
            },
            xattrs: Vec::new(),
        };
        let Some(records) = entry
            .pax_extensions()
            .map_err(|e| UnpackError::header(path, format!("PAX records: {e}")))?
        else {
            return Ok(meta);
        };
        for record in records {
            let record =
                record.map_err(|e| UnpackError::header(path, format!("PAX record: {e}")))?;
            let key = record.key_bytes();
            if key == b"mtime" {
                // PAX keeps sub-second precision; a value we cannot read leaves the header's.
                if let Some(t) = parse_pax_time(record.value_bytes()) {
                    meta.mtime = t;
                }
            } else if let Some(name) = key.strip_prefix(PAX_XATTR) {
                if allowed_xattr(name) {
                    meta.xattrs
                        .push((name.to_vec(), record.value_bytes().to_vec()));
                } else {
                    tracing::debug!(entry = path, xattr = %String::from_utf8_lossy(name), "ignoring extended attribute");
                }
            }
        }
        Ok(meta)
    }

    /// Access and modification time both set to the entry's mtime.
    pub(crate) fn times(&self) -> Timestamps {
        Timestamps {
            last_access: self.mtime,
            last_modification: self.mtime,
        }
    }

    /// Apply the allowed extended attributes to an open file or directory.
    pub(crate) fn apply_xattrs(&self, fd: impl AsFd, path: &str) -> Result<(), UnpackError> {
        for (name, value) in &self.xattrs {
            match rfs::fsetxattr(fd.as_fd(), name.as_slice(), value, XattrFlags::empty()) {
                Ok(()) => {}
                // The snapshot filesystem lacks them; the image still runs in most cases.
                Err(Errno::NOTSUP) => {
                    tracing::warn!(entry = path, xattr = %String::from_utf8_lossy(name), "filesystem does not support extended attribute; skipped");
                }
                Err(e) => return Err(UnpackError::io(path, "setting extended attribute", e)),
            }
        }
        Ok(())
    }
}

/// A numeric header field; an empty one reads as 0, as Go's archive/tar (and so containerd)
/// reads it.
fn numeric(
    parsed: io::Result<u64>,
    raw: &[u8],
    path: &str,
    field: &str,
) -> Result<u64, UnpackError> {
    match parsed {
        Ok(v) => Ok(v),
        Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(0),
        Err(e) => Err(UnpackError::header(path, format!("{field}: {e}"))),
    }
}

/// A header id that fits a kernel id; `u32::MAX` means "unchanged" to chown, so it is refused.
fn id(raw: u64) -> Option<u32> {
    u32::try_from(raw).ok().filter(|v| *v != u32::MAX)
}

/// Only user attributes and file capabilities come from layers; `trusted.*` (overlayfs
/// whiteout and opacity markers among them) and `security.*` policy labels do not, nor do
/// `user.overlay.*`, which overlayfs reads instead when mounted with `userxattr`.
fn allowed_xattr(name: &[u8]) -> bool {
    let user = name.starts_with(b"user.") && name.len() > 5 && !name.starts_with(b"user.overlay.");
    (user && !name.contains(&0)) || name == b"security.capability"
}

/// A PAX time: decimal seconds, optionally negative, with an optional fraction.
fn parse_pax_time(value: &[u8]) -> Option<Timespec> {
    let text = std::str::from_utf8(value).ok()?;
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (secs, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if secs.is_empty()
        || !secs.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, b) in frac.bytes().take(9).enumerate() {
        nanos += i64::from(b - b'0') * 10i64.pow(8 - i as u32);
    }
    Some(match (negative, nanos) {
        (false, _) => Timespec {
            tv_sec: secs,
            tv_nsec: nanos,
        },
        (true, 0) => Timespec {
            tv_sec: -secs,
            tv_nsec: 0,
        },
        (true, _) => Timespec {
            tv_sec: -secs - 1,
            tv_nsec: 1_000_000_000 - nanos,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        let t = parse_pax_time(b"1700000000.5").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (1_700_000_000, 500_000_000));
        let t = parse_pax_time(b"12").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (12, 0));
        let t = parse_pax_time(b"-1.25").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (-2, 750_000_000));
        let t = parse_pax_time(b"1.1234567899").unwrap();
        assert_eq!(t.tv_nsec, 123_456_789);
        assert!(parse_pax_time(b"x").is_none());
        assert!(parse_pax_time(b"").is_none());
        assert!(parse_pax_time(b"99999999999999999999").is_none());
    }

    #[test]
    fn xattr_filter() {
        assert!(allowed_xattr(b"user.foo"));
        assert!(allowed_xattr(b"security.capability"));
        assert!(!allowed_xattr(b"trusted.overlay.opaque"));
        assert!(!allowed_xattr(b"security.selinux"));
        assert!(!allowed_xattr(b"user."));
        assert!(!allowed_xattr(b"user.overlay.opaque"));
        assert!(!allowed_xattr(b"user.overlay.redirect"));
    }

    #[test]
    fn ids() {
        assert_eq!(id(0), Some(0));
        assert_eq!(id(65534), Some(65534));
        assert_eq!(id(u64::from(u32::MAX)), None);
        assert_eq!(id(1 << 40), None);
    }
}
