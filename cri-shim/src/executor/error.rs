//! What can go wrong while turning a bundle into a running process.

use std::path::PathBuf;

/// A step of container setup failed; the message names the step and the object involved.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The runtime spec or process file could not be read or parsed.
    #[error("reading {path}: {message}")]
    Spec {
        /// The file that was read.
        path: PathBuf,
        /// Why it was refused.
        message: String,
    },
    /// The spec asks for something the executor does not do or that contradicts itself.
    #[error("{0}")]
    Invalid(String),
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// What was being done, with the paths or names involved.
        what: String,
        /// The error the kernel returned.
        source: std::io::Error,
    },
    /// Joining the container's cgroup failed.
    #[error("joining cgroup {path}: {message}")]
    Cgroup {
        /// The cgroup path, relative to each hierarchy.
        path: String,
        /// What cgroups-rs reported.
        message: String,
    },
    /// Changing the capability sets failed.
    #[error("capabilities: {what}: {message}")]
    Capabilities {
        /// Which set was being changed.
        what: String,
        /// What the caps crate reported.
        message: String,
    },
    /// Building or loading the seccomp filter failed.
    #[error("seccomp: {what}: {message}")]
    Seccomp {
        /// What was being done.
        what: String,
        /// What libseccomp reported.
        message: String,
    },
}

/// Shorthand for results of setup steps.
pub type Result<T> = std::result::Result<T, ExecutorError>;

/// Attaches "what was being done" to a failed system call.
pub trait SysContext<T> {
    /// Turns the error into [`ExecutorError::Sys`] described by `what()`.
    fn sys<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: Into<std::io::Error>> SysContext<T> for std::result::Result<T, E> {
    fn sys<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| ExecutorError::Sys {
            what: what().into(),
            source: e.into(),
        })
    }
}
