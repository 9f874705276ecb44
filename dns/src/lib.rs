//! Capstan's node-local cluster DNS: the Kubernetes zone answered authoritatively from the
//! watch stores, everything else forwarded upstream through a cache (CoreDNS's kubernetes,
//! cache and forward plugins plus NodeLocal DNSCache, in one library).

pub mod config;
mod error;
pub mod forward;
mod handler;
mod metrics;
mod node_local;
mod server;
pub mod zone;

pub use config::{DnsConfig, PodRecords, UpstreamProtocol};
pub use error::DnsError;
pub use metrics::DnsMetrics;
pub use node_local::NodeLocal;
pub use server::{listen_addresses, serve};
pub use zone::ClusterState;
