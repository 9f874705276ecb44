//! `capstan cri`: serve the built-in runtime until SIGINT or SIGTERM.

use tokio::signal::unix::{signal, SignalKind};

use crate::cli::CriArgs;
use crate::config::ConfigFile;

/// Serve CRI with the config file's runtime section and the flags' overrides.
pub async fn run(args: CriArgs) -> anyhow::Result<()> {
    let mut config = ConfigFile::load(&args.config)?.runtime;
    if let Some(root) = args.root {
        config.root = root;
    }
    if let Some(socket) = args.socket {
        config.socket = socket;
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::info!("shutting down");
    };
    cri_shim::server::serve(config, shutdown).await?;
    Ok(())
}
