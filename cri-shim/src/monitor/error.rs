//! Errors of the server-side monitor API.

use std::path::PathBuf;

/// What went wrong launching or talking to a monitor.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The configuration cannot be used (e.g. a node-wide sysctl).
    #[error("invalid monitor config: {0}")]
    InvalidConfig(String),
    /// The monitor process failed to start; the message is its own.
    #[error("monitor failed to start: {0}")]
    Launch(String),
    /// A file operation on the run directory failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The monitor's socket could not be reached or the connection broke.
    #[error("monitor connection: {0}")]
    Connection(#[source] std::io::Error),
    /// The monitor answered something that is not valid protocol.
    #[error("monitor protocol: {0}")]
    Protocol(String),
    /// The monitor refused or failed the request; the message is its own.
    #[error("{0}")]
    Remote(String),
    /// The monitor did not answer in time.
    #[error("monitor timed out: {0}")]
    Timeout(&'static str),
}

impl MonitorError {
    /// An I/O error on `path` while doing `what`.
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            what,
            path: path.into(),
            source,
        }
    }
}
