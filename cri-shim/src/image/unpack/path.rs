//! Entry paths: raw tar bytes normalized to a path relative to the layer root.

use std::fmt;

use super::error::UnpackError;

/// Longest normalized path accepted; deeper paths could not be used through the kernel anyway.
pub(crate) const MAX_PATH_LEN: usize = 4096;

/// Why raw path bytes cannot name anything inside the layer root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathProblem {
    /// No bytes at all.
    Empty,
    /// A `..` component.
    ParentDir,
    /// A NUL byte (only possible through PAX records).
    Nul,
    /// Longer than [`MAX_PATH_LEN`] once normalized.
    TooLong,
}

impl PathProblem {
    /// What is wrong, for messages.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Self::Empty => "empty name",
            Self::ParentDir => "escapes the layer root",
            Self::Nul => "contains a NUL byte",
            Self::TooLong => "longer than 4096 bytes",
        }
    }

    /// The error for the entry shown as `path`.
    pub(crate) fn into_error(self, path: &str) -> UnpackError {
        match self {
            Self::ParentDir => UnpackError::EscapesRoot {
                path: path.to_owned(),
            },
            _ => UnpackError::InvalidPath {
                path: path.to_owned(),
                reason: self.reason(),
            },
        }
    }
}

/// A path relative to the layer root: components joined by `/`, none empty, `.` or `..`.
/// The empty path is the root itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RelPath(Vec<u8>);

impl RelPath {
    /// Normalize raw header bytes: leading `/` and `.` components go, `..` is refused.
    pub(crate) fn parse(raw: &[u8]) -> Result<Self, PathProblem> {
        if raw.is_empty() {
            return Err(PathProblem::Empty);
        }
        if raw.contains(&0) {
            return Err(PathProblem::Nul);
        }
        let mut out = Vec::with_capacity(raw.len());
        for comp in raw.split(|b| *b == b'/') {
            match comp {
                b"" | b"." => {}
                b".." => return Err(PathProblem::ParentDir),
                _ => {
                    if !out.is_empty() {
                        out.push(b'/');
                    }
                    out.extend_from_slice(comp);
                }
            }
        }
        if out.len() > MAX_PATH_LEN {
            return Err(PathProblem::TooLong);
        }
        Ok(Self(out))
    }

    /// `name` inside the directory `parent` (both already normalized).
    pub(crate) fn join(parent: &[u8], name: &[u8]) -> Self {
        let mut out = parent.to_vec();
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(name);
        Self(out)
    }

    /// The directory holding this path; the root for top-level names and for the root itself.
    pub(crate) fn parent(&self) -> Self {
        Self(
            self.split()
                .map_or_else(Vec::new, |(parent, _)| parent.to_vec()),
        )
    }

    /// The normalized bytes; empty for the root.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The parent directory and the final component; `None` for the root.
    pub(crate) fn split(&self) -> Option<(&[u8], &[u8])> {
        if self.0.is_empty() {
            return None;
        }
        Some(match self.0.iter().rposition(|b| *b == b'/') {
            Some(i) => (&self.0[..i], &self.0[i + 1..]),
            None => (&[][..], &self.0[..]),
        })
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

/// Raw bytes as text for error messages.
pub(crate) fn lossy(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(raw: &str) -> Result<String, PathProblem> {
        RelPath::parse(raw.as_bytes()).map(|p| p.to_string())
    }

    #[test]
    fn strips_root_and_dots() {
        assert_eq!(norm("/etc/passwd").unwrap(), "etc/passwd");
        assert_eq!(norm("./usr//bin/./sh").unwrap(), "usr/bin/sh");
        assert_eq!(norm("///a/").unwrap(), "a");
        assert_eq!(norm("./").unwrap(), "");
        assert_eq!(norm("/").unwrap(), "");
    }

    #[test]
    fn refuses_parent_empty_nul_and_long() {
        assert_eq!(norm("../x"), Err(PathProblem::ParentDir));
        assert_eq!(norm("a/../../x"), Err(PathProblem::ParentDir));
        assert_eq!(norm("a/.."), Err(PathProblem::ParentDir));
        assert_eq!(norm(""), Err(PathProblem::Empty));
        assert_eq!(RelPath::parse(b"a\0b"), Err(PathProblem::Nul));
        assert_eq!(norm(&"a/".repeat(3000)), Err(PathProblem::TooLong));
    }

    #[test]
    fn splits_parent_and_name() {
        let p = RelPath::parse(b"a/b/c").unwrap();
        assert_eq!(p.split(), Some((&b"a/b"[..], &b"c"[..])));
        let p = RelPath::parse(b"c").unwrap();
        assert_eq!(p.split(), Some((&b""[..], &b"c"[..])));
        assert_eq!(RelPath::parse(b"/").unwrap().split(), None);
        assert_eq!(RelPath::join(b"a", b"b").as_bytes(), b"a/b");
        assert_eq!(RelPath::join(b"", b"b").as_bytes(), b"b");
    }
}
