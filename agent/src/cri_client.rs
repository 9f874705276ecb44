//! Connecting to a CRI runtime's unix socket.

use anyhow::{bail, Context};
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// A gRPC channel to the runtime at `endpoint` (`unix:///path` or a bare path).
pub async fn connect(endpoint: &str) -> anyhow::Result<Channel> {
    let path = match endpoint.strip_prefix("unix://") {
        Some(path) => path.to_owned(),
        None if endpoint.starts_with('/') => endpoint.to_owned(),
        None => bail!("runtime endpoint {endpoint:?} must be unix:///path/to/socket"),
    };
    // The URI is required by tonic but unused: every connection goes to the socket.
    Endpoint::try_from("http://localhost")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                tokio::net::UnixStream::connect(path)
                    .await
                    .map(TokioIo::new)
            }
        }))
        .await
        .with_context(|| format!("connecting to CRI runtime at {endpoint}"))
}
