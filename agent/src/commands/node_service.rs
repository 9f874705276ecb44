//! `capstan dns`: a node service alone, next to any kubelet.

use anyhow::Context;

use crate::cli::NodeServiceArgs;
use crate::config::ConfigFile;

/// Which node service to run.
#[derive(Debug, Clone, Copy)]
pub enum Service {
    /// The node-local cluster DNS server.
    Dns,
}

/// Run `service` until SIGINT/SIGTERM, or remove what it installed with `--cleanup`.
pub async fn run(args: NodeServiceArgs, service: Service) -> anyhow::Result<()> {
    let file = ConfigFile::load(&args.config)?;
    let mut kubelet = file.kubelet.clone();
    if args.node_name.is_some() {
        kubelet.node_name = args.node_name.clone();
    }
    let mut config = file.node_services(agent::kubelet::node::node_name(&kubelet)?);
    if args.cleanup {
        return match service {
            Service::Dns => {
                tokio::task::spawn_blocking(move || dns::NodeLocal::remove(&config.dns))
                    .await
                    .context("DNS cleanup task")?
                    .context("removing the node-local DNS address and rules")
            }
        };
    }
    // The section's own `enabled` does not matter here: the command names what to run.
    config.proxy.enabled = false;
    config.dns.enabled = matches!(service, Service::Dns);
    let kubeconfig = args
        .kubeconfig
        .clone()
        .or_else(|| super::joined_kubeconfig(&args.config))
        .context("no kubeconfig: pass --kubeconfig or join the node first")?;
    let client = agent::kubelet::cluster::connect(&kubeconfig).await?;
    agent::node_services::run(client, config, super::termination()?).await
}
