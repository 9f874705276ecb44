//! `capstan join`: join a cluster with a bootstrap token and write the node's credentials.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::cli::JoinArgs;
use agent::kubelet::bootstrap::{join, BootstrapToken, CaHash, JoinOptions};

/// Where the packaged systemd unit is installed.
const UNITS: [&str; 2] = [
    "/etc/systemd/system/capstan.service",
    "/lib/systemd/system/capstan.service",
];

/// Discover, bootstrap, write the files, and say where they are and what to run next.
pub async fn run(args: JoinArgs) -> anyhow::Result<()> {
    let token: BootstrapToken = args.token.parse()?;
    let ca_hashes = args
        .ca_cert_hashes
        .iter()
        .map(|pin| pin.parse::<CaHash>())
        .collect::<Result<Vec<_>, _>>()?;
    let node_name = match args.node_name {
        Some(name) => name,
        None => nix::unistd::gethostname()
            .context("reading the host name (or pass --node-name)")?
            .to_string_lossy()
            .to_lowercase(),
    };
    let options = JoinOptions {
        server: args.server,
        token,
        ca_hashes,
        skip_ca_verification: args.skip_ca_verification,
        node_name,
        kubeconfig: args.kubeconfig,
        pki_dir: args.pki_dir,
        certificate_duration: args.certificate_expiration_seconds.map(Duration::from_secs),
        approval_timeout: Duration::from_secs(args.approval_timeout_seconds),
    };
    let joined = join(&options)
        .await
        .with_context(|| format!("joining the cluster at {}", options.server))?;
    let expires = jiff::Timestamp::try_from(joined.expires)
        .map(|t| t.to_string())
        .unwrap_or_default();
    println!(
        "This node joined the cluster at {} (CA {}) as {}.",
        options.server, joined.ca_hash, joined.user
    );
    println!(
        "  kubeconfig:         {}",
        joined.files.kubeconfig.display()
    );
    println!(
        "  client certificate: {} -> {} (expires {expires})",
        joined.files.certificate.display(),
        joined.files.certificate_file.display()
    );
    if UNITS.iter().any(|unit| Path::new(unit).exists()) {
        println!("Next: systemctl enable --now capstan");
    } else {
        println!(
            "Next: capstan agent --kubeconfig {}",
            joined.files.kubeconfig.display()
        );
    }
    Ok(())
}
