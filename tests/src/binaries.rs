//! Locating the workspace's built binaries and checking for root.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// Environment variable overriding the path of the `capstan` binary.
pub const CAPSTAN_BIN_ENV: &str = "CAPSTAN_BIN";

/// The `target/<profile>` directory the running test/bench/binary was built into.
///
/// Tests and benches run from `target/<profile>/deps`, examples from `target/<profile>/examples`, binaries from
/// `target/<profile>` itself.
pub fn target_profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    let dir = exe.parent().context("current_exe has no parent")?;
    let dir = match dir.file_name().and_then(|n| n.to_str()) {
        Some("deps" | "examples") => dir.parent().context("deps dir has no parent")?,
        _ => dir,
    };
    Ok(dir.to_path_buf())
}

/// Path of workspace binary `name` next to the running executable; errors if it was not built.
pub fn workspace_bin(name: &str) -> Result<PathBuf> {
    let path = target_profile_dir()?.join(name);
    if !path.is_file() {
        bail!(
            "{} not found: run cargo build --workspace first (same profile as the tests)",
            path.display()
        );
    }
    Ok(path)
}

/// Path of the built `capstan` binary (or `$CAPSTAN_BIN`); errors with "run cargo build --workspace first".
pub fn capstan_bin() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(CAPSTAN_BIN_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("${CAPSTAN_BIN_ENV}={} does not exist", path.display());
        }
        return Ok(path);
    }
    workspace_bin("capstan")
}

/// True if running as uid 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Errors clearly unless running as root (uid 0).
pub fn require_root() -> Result<()> {
    if !is_root() {
        // SAFETY: as in is_root.
        let uid = unsafe { libc::geteuid() };
        bail!("this test needs root (uid 0) but runs as uid {uid}: run the test suite as root");
    }
    Ok(())
}
