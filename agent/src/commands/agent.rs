//! `capstan agent`: the node agent — the kubelet over CRI, with the built-in runtime served
//! in-process unless another runtime's endpoint is given.

use std::path::Path;

use anyhow::Context;
use tokio::sync::watch;

use crate::cli::AgentArgs;
use crate::config::ConfigFile;

/// How long the built-in runtime gets to finish its calls at shutdown.
const SERVER_STOP: std::time::Duration = std::time::Duration::from_secs(3);

/// Run until SIGINT or SIGTERM; pods keep running after the agent stops.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let mut file = ConfigFile::load(&args.config)?;
    let kubelet = &mut file.kubelet;
    if let Some(path) = args.pod_manifest_path {
        kubelet.static_pod_path = Some(path);
    }
    if let Some(endpoint) = args.container_runtime_endpoint {
        kubelet.container_runtime_endpoint = Some(endpoint);
    }
    if let Some(name) = args.node_name {
        kubelet.node_name = Some(name);
    }
    if let Some(dir) = args.root_dir {
        kubelet.root_dir = dir;
    }
    if let Some(socket) = args.agent_socket {
        kubelet.local_api_socket = socket;
    }
    let runtime = &mut file.runtime;
    if let Some(root) = args.runtime_root {
        runtime.root = root;
    }
    if let Some(socket) = args.runtime_socket {
        runtime.socket = socket;
    }
    let kubeconfig = args
        .kubeconfig
        .clone()
        .or_else(|| super::joined_kubeconfig(&args.config));
    if kubeconfig.is_some() {
        file.default_cluster_dns();
    }
    file.kubelet
        .validate()
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("invalid config {}", args.config.display()))?;
    let services = file.node_services(agent::kubelet::node::node_name(&file.kubelet)?);
    let (kubelet, runtime) = (file.kubelet, file.runtime);

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let mut builtin = match &kubelet.container_runtime_endpoint {
        Some(_) => None,
        None => {
            let config = runtime.clone();
            let shutdown = stopped(stop_rx.clone());
            Some(tokio::spawn(cri_shim::server::serve(config, shutdown)))
        }
    };
    let endpoint = kubelet
        .container_runtime_endpoint
        .clone()
        .unwrap_or_else(|| format!("unix://{}", runtime.socket.display()));

    let signals = super::termination()?;
    let client = match &kubeconfig {
        Some(path) => Some(agent::kubelet::cluster::connect(path).await?),
        None => None,
    };
    // The proxy and DNS serve cluster members only: Services come from the API.
    let mut node_services = client.clone().map(|client| {
        tokio::spawn(agent::node_services::run(
            client,
            services,
            stopped(stop_rx.clone()),
        ))
    });
    notify_ready_when(&kubelet.local_api_socket);
    let result = tokio::select! {
        result = agent::kubelet::node::run(kubelet, &endpoint, client, signals) => result,
        Some(ended) = async { match node_services.as_mut() { Some(task) => Some(task.await), None => None } } => {
            match ended {
                Ok(Ok(())) => Err(anyhow::anyhow!("the node services stopped")),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(anyhow::Error::new(e).context("node services")),
            }
        }
        // The built-in runtime failing (socket in use, bad store) ends the agent.
        Some(served) = async { match builtin.as_mut() { Some(task) => Some(task.await), None => None } } => {
            match served {
                Ok(Ok(())) => Err(anyhow::anyhow!("the built-in CRI runtime stopped")),
                Ok(Err(e)) => Err(anyhow::Error::new(e).context("built-in CRI runtime")),
                Err(e) => Err(anyhow::Error::new(e).context("built-in CRI runtime")),
            }
        }
    };
    let _ = stop_tx.send(true);
    if let Some(task) = node_services {
        let _ = task.await;
    }
    if let Some(task) = builtin {
        // Workers caught mid-call may hold streams open; the pods do not need the server.
        if tokio::time::timeout(SERVER_STOP, task).await.is_err() {
            tracing::warn!("the built-in runtime did not stop in time; exiting anyway");
        }
    }
    result
}

/// Tell systemd (Type=notify) we are ready once the local API socket exists.
fn notify_ready_when(socket: &Path) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let socket = socket.to_owned();
    tokio::spawn(async move {
        while !socket.exists() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let sent = systemd_address(&target).and_then(|addr| {
            let socket = std::os::unix::net::UnixDatagram::unbound()?;
            socket.send_to_addr(b"READY=1", &addr).map(drop)
        });
        if let Err(error) = sent {
            tracing::warn!(%error, "notifying systemd");
        }
    });
}

/// `NOTIFY_SOCKET` is a path, or `@name` for an abstract socket.
fn systemd_address(target: &std::ffi::OsStr) -> std::io::Result<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    match target.as_bytes().strip_prefix(b"@") {
        Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name),
        None => std::os::unix::net::SocketAddr::from_pathname(target),
    }
}
