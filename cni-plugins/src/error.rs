//! CNI errors as the spec defines them: a numeric code, a message and details, printed as
//! JSON on stdout with a non-zero exit status.

use serde::{Deserialize, Serialize};

/// Well-known error codes from the CNI specification.
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENVIRONMENT: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content.
    pub const DECODING_FAILURE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// The plugin is not available (STATUS).
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    /// First code reserved for plugin-specific errors.
    pub const PLUGIN_SPECIFIC: u32 = 100;
}

/// A CNI error result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "camelCase")]
#[error("CNI error {code}: {msg}{}", if details.is_empty() { String::new() } else { format!(" ({details})") })]
pub struct CniError {
    /// Version of the spec the error is reported in.
    #[serde(default)]
    pub cni_version: String,
    /// Error code (see [`code`]).
    pub code: u32,
    /// Short message.
    pub msg: String,
    /// Longer explanation.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    /// An error with a code, message and details.
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self {
            cni_version: crate::version::LATEST.to_owned(),
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// Code 1.
    pub fn incompatible_version(version: &str) -> Self {
        Self::new(
            code::INCOMPATIBLE_VERSION,
            format!("incompatible CNI version {version:?}"),
            format!(
                "supported versions: {}",
                crate::version::SUPPORTED.join(", ")
            ),
        )
    }

    /// Code 4.
    pub fn invalid_environment(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_ENVIRONMENT, msg, "")
    }

    /// Code 5.
    pub fn io(what: impl Into<String>, err: impl std::fmt::Display) -> Self {
        Self::new(code::IO_FAILURE, what, err.to_string())
    }

    /// Code 6.
    pub fn decoding(what: impl Into<String>, err: impl std::fmt::Display) -> Self {
        Self::new(code::DECODING_FAILURE, what, err.to_string())
    }

    /// Code 7.
    pub fn invalid_config(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_NETWORK_CONFIG, msg, "")
    }

    /// Code 11.
    pub fn try_again_later(msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::new(code::TRY_AGAIN_LATER, msg, details)
    }

    /// The same error, reported in `version`.
    pub fn in_version(mut self, version: &str) -> Self {
        self.cni_version = version.to_owned();
        self
    }
}
