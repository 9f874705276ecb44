//! One module per subcommand.

mod agent;
mod cri;
mod exec;
mod image;
mod join;
mod logs;
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
