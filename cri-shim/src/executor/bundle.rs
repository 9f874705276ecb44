//! Reading the bundle: `config.json` and the root filesystem it names.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{Linux, Process, Spec};

use super::error::{ExecutorError, Result};

/// The parsed runtime spec of a bundle.
pub fn load_spec(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    Spec::load(&path).map_err(|e| ExecutorError::Spec {
        path,
        message: e.to_string(),
    })
}

/// An OCI `Process` JSON file (the process of an exec).
pub fn load_process(path: &Path) -> Result<Process> {
    let text = std::fs::read_to_string(path).map_err(|e| ExecutorError::Spec {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| ExecutorError::Spec {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// The spec's process, which a container cannot run without.
pub fn process(spec: &Spec) -> Result<&Process> {
    spec.process()
        .as_ref()
        .ok_or_else(|| ExecutorError::Invalid("the spec has no process".into()))
}

/// The spec's Linux section, or an empty one.
pub fn linux(spec: &Spec) -> Linux {
    spec.linux().clone().unwrap_or_else(empty_linux)
}

/// A Linux section that asks for nothing (the crate's default asks for namespaces).
fn empty_linux() -> Linux {
    let mut linux = Linux::default();
    linux.set_namespaces(None);
    linux.set_masked_paths(None);
    linux.set_readonly_paths(None);
    linux.set_resources(None);
    linux
}

/// `root.path` made absolute (relative paths are relative to the bundle) and canonical.
pub fn rootfs(spec: &Spec, bundle: &Path) -> Result<PathBuf> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| ExecutorError::Invalid("the spec has no root".into()))?;
    let path = bundle.join(root.path());
    std::fs::canonicalize(&path).map_err(|e| ExecutorError::Sys {
        what: format!("root filesystem {}", path.display()),
        source: e,
    })
}

/// Whether the root filesystem is to be mounted read-only.
pub fn rootfs_readonly(spec: &Spec) -> bool {
    spec.root()
        .as_ref()
        .and_then(|root| root.readonly())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootfs_is_relative_to_the_bundle() {
        let bundle = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(bundle.path().join("rootfs")).expect("mkdir");
        let spec = Spec::default();
        let canonical = std::fs::canonicalize(bundle.path()).expect("canonicalize");
        assert_eq!(
            rootfs(&spec, bundle.path()).expect("rootfs"),
            canonical.join("rootfs")
        );
    }

    #[test]
    fn missing_rootfs_names_it() {
        let bundle = tempfile::tempdir().expect("tempdir");
        let err = rootfs(&Spec::default(), bundle.path()).expect_err("missing rootfs");
        assert!(err.to_string().contains("rootfs"), "{err}");
    }

    #[test]
    fn spec_round_trips_through_config_json() {
        let bundle = tempfile::tempdir().expect("tempdir");
        let mut spec = Spec::default();
        spec.set_hostname(Some("box".into()));
        spec.save(bundle.path().join("config.json")).expect("save");
        let loaded = load_spec(bundle.path()).expect("load");
        assert_eq!(loaded.hostname().as_deref(), Some("box"));
        assert!(load_spec(&bundle.path().join("nope")).is_err());
    }
}
