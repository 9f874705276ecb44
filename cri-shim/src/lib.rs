//! Capstan's built-in CRI runtime: the image service (pull, store, unpack) served over CRI
//! v1 gRPC on a unix socket. Sandboxes and containers join in a later stage.

pub mod config;
pub mod image;
pub mod server;

/// Capstan's own gRPC API next to CRI (image import).
pub mod admin {
    tonic::include_proto!("capstan.images.v1");
}

/// Runtime name reported by the CRI Version RPC.
pub const RUNTIME_NAME: &str = "capstan";
/// Runtime version reported by the CRI Version RPC.
pub const RUNTIME_VERSION: &str = env!("CARGO_PKG_VERSION");
