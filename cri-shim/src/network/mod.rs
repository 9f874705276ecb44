//! Pod networking through CNI plugins, called as the CNI specification (1.1) says: the
//! runtime side of CNI over the types `cni_plugins::types` shares with Capstan's plugins.
//!
//! [`Cni`] chooses the network from the configuration directory ([`NetworkConfigList`]),
//! runs its plugins for ADD, DEL, CHECK, STATUS and GC, and caches each attachment's
//! configuration and result so DEL and CHECK do not depend on the directory later.

mod attachment;
mod cache;
mod chain;
mod cni;
mod config;
mod error;
mod exec;
#[cfg(test)]
mod tests;

pub use attachment::{pod_ips, Attachment, AttachmentRef, PodIdentity, PortMapping};
pub use cni::{Cni, DEFAULT_PLUGIN_TIMEOUT};
/// The typed ADD result (the type shared with Capstan's plugins).
pub use cni_plugins::types::CniResult;
pub use config::NetworkConfigList;
pub use error::NetworkError;
