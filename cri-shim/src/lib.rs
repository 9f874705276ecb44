//! Capstan's built-in CRI runtime served over CRI v1 gRPC on a unix socket: the image
//! service (pull, store, unpack), pod sandboxes (monitor process, namespaces, CNI) and
//! containers (CRI config → OCI spec → process), logs, exec and stats.

pub mod config;
pub mod executor;
pub mod image;
pub mod monitor;
pub mod network;
pub mod runtime;
pub mod server;
pub mod spec;

/// Capstan's own gRPC API next to CRI (image import).
pub mod admin {
    tonic::include_proto!("capstan.images.v1");
}

/// Runtime name reported by the CRI Version RPC.
pub const RUNTIME_NAME: &str = "capstan";
/// Runtime version reported by the CRI Version RPC.
pub const RUNTIME_VERSION: &str = env!("CARGO_PKG_VERSION");
