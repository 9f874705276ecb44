//! The API test server: an in-memory stand-in for kube-apiserver over HTTPS, faithful where
//! the agent and `kubectl` depend on it. Test infrastructure, not product.
//!
//! [`ApiServer`] is a blocking handle (the server runs on its own thread with its own tokio runtime):
//!
//! ```no_run
//! let server = tests::apiserver::ApiServer::start()?;
//! server.kubectl(&["create", "namespace", "demo"])?;
//! assert!(server.get("namespaces", "", "demo").is_some());
//! # anyhow::Ok(())
//! ```
//!
//! Modules: [`resources`] (the kinds served), [`store`] (objects, resourceVersions, history), [`ops`]
//! (create/update/patch/delete semantics), [`defaults`], [`services`] (allocation and validation),
//! [`endpointslices`] (the EndpointSlice controller), [`patch`], [`selector`], [`watch`], [`discovery`],
//! [`routes`] (HTTP front), [`server`] (TLS listener), [`security`] and [`status`].

pub mod defaults;
pub mod discovery;
pub mod endpointslices;
pub mod openapi;
pub mod ops;
pub mod patch;
pub mod protobuf;
pub mod resources;
pub mod routes;
pub mod security;
pub mod selector;
pub mod server;
pub mod services;
pub mod status;
pub mod store;
pub mod table;
pub mod watch;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine;
use serde_json::{json, Value};

use security::Security;
use store::Store;

/// Server options.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiServerOptions {
    /// Approve node client CSRs (kubelet client signer, from bootstrappers or nodes) automatically.
    pub auto_approve_node_csrs: bool,
    /// How many change events watches can replay; older resourceVersions get 410 Gone.
    pub watch_history: usize,
    /// Service cluster IP ranges (`--service-cluster-ip-range`): one, or one per IP family for dual stack.
    pub service_cidrs: Vec<String>,
    /// Node ports for NodePort and LoadBalancer Services (`--service-node-port-range`).
    pub node_port_range: std::ops::RangeInclusive<u16>,
    /// Run the EndpointSlice controller (off for tests that write every slice themselves).
    pub endpoint_slice_controller: bool,
}

impl Default for ApiServerOptions {
    fn default() -> Self {
        ApiServerOptions {
            auto_approve_node_csrs: true,
            watch_history: 10_000,
            service_cidrs: vec![services::DEFAULT_SERVICE_CIDR.to_string()],
            node_port_range: services::DEFAULT_NODE_PORT_RANGE,
            endpoint_slice_controller: true,
        }
    }
}

/// One request the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// Kubernetes verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, ...; non-resource requests use the HTTP method).
    pub verb: String,
    /// URL path (no query).
    pub path: String,
    /// Authenticated user name, `system:anonymous` when none.
    pub user: String,
}

/// A running (or stopped) API test server.
pub struct ApiServer {
    state: Arc<routes::State>,
    port: u16,
    listener: Option<server::Listener>,
    /// Runs independently of the listener, like kube-controller-manager.
    endpoint_slices: Option<endpointslices::Controller>,
    dir: tempfile::TempDir,
}

/// Namespaces kube-apiserver creates at start.
const SYSTEM_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

impl ApiServer {
    /// Starts a server with default options.
    pub fn start() -> anyhow::Result<ApiServer> {
        Self::start_with(ApiServerOptions::default())
    }

    /// Starts a server on a free 127.0.0.1 port.
    pub fn start_with(options: ApiServerOptions) -> anyhow::Result<ApiServer> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the API server port")?;
        let port = listener
            .local_addr()
            .context("reading the API server address")?
            .port();
        let ranges =
            services::ServiceRanges::new(&options.service_cidrs, options.node_port_range.clone())
                .map_err(|e| anyhow::anyhow!("service ranges: {e}"))?;
        let store = Arc::new(Store::with_service_ranges(options.watch_history, ranges));
        let security = Security::new().context("creating the API server CA and keys")?;
        let ns_kind = resources::by_name("namespaces").context("namespaces kind")?;
        for ns in SYSTEM_NAMESPACES {
            ops::create(&store, ns_kind, "", json!({"metadata": {"name": ns}}), None)
                .map_err(|e| anyhow::anyhow!("creating namespace {ns}: {e}"))?;
        }
        let endpoint_slices = if options.endpoint_slice_controller {
            Some(endpointslices::Controller::spawn(store.clone())?)
        } else {
            None
        };
        let state = Arc::new(routes::State {
            store,
            security,
            options,
            requests: Mutex::new(Vec::new()),
            address: format!("127.0.0.1:{port}"),
        });
        let dir = tempfile::Builder::new()
            .prefix("capstan-apiserver-")
            .tempdir()
            .context("creating the API server temp dir")?;
        let mut server = ApiServer {
            state,
            port,
            listener: None,
            endpoint_slices,
            dir,
        };
        server
            .state
            .security
            .publish_cluster_info(&server.url(), &*server.state.store)
            .context("publishing cluster-info")?;
        server.write_admin_kubeconfig()?;
        server.listen(listener)?;
        Ok(server)
    }

    fn listen(&mut self, listener: TcpListener) -> anyhow::Result<()> {
        let tls = self.state.security.tls_config();
        self.listener = Some(server::spawn(self.state.clone(), listener, tls)?);
        Ok(())
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The cluster CA certificate (PEM).
    pub fn ca_pem(&self) -> String {
        self.state.security.ca_pem()
    }

    /// kubeadm's discovery hash of the CA: `sha256:<hex>`.
    pub fn ca_cert_hash(&self) -> String {
        self.state.security.ca_cert_hash()
    }

    /// A kubeconfig authenticating as `kubernetes-admin` in `system:masters`.
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.conf")
    }

    fn write_admin_kubeconfig(&self) -> anyhow::Result<()> {
        let (cert, key) = self
            .state
            .security
            .issue_client_cert(
                "kubernetes-admin",
                &["system:masters"],
                Duration::from_secs(365 * 24 * 3600),
            )
            .context("issuing the admin client certificate")?;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: capstan\n  cluster:\n    server: {}\n    certificate-authority-data: {}\n\
             users:\n- name: kubernetes-admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n\
             contexts:\n- name: admin\n  context:\n    cluster: capstan\n    user: kubernetes-admin\n    namespace: default\ncurrent-context: admin\n",
            self.url(),
            b64(&self.ca_pem()),
            b64(&cert),
            b64(&key)
        );
        write_private(&self.admin_kubeconfig(), &config)
    }

    /// Creates a bootstrap token Secret (`abcdef.0123456789abcdef`), never expiring when `ttl` is None.
    pub fn create_bootstrap_token(&self, ttl: Option<Duration>) -> anyhow::Result<String> {
        self.state
            .security
            .create_bootstrap_token(&*self.state.store, ttl)
    }

    /// Runs the real `kubectl` as the admin; Ok(stdout), or an error naming the arguments and stderr.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.admin_kubeconfig())
            .arg("--cache-dir")
            .arg(self.dir.path().join("kube-cache"))
            .args(args)
            .output()
            .context("running kubectl")?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The stored object, read directly (namespace "" for cluster-scoped kinds).
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        security::Objects::get(&*self.state.store, resource, namespace, name)
    }

    /// Creates an object as the system, like a POST by the admin.
    pub fn create(&self, resource: &str, namespace: &str, obj: Value) -> anyhow::Result<Value> {
        let kind = resources::by_name(resource)
            .with_context(|| format!("unknown resource {resource:?}"))?;
        let created = ops::create(&self.state.store, kind, namespace, obj, None)
            .map_err(|e| anyhow::anyhow!("creating {resource}: {e}"))?;
        self.state.security.after_write(
            kind.key,
            &created,
            &*self.state.store,
            self.state.options.auto_approve_node_csrs,
        );
        Ok(created)
    }

    /// How many requests were answered so far (a mark for [`ApiServer::requests_since`]).
    pub fn request_count(&self) -> u64 {
        self.state
            .requests
            .lock()
            .map(|r| r.len() as u64)
            .unwrap_or(0)
    }

    /// The requests answered since `mark`.
    pub fn requests_since(&self, mark: u64) -> Vec<RequestRecord> {
        let requests = self
            .state
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        requests
            .iter()
            .skip(usize::try_from(mark).unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }

    /// Stops listening and drops every connection (watches end); the data stays.
    pub fn stop(&mut self) {
        if let Some(mut listener) = self.listener.take() {
            listener.stop();
        }
    }

    /// Listens again on the same port with the same data and CA.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let mut last = None;
        // The old socket may linger for a moment after the stop.
        for _ in 0..50 {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(listener) => return self.listen(listener),
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(anyhow::anyhow!(
            "re-binding 127.0.0.1:{}: {:?}",
            self.port,
            last
        ))
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(controller) = self.endpoint_slices.as_mut() {
            controller.stop();
        }
    }
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
