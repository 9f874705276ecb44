//! Errors of sandbox and container operations, each mapped to the gRPC code a CRI client
//! expects.

/// Why a runtime operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The named object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is invalid or contradicts itself.
    #[error("{0}")]
    InvalidArgument(String),
    /// The object is not in a state that allows the operation.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The operation did not finish in time.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// Something on the node failed.
    #[error("{0}")]
    Internal(String),
}

impl RuntimeError {
    /// An internal error with what was being done.
    pub fn internal(context: impl std::fmt::Display, e: impl std::fmt::Display) -> Self {
        Self::Internal(format!("{context}: {e}"))
    }
}

impl From<RuntimeError> for tonic::Status {
    fn from(e: RuntimeError) -> Self {
        let message = e.to_string();
        match e {
            RuntimeError::NotFound(_) => tonic::Status::not_found(message),
            RuntimeError::InvalidArgument(_) => tonic::Status::invalid_argument(message),
            RuntimeError::FailedPrecondition(_) => tonic::Status::failed_precondition(message),
            RuntimeError::DeadlineExceeded(_) => tonic::Status::deadline_exceeded(message),
            RuntimeError::Internal(_) => tonic::Status::internal(message),
        }
    }
}

/// Crash points for the fail-static tests: when `CAPSTAN_CRASH_AT` names this point the
/// process aborts here, as a `kill -9` at that moment would leave it.
pub fn crash_point(name: &str) {
    if std::env::var("CAPSTAN_CRASH_AT").is_ok_and(|at| at == name) {
        tracing::warn!(point = name, "CAPSTAN_CRASH_AT: aborting");
        std::process::abort();
    }
}
