//! Services and EndpointSlices turned into one nftables table per family (the kube-proxy
//! part): validated input (`model`), a pure per-Service planner (`plan`), a table model with
//! an incremental diff (`table`), the kernel backend (`nft`), and the [`Proxier`] and [`run`]
//! loop tying them together. See DESIGN.md for the table layout.

pub mod config;
pub mod conntrack;
mod error;
mod localaddr;
pub mod metrics;
pub mod model;
pub mod names;
pub mod nft;
pub mod plan;
mod proxier;
mod run;
pub mod table;
#[cfg(test)]
mod testutil;

pub use config::{
    ConfigError, ConntrackConfig, GoDuration, NftablesConfig, NodePortAddresses, ProxyConfig,
};
pub use error::ProxyError;
pub use metrics::ProxyMetrics;
pub use model::{ClusterState, NodeContext, Rejected, ServiceKey};
pub use nft::{NftBackend, NftCommand};
pub use proxier::{Proxier, StaleUdp, SyncReport};
pub use run::{run, SyncObserver};
