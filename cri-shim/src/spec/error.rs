//! Errors of the CRI → OCI spec builder; each names the offending field or path.

use std::io;
use std::path::PathBuf;

/// Why a container's OCI spec could not be built (the server maps these to InvalidArgument).
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Neither the CRI config nor the image gives a command.
    #[error("no command specified")]
    NoCommand,
    /// A CRI field holds a value that cannot be used.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// The CRI field, e.g. `working_dir` or `resources.oom_score_adj`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A user name that the image's /etc/passwd does not define.
    #[error("user {0:?} not found in the image's /etc/passwd")]
    UnknownUser(String),
    /// A group name that the image's /etc/group does not define.
    #[error("group {0:?} not found in the image's /etc/group")]
    UnknownGroup(String),
    /// The user string (CRI or image `User`) cannot be parsed.
    #[error("invalid user {user:?}: {reason}")]
    InvalidUser {
        /// The user string as given.
        user: String,
        /// What is wrong with it.
        reason: String,
    },
    /// /etc/passwd or /etc/group of the image could not be read.
    #[error("reading /{path} in the container rootfs: {source}")]
    ImageFile {
        /// Path inside the rootfs.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A CRI mount's container_path is not an absolute, clean path.
    #[error("mount container_path {path:?}: {reason}")]
    InvalidMountPath {
        /// The container path as given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A CRI mount's host_path does not exist.
    #[error("mount source {0} does not exist")]
    MountSourceMissing(String),
    /// A CRI mount's host_path could not be resolved.
    #[error("mount source {path}: {source}")]
    MountSource {
        /// The host path as given.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A CRI mount asks for something this runtime does not do.
    #[error("mount {path:?}: {reason}")]
    UnsupportedMount {
        /// The mount's container path.
        path: String,
        /// What is not supported.
        reason: String,
    },
    /// A CRI device cannot be exposed to the container.
    #[error("device {path}: {reason}")]
    Device {
        /// The device's host path.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A capability name that is neither a Linux capability nor `ALL`.
    #[error("unknown capability {0:?}")]
    UnknownCapability(String),
    /// A seccomp profile reference this runtime does not know.
    #[error("unknown seccomp profile {0:?}")]
    UnknownSeccompProfile(String),
    /// A Localhost seccomp profile file could not be read.
    #[error("reading seccomp profile {path}: {source}")]
    SeccompProfileRead {
        /// The profile's path on the host.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A Localhost seccomp profile file is not a valid profile.
    #[error("invalid seccomp profile {path}: {reason}")]
    SeccompProfileInvalid {
        /// The profile's path on the host.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl SpecError {
    /// Shorthand for [`SpecError::InvalidField`].
    pub(crate) fn field(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidField {
            field,
            reason: reason.into(),
        }
    }
}
