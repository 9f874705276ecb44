//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Capstan: kubelet, kube-proxy, cluster DNS and a CRI runtime in one node agent.
#[derive(Debug, Parser)]
#[command(name = "capstan", version, about)]
pub struct Cli {
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "CAPSTAN_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log filter (tracing env-filter syntax), e.g. `info` or `cri_shim=debug`.
    #[arg(long, global = true, default_value = "info", env = "CAPSTAN_LOG")]
    pub log_level: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node agent: the kubelet (static pods in standalone mode) over CRI, with the
    /// built-in runtime in-process unless --container-runtime-endpoint names another.
    Agent(AgentArgs),
    /// Join a cluster with a bootstrap token (kubeadm-style discovery and TLS bootstrap),
    /// writing the node's kubeconfig and client certificate.
    Join(JoinArgs),
    /// Serve the built-in CRI runtime on a unix socket.
    Cri(CriArgs),
    /// Run the node-local cluster DNS server alone, or remove its address and rules with
    /// --cleanup.
    Dns(DnsArgs),
    /// Manage images through a CRI runtime (like `crictl images`).
    #[command(subcommand)]
    Image(ImageCommand),
    /// Print version information.
    Version(VersionArgs),
    /// List the agent's pods (like `kubectl get pods`), or describe one.
    Pods(PodsArgs),
    /// Print a container's logs (like `kubectl logs`).
    Logs(LogsArgs),
    /// Run a command in a container and exit with its exit code (like `kubectl exec`).
    Exec(ExecArgs),
    /// Internal: the per-sandbox monitor and the exec entry (spawned by `capstan cri`).
    #[command(subcommand, hide = true)]
    Shim(ShimCommand),
}

/// `capstan cri`.
#[derive(Debug, Args)]
pub struct CriArgs {
    /// Config file; its `runtime:` section configures the runtime.
    #[arg(long, default_value = "/etc/capstan/config.yaml")]
    pub config: PathBuf,
    /// State directory (overrides the config's `runtime.root`).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Socket to listen on (overrides the config's `runtime.socket`).
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

/// `capstan agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Config file (`kubelet:` and `runtime:` sections).
    #[arg(long, default_value = "/etc/capstan/config.yaml")]
    pub config: PathBuf,
    /// Directory of static pod manifests (overrides `kubelet.staticPodPath`).
    #[arg(long)]
    pub pod_manifest_path: Option<PathBuf>,
    /// Use this CRI runtime (`unix:///path`) instead of the built-in one.
    #[arg(long)]
    pub container_runtime_endpoint: Option<String>,
    /// The node's name (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// The kubelet's state directory (overrides `kubelet.rootDir`).
    #[arg(long)]
    pub root_dir: Option<PathBuf>,
    /// The local API socket for `capstan pods/logs/exec` (overrides `kubelet.localApiSocket`).
    #[arg(long)]
    pub agent_socket: Option<PathBuf>,
    /// The built-in runtime's state directory (overrides `runtime.root`).
    #[arg(long)]
    pub runtime_root: Option<PathBuf>,
    /// The built-in runtime's CRI socket (overrides `runtime.socket`).
    #[arg(long)]
    pub runtime_socket: Option<PathBuf>,
    /// Kubeconfig of the cluster (as `capstan join` writes it; default: `kubeconfig` next
    /// to the config file, if there is one); without one the agent runs standalone.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
}

/// `capstan dns`.
#[derive(Debug, Args)]
pub struct DnsArgs {
    #[command(flatten)]
    pub service: NodeServiceArgs,
}

/// What the node-service commands (`capstan dns`) take.
#[derive(Debug, Args)]
pub struct NodeServiceArgs {
    /// Config file (its `proxy:`/`dns:` section; `kubelet.clusterDomain` and `nodeName`).
    #[arg(long, default_value = "/etc/capstan/config.yaml")]
    pub config: PathBuf,
    /// Kubeconfig of the cluster (default: `kubeconfig` next to the config file).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The node's name (default: `kubelet.nodeName`, else the host name).
    #[arg(long, alias = "hostname-override")]
    pub node_name: Option<String>,
    /// Remove the nftables tables (and addresses) it installed, then exit.
    #[arg(long)]
    pub cleanup: bool,
}

/// `capstan join`.
#[derive(Debug, Args)]
pub struct JoinArgs {
    /// The API server URL, e.g. `https://10.0.0.1:6443`.
    #[arg(long)]
    pub server: String,
    /// The bootstrap token, `<id>.<secret>`.
    #[arg(long, env = "CAPSTAN_JOIN_TOKEN", hide_env_values = true)]
    pub token: String,
    /// The cluster CA's public key pin, `sha256:<hex>` (repeatable; any may match).
    #[arg(long = "discovery-token-ca-cert-hash")]
    pub ca_cert_hashes: Vec<String>,
    /// Trust the CA that cluster-info names without a pin.
    #[arg(long = "discovery-token-unsafe-skip-ca-verification")]
    pub skip_ca_verification: bool,
    /// The node's name (default: the host name, lower-cased).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Where to write the node's kubeconfig.
    #[arg(long, default_value = "/etc/capstan/kubeconfig")]
    pub kubeconfig: PathBuf,
    /// Where to write the client certificate and key.
    #[arg(long, default_value = "/var/lib/capstan/pki")]
    pub pki_dir: PathBuf,
    /// Ask for a client certificate valid this many seconds (default: the signer's choice).
    #[arg(long)]
    pub certificate_expiration_seconds: Option<u64>,
    /// How long to wait for the certificate request to be approved, in seconds.
    #[arg(long, default_value_t = 300)]
    pub approval_timeout_seconds: u64,
}

/// Where the CRI runtime listens.
#[derive(Debug, Args, Clone)]
pub struct EndpointArgs {
    /// CRI runtime endpoint.
    #[arg(
        long,
        global = true,
        default_value = "unix:///run/capstan/cri.sock",
        env = "CONTAINER_RUNTIME_ENDPOINT"
    )]
    pub runtime_endpoint: String,
}

/// `capstan image ...`.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Pull an image.
    Pull(PullArgs),
    /// List images.
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Show an image's status and config as JSON.
    Inspect(NamedArgs),
    /// Remove images.
    #[command(alias = "remove")]
    Rm(RemoveArgs),
    /// Load images from an OCI image-layout or `docker save` archive.
    Import(ImportArgs),
}

/// `capstan image pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// Image reference.
    pub image: String,
    /// Registry credentials as USER:PASSWORD.
    #[arg(long)]
    pub creds: Option<String>,
    /// Registry credentials as base64 of USER:PASSWORD.
    #[arg(long)]
    pub auth: Option<String>,
    /// A registry bearer token.
    #[arg(long)]
    pub registry_token: Option<String>,
    /// An identity token (OAuth2 refresh token) for the registry's token service.
    #[arg(long)]
    pub identity_token: Option<String>,
    #[command(flatten)]
    pub endpoint: EndpointArgs,
}

/// `capstan image ls`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only images matching this reference.
    pub filter: Option<String>,
    /// Show repo digests.
    #[arg(long)]
    pub digests: bool,
    /// Only print image IDs.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub endpoint: EndpointArgs,
}

/// Commands naming one image.
#[derive(Debug, Args)]
pub struct NamedArgs {
    /// Image reference or ID.
    pub image: String,
    #[command(flatten)]
    pub endpoint: EndpointArgs,
}

/// `capstan image rm`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// Image references or IDs.
    #[arg(required = true)]
    pub images: Vec<String>,
    #[command(flatten)]
    pub endpoint: EndpointArgs,
}

/// `capstan image import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Archive file.
    pub file: PathBuf,
    #[command(flatten)]
    pub endpoint: EndpointArgs,
}

/// `capstan version`.
#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Also ask this CRI runtime for its version.
    #[arg(long)]
    pub runtime_endpoint: Option<String>,
}

/// `capstan shim ...` (internal, started by the CRI runtime).
#[derive(Debug, Subcommand)]
pub enum ShimCommand {
    /// Set up a sandbox's namespaces and run its monitor.
    Start(ShimStartArgs),
    /// Run a process inside a running container (ExecSync).
    Exec(ShimExecArgs),
}

/// `capstan shim start`.
#[derive(Debug, Args)]
pub struct ShimStartArgs {
    /// The monitor's config (JSON) in the sandbox run directory.
    #[arg(long)]
    pub config: PathBuf,
}

/// `capstan shim exec`.
#[derive(Debug, Args)]
pub struct ShimExecArgs {
    /// The container's init process (host PID namespace).
    #[arg(long)]
    pub pid: i32,
    /// The container's OCI bundle directory.
    #[arg(long)]
    pub bundle: PathBuf,
    /// The OCI `Process` (JSON) to run.
    #[arg(long)]
    pub process: PathBuf,
}

/// Where the running agent's local API listens (`capstan pods/logs/exec`).
#[derive(Debug, Args, Clone)]
pub struct AgentSocketArgs {
    /// The agent's local API socket.
    #[arg(
        long,
        default_value = "/run/capstan/agent.sock",
        env = "CAPSTAN_AGENT_SOCKET"
    )]
    pub agent_socket: PathBuf,
}

/// `capstan pods`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct PodsArgs {
    /// Describe one pod instead of listing.
    #[command(subcommand)]
    pub command: Option<PodsCommand>,
    #[command(flatten)]
    pub list: PodsListArgs,
}

/// `capstan pods ...`.
#[derive(Debug, Subcommand)]
pub enum PodsCommand {
    /// Show a pod's spec summary, status and recent events (like `kubectl describe pod`).
    Describe(PodsDescribeArgs),
}

/// `capstan pods` (listing).
#[derive(Debug, Args)]
pub struct PodsListArgs {
    /// Namespace to list.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// List pods of every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// After listing, print each change.
    #[arg(short, long)]
    pub watch: bool,
    /// Output format (default: a table).
    #[arg(short, long, value_enum)]
    pub output: Option<PodsOutput>,
    #[command(flatten)]
    pub agent: AgentSocketArgs,
}

/// `capstan pods -o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PodsOutput {
    /// The table with the NODE column.
    Wide,
    /// The pods as a JSON v1 List.
    Json,
    /// The pods as a YAML v1 List.
    Yaml,
}

/// `capstan pods describe`.
#[derive(Debug, Args)]
pub struct PodsDescribeArgs {
    /// Pod name (a static pod's manifest name works too).
    pub name: String,
    /// Namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    #[command(flatten)]
    pub agent: AgentSocketArgs,
}

/// `capstan logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Pod name (a static pod's manifest name works too).
    pub pod: String,
    /// Namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Container (needed when the pod has several).
    #[arg(short, long)]
    pub container: Option<String>,
    /// Keep streaming while the container runs.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines (negative: all).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub tail: i64,
    /// The previous instance of the container.
    #[arg(short, long)]
    pub previous: bool,
    /// Prefix each line with its timestamp.
    #[arg(long)]
    pub timestamps: bool,
    #[command(flatten)]
    pub agent: AgentSocketArgs,
}

/// `capstan exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Pod name (a static pod's manifest name works too).
    pub pod: String,
    /// Namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Container (needed when the pod has several).
    #[arg(short, long)]
    pub container: Option<String>,
    /// Give up after this many seconds (0: wait as long as it runs).
    #[arg(long, default_value_t = 0)]
    pub timeout: u64,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
    #[command(flatten)]
    pub agent: AgentSocketArgs,
}
