//! The per-sandbox monitor (`capstan shim`): holds the pod's namespaces, runs its containers, writes their logs and exit records.
//!
//! Server side (async): [`launch`] starts a monitor and cleans up after one, [`client`]
//! talks to a running monitor over its socket using the JSON-lines [`protocol`].
//! Monitor side (blocking, single-threaded): [`shim`] is the process itself.

pub mod client;
pub mod config;
mod error;
pub mod launch;
pub mod protocol;
pub mod shim;

pub use error::MonitorError;
