//! CNI specification versions: which ones Capstan speaks and how to compare them.

use crate::error::CniError;

/// Versions the plugins accept, oldest first (CNI spec 0.3.0 up to 1.1.0).
pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest version, used when a config names none.
pub const LATEST: &str = "1.1.0";

/// Check that `version` is one the plugins speak.
pub fn require_supported(version: &str) -> Result<(), CniError> {
    if SUPPORTED.contains(&version) {
        Ok(())
    } else {
        Err(CniError::incompatible_version(version))
    }
}

/// Whether results in `version` use the 1.x layout (no per-IP `version` field).
pub fn is_1x(version: &str) -> bool {
    version.starts_with("1.")
}

/// Whether `version` has CHECK (0.4.0 and later).
pub fn has_check(version: &str) -> bool {
    !matches!(version, "0.3.0" | "0.3.1")
}

/// Whether `version` has STATUS and GC (1.1.0 and later).
pub fn has_status_and_gc(version: &str) -> bool {
    version == "1.1.0"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert!(require_supported("1.0.0").is_ok());
        let err = require_supported("2.0.0").unwrap_err();
        assert_eq!(err.code, 1);
        assert!(err.msg.contains("2.0.0"));
        assert!(is_1x("1.1.0") && !is_1x("0.4.0"));
        assert!(has_check("0.4.0") && !has_check("0.3.1"));
        assert!(has_status_and_gc("1.1.0") && !has_status_and_gc("1.0.0"));
    }
}
