//! The CRI gRPC server on a unix socket.

mod admin;
mod image;
mod runtime;

use std::path::Path;
use std::sync::Arc;

use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::admin::image_admin_server::ImageAdminServer;
use crate::config::RuntimeConfig;
use crate::image::ImageService;
use crate::runtime::Runtime;

/// Largest gRPC message accepted or sent (image lists on busy nodes are large).
const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Opening the image store failed.
    #[error(transparent)]
    Image(#[from] crate::image::error::ImageError),
    /// Opening the sandbox and container stores failed.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::error::RuntimeError),
    /// The socket could not be bound.
    #[error("binding CRI socket {path}: {source}")]
    Bind {
        /// The socket path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The gRPC transport failed.
    #[error("CRI server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serve CRI on the configured socket until `shutdown` completes.
pub async fn serve(
    config: RuntimeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let config = Arc::new(config);
    // A runtime already serving this socket is refused before the store's start-up cleanup
    // could touch its files; the socket is bound only once the store is ready, so a client
    // that can connect can be served.
    refuse_live_socket(&config.socket)?;
    let images = Arc::new(ImageService::open(config.clone())?);
    let runtime = Runtime::open(config.clone(), images.clone()).await?;
    let listener = bind(&config.socket)?;
    tracing::info!(socket = %config.socket.display(), root = %config.root.display(), "CRI server listening");
    tonic::transport::Server::builder()
        .add_service(
            RuntimeServiceServer::new(runtime::RuntimeApi::new(runtime.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            ImageServiceServer::new(image::Images::new(images.clone(), runtime.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(ImageAdminServer::new(admin::Admin::new(images)))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await?;
    let _ = std::fs::remove_file(&config.socket);
    Ok(())
}

fn bind_error(path: &Path, source: std::io::Error) -> ServeError {
    ServeError::Bind {
        path: path.display().to_string(),
        source,
    }
}

/// Fail if another process answers on the socket.
fn refuse_live_socket(path: &Path) -> Result<(), ServeError> {
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(bind_error(
            path,
            std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another runtime is serving this socket",
            ),
        ));
    }
    Ok(())
}

/// Bind the socket, replacing a stale one left by a previous run.
fn bind(path: &Path) -> Result<UnixListener, ServeError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| bind_error(path, e))?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(bind_error(path, e)),
        _ => {}
    }
    UnixListener::bind(path).map_err(|e| bind_error(path, e))
}
