//! The HTTPS listener: its own thread and tokio runtime, TLS with the peer's client certificate handed to the
//! handlers, and a stop that drops every open connection and watch.

use std::net::TcpListener;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use hyper_util::rt::TokioIo;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::routes::{self, PeerCert, State};

/// A running listener; [`Listener::stop`] (or drop) ends it.
pub struct Listener {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Serves `state` on `listener` until stopped.
pub fn spawn(
    state: Arc<State>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
) -> anyhow::Result<Listener> {
    listener
        .set_nonblocking(true)
        .context("making the API server listener non-blocking")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("apiserver")
        .enable_all()
        .build()
        .context("building the API server runtime")?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("apiserver".into())
        .spawn(move || {
            runtime.block_on(serve(state, listener, tls, rx));
            // Dropping the runtime cancels every connection task: clients see their connections close.
            runtime.shutdown_timeout(Duration::from_secs(1));
        })
        .context("spawning the API server thread")?;
    Ok(Listener {
        shutdown: Some(tx),
        thread: Some(thread),
    })
}

async fn serve(
    state: Arc<State>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("apiserver: listener: {e}");
            return;
        }
    };
    let acceptor = TlsAcceptor::from(tls);
    let router = Router::new().fallback(routes::handle).with_state(state);
    loop {
        let (tcp, _) = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(_) => continue,
            },
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let peer = PeerCert(
                stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| Arc::new(c.as_ref().to_vec())),
            );
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(peer.clone());
                    router.clone().oneshot(req)
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

impl Listener {
    /// Stops accepting, drops all connections and waits for the thread.
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop();
    }
}
