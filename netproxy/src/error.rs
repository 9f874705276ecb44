//! The proxy's error type.

use crate::config::ConfigError;

/// Errors planning, applying or reading back the ruleset.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The `proxy:` configuration cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `nft` could not be found or started.
    #[error("running nft: {0}")]
    NftMissing(String),
    /// `nft` refused a command or script.
    #[error("nft {command} failed: {stderr}")]
    Nft {
        /// What was run (`-f -`, `-j list table ip capstan-proxy`, ...).
        command: String,
        /// nft's error output.
        stderr: String,
    },
    /// `nft -j` printed something this crate does not understand.
    #[error("unexpected nft JSON output: {0}")]
    NftOutput(String),
}
