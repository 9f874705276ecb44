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
    /// Serve the built-in CRI runtime on a unix socket.
    Cri(CriArgs),
    /// Manage images through a CRI runtime (like `crictl images`).
    #[command(subcommand)]
    Image(ImageCommand),
    /// Print version information.
    Version(VersionArgs),
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
