//! OCI whiteouts, turned into their overlayfs form: `.wh.NAME` becomes a 0:0 character
//! device at NAME, and `.wh..wh..opq` marks its directory opaque.

use super::path::{PathProblem, RelPath};

/// Prefix that marks a whiteout entry.
const PREFIX: &[u8] = b".wh.";
/// Prefix of whiteout metadata entries (AUFS bookkeeping and the opaque marker).
const META_PREFIX: &[u8] = b".wh..wh.";
/// Name that marks its directory opaque.
const OPAQUE: &[u8] = b".wh..wh..opq";
/// The xattr overlayfs reads to treat a directory as opaque.
pub(crate) const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// What a whiteout entry asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Whiteout {
    /// Hide everything lower layers have in this directory.
    Opaque(RelPath),
    /// Hide this path from lower layers.
    Remove(RelPath),
    /// Other `.wh..wh.` metadata that overlayfs has no use for.
    Ignore,
}

/// Whether `path` is a whiteout, and which kind; `None` for ordinary entries.
pub(crate) fn classify(path: &RelPath) -> Result<Option<Whiteout>, PathProblem> {
    let Some((parent, name)) = path.split() else {
        return Ok(None);
    };
    if name == OPAQUE {
        return Ok(Some(Whiteout::Opaque(path.parent())));
    }
    if name.starts_with(META_PREFIX) {
        return Ok(Some(Whiteout::Ignore));
    }
    let Some(hidden) = name.strip_prefix(PREFIX) else {
        return Ok(None);
    };
    match hidden {
        b"" | b"." => Err(PathProblem::Empty),
        b".." => Err(PathProblem::ParentDir),
        _ => Ok(Some(Whiteout::Remove(RelPath::join(parent, hidden)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify_str(p: &str) -> Result<Option<Whiteout>, PathProblem> {
        classify(&RelPath::parse(p.as_bytes()).unwrap())
    }

    fn rel(p: &str) -> RelPath {
        RelPath::parse(p.as_bytes()).unwrap()
    }

    #[test]
    fn kinds() {
        assert_eq!(classify_str("a/b").unwrap(), None);
        assert_eq!(
            classify_str("a/.wh.b").unwrap(),
            Some(Whiteout::Remove(rel("a/b")))
        );
        assert_eq!(
            classify_str(".wh.b").unwrap(),
            Some(Whiteout::Remove(rel("b")))
        );
        assert_eq!(
            classify_str("a/.wh..wh..opq").unwrap(),
            Some(Whiteout::Opaque(rel("a")))
        );
        assert_eq!(
            classify_str(".wh..wh..opq").unwrap(),
            Some(Whiteout::Opaque(rel("/")))
        );
        assert_eq!(
            classify_str("a/.wh..wh.plnk").unwrap(),
            Some(Whiteout::Ignore)
        );
        assert_eq!(classify_str(".wh.a/b").unwrap(), None);
    }

    #[test]
    fn hostile_names() {
        assert_eq!(classify_str("a/.wh..."), Err(PathProblem::ParentDir));
        assert_eq!(classify_str("a/.wh.."), Err(PathProblem::Empty));
        assert_eq!(classify_str("a/.wh."), Err(PathProblem::Empty));
    }
}
