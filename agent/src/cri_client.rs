//! Connecting to a CRI runtime's unix socket (the kubelet's own client, for the CLI).

use tonic::transport::Channel;

/// A gRPC channel to the runtime at `endpoint` (`unix:///path` or a bare path).
pub async fn connect(endpoint: &str) -> anyhow::Result<Channel> {
    Ok(agent::kubelet::runtime::connect_channel(endpoint).await?)
}
