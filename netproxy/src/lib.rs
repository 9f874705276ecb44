//! Services and EndpointSlices turned into one nftables table (the kube-proxy part); not built yet.

pub mod conntrack;
pub mod metrics;
