//! A TCP listener that tells when it has been dropped, so closing a health check port can wait
//! until the port is free for another Service (axum drops the listener asynchronously, after
//! its accept loop sees the shutdown signal).

use std::net::SocketAddr;

use axum::serve::Listener;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// A listener plus a sender whose drop is the "port released" signal.
pub(super) struct TrackedListener {
    inner: TcpListener,
    _released: oneshot::Sender<()>,
}

impl TrackedListener {
    /// Wrap `inner`; the receiver completes (with an error) once the listener is dropped.
    pub(super) fn new(inner: TcpListener) -> (Self, oneshot::Receiver<()>) {
        let (released, on_release) = oneshot::channel();
        (
            Self {
                inner,
                _released: released,
            },
            on_release,
        )
    }
}

impl Listener for TrackedListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        // axum's own accept retries transient errors (EMFILE and the like) with a back-off.
        Listener::accept(&mut self.inner).await
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}
