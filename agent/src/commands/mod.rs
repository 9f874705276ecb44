//! One module per subcommand.

mod agent;
mod cri;
mod exec;
mod image;
mod join;
mod logs;
mod node_service;
mod pods;
pub mod shim;
mod version;

use crate::cli::Command;

/// Run a subcommand.
pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Agent(args) => agent::run(args).await,
        Command::Join(args) => join::run(args).await,
        Command::Cri(args) => cri::run(args).await,
        Command::Dns(args) => node_service::run(args.service, node_service::Service::Dns).await,
        Command::Image(command) => image::run(command).await,
        Command::Version(args) => version::run(args).await,
        Command::Pods(args) => pods::run(args).await,
        Command::Logs(args) => logs::run(args).await,
        Command::Exec(args) => exec::run(args).await,
        Command::Shim(_) => {
            anyhow::bail!("`capstan shim` must be dispatched before the async runtime starts")
        }
    }
}

/// Resolves at the first SIGINT or SIGTERM.
fn termination() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::info!("shutting down");
    })
}

/// The kubeconfig `capstan join` leaves next to the config file (`/etc/capstan/kubeconfig`
/// for `/etc/capstan/config.yaml`), if the node has joined.
fn joined_kubeconfig(config: &std::path::Path) -> Option<std::path::PathBuf> {
    let path = config.parent()?.join("kubeconfig");
    path.is_file().then_some(path)
}
