//! Services and EndpointSlices turned into one nftables table (the kube-proxy part).

pub mod config;
pub mod conntrack;
pub mod healthcheck;
pub mod metrics;

pub use config::{
    ConfigError, ConntrackConfig, GoDuration, NftablesConfig, NodePortAddresses, ProxyConfig,
};
