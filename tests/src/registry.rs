//! A real CNCF Distribution registry (`docker-registry serve`) on a loopback port, owned by a test.
//!
//! The registry runs under a tiny `/bin/sh` wrapper that watches its stdin pipe: if the test process dies
//! without dropping the [`Registry`] (SIGKILL, abort), the pipe closes and the wrapper kills the registry.
//! No blob descriptor cache is configured, so files corrupted on disk are served as they are.

use crate::names::free_port;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cleanup::TempRoot;
use crate::http;
use crate::names::unique_name;

/// Path of the Distribution registry binary (Debian's `docker-registry` package).
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// How long `Registry::start` waits for the registry to answer.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Shell wrapper: runs the registry, kills it when stdin reaches EOF, exits with the registry's status.
const WRAPPER: &str = r#"exec 3<&0
"$0" serve "$1" </dev/null &
pid=$!
echo "$pid" > "$2"
( read -r _ <&3; kill "$pid" 2>/dev/null ) &
watcher=$!
exec 3<&-
wait "$pid"
rc=$?
kill "$watcher" 2>/dev/null
exit "$rc"
"#;

/// True if the `docker-registry` binary is installed.
pub fn binary_available() -> bool {
    Path::new(REGISTRY_BIN).is_file()
}

/// What kind of registry to start.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// Serve HTTPS with a freshly generated self-signed CA (see [`Registry::ca_cert_path`]).
    pub tls: bool,
    /// Require HTTP basic auth with this user and password (htpasswd, bcrypt).
    pub basic_auth: Option<(String, String)>,
    /// Allow `DELETE` of blobs and manifests.
    pub delete_enabled: bool,
    /// Require bearer tokens from this token service (see [`crate::token_service`]).
    pub token_auth: Option<TokenAuth>,
    /// Serve another registry's storage (e.g. images pushed to an open twin) instead of a
    /// fresh one.
    pub storage: Option<PathBuf>,
}

/// The registry's `auth: token:` settings.
#[derive(Clone, Debug)]
pub struct TokenAuth {
    /// Where clients get tokens.
    pub realm: String,
    /// The audience tokens must name.
    pub service: String,
    /// The issuer tokens must name.
    pub issuer: String,
    /// PEM bundle of the certificates allowed to sign tokens.
    pub root_cert_bundle: PathBuf,
}

impl RegistryOptions {
    /// Plain HTTP, no auth, no delete.
    pub fn plain() -> Self {
        Self::default()
    }

    /// Sets `tls`.
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    /// Sets `basic_auth`.
    pub fn basic_auth(mut self, user: &str, pass: &str) -> Self {
        self.basic_auth = Some((user.to_string(), pass.to_string()));
        self
    }

    /// Sets `storage`.
    pub fn storage(mut self, dir: PathBuf) -> Self {
        self.storage = Some(dir);
        self
    }

    /// Sets `token_auth`.
    pub fn token_auth(mut self, auth: TokenAuth) -> Self {
        self.token_auth = Some(auth);
        self
    }

    /// Sets `delete_enabled`.
    pub fn delete_enabled(mut self, on: bool) -> Self {
        self.delete_enabled = on;
        self
    }
}

/// A running registry; killed and its storage removed on drop.
pub struct Registry {
    process: Option<RegistryProcess>,
    port: u16,
    opts: RegistryOptions,
    ca_pem: Option<Vec<u8>>,
    root: TempRoot,
}

impl Registry {
    /// Writes a config into a fresh temp dir, starts `docker-registry serve` on a free port and waits until `/v2/` answers.
    pub fn start(opts: RegistryOptions) -> Result<Registry> {
        if !binary_available() {
            bail!("{REGISTRY_BIN} not found: apt-get install docker-registry");
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_once(&opts)? {
                Ok(reg) => return Ok(reg),
                Err(e) if attempt < 5 => eprintln!("registry port collided, retrying: {e:#}"),
                Err(e) => return Err(e),
            }
        }
    }

    /// One start attempt; the inner error means "port already in use, try again".
    fn start_once(opts: &RegistryOptions) -> Result<Result<Registry>> {
        let root = TempRoot::new("registry")?;
        fs::create_dir_all(root.join("storage"))?;
        let ca_pem = if opts.tls {
            Some(write_tls_files(&root)?)
        } else {
            None
        };
        if let Some((user, pass)) = &opts.basic_auth {
            let hash = bcrypt::hash(pass, 4).context("bcrypt")?;
            fs::write(root.join("htpasswd"), format!("{user}:{hash}\n"))?;
        }
        let mut reg = Registry {
            process: None,
            port: free_port()?,
            opts: opts.clone(),
            ca_pem,
            root,
        };
        fs::write(reg.config_path(), config_yaml(&reg.root, reg.port, opts))?;
        match reg.spawn_and_wait() {
            Ok(()) => Ok(Ok(reg)),
            Err(e) if reg.log_text().contains("address already in use") => Ok(Err(e)),
            Err(e) => Err(e),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        let scheme = if self.opts.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.host())
    }

    /// True if the registry serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.opts.tls
    }

    /// PEM file of the CA that signed the registry's certificate (`<root>/certs/ca.crt`), if TLS.
    pub fn ca_cert_path(&self) -> Option<PathBuf> {
        self.opts.tls.then(|| self.root.join("certs/ca.crt"))
    }

    /// Directory holding only `ca.crt`, usable as `skopeo --cert-dir` or a `certs.d/<host>` dir, if TLS.
    pub fn cert_dir(&self) -> Option<PathBuf> {
        self.opts.tls.then(|| self.root.join("certs"))
    }

    /// The CA certificate as PEM bytes, if TLS.
    pub fn ca_cert_pem(&self) -> Option<&[u8]> {
        self.ca_pem.as_deref()
    }

    /// Root of the filesystem storage driver (contains `docker/registry/v2`).
    pub fn storage_dir(&self) -> PathBuf {
        self.opts
            .storage
            .clone()
            .unwrap_or_else(|| self.root.join("storage"))
    }

    /// The basic-auth user and password, if auth is on.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.opts
            .basic_auth
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The options it was started with.
    pub fn options(&self) -> &RegistryOptions {
        &self.opts
    }

    /// File receiving the registry's stdout and stderr (app log and access log).
    pub fn log_path(&self) -> PathBuf {
        self.root.join("registry.log")
    }

    /// The registry's config file.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.yml")
    }

    /// A blocking HTTP client trusting the registry's CA (no credentials attached); create, use and drop it
    /// outside any async runtime (or via [`http::off_runtime`]).
    pub fn http_client(&self) -> Result<reqwest::blocking::Client> {
        http::client(self.ca_pem.as_deref())
    }

    /// Number of `GET /v2/<repo>/blobs/<digest>` requests in the access log so far (any repo, any status).
    ///
    /// First sends a marker request and waits for it to be logged, so requests that completed before
    /// the call are counted even though the registry logs them after sending the response.
    pub fn blob_get_count(&self, digest: &str) -> Result<usize> {
        self.log_barrier()?;
        let encoded = digest.replace(':', "%3A");
        let count = self
            .log_text()
            .lines()
            .filter(|l| l.contains("\"GET /v2/"))
            .filter(|l| {
                // A query (e.g. a mirror's `?ns=upstream`) may follow the digest.
                [digest, encoded.as_str()].iter().any(|d| {
                    l.contains(&format!("/blobs/{d} HTTP/")) || l.contains(&format!("/blobs/{d}?"))
                })
            })
            .count();
        Ok(count)
    }

    /// Access-log lines (Apache combined format) logged so far, after a barrier like `blob_get_count`.
    pub fn access_log_lines(&self) -> Result<Vec<String>> {
        self.log_barrier()?;
        Ok(self
            .log_text()
            .lines()
            .filter(|l| l.contains("] \"") && l.contains(" HTTP/1."))
            .map(str::to_string)
            .collect())
    }

    /// Where the registry stores the bytes of blob `digest` (`.../blobs/sha256/ab/<hex>/data`); manifests are blobs too.
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest_hex(digest);
        self.v2_dir()
            .join("blobs/sha256")
            .join(&hex[..2.min(hex.len())])
            .join(hex)
            .join("data")
    }

    /// The link file recording that `repo` has manifest `digest` (`.../_manifests/revisions/sha256/<hex>/link`).
    pub fn manifest_revision_path(&self, repo: &str, digest: &str) -> PathBuf {
        self.v2_dir()
            .join("repositories")
            .join(repo)
            .join("_manifests/revisions/sha256")
            .join(digest_hex(digest))
            .join("link")
    }

    /// The link file of `repo`'s layer link for blob `digest` (`.../_layers/sha256/<hex>/link`).
    pub fn layer_link_path(&self, repo: &str, digest: &str) -> PathBuf {
        self.v2_dir()
            .join("repositories")
            .join(repo)
            .join("_layers/sha256")
            .join(digest_hex(digest))
            .join("link")
    }

    /// The file naming the manifest digest tag `tag` of `repo` points to (`.../_manifests/tags/<tag>/current/link`).
    pub fn tag_current_link_path(&self, repo: &str, tag: &str) -> PathBuf {
        self.v2_dir()
            .join("repositories")
            .join(repo)
            .join("_manifests/tags")
            .join(tag)
            .join("current/link")
    }

    /// Kills the registry now (tests of an unreachable registry); idempotent.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop();
        }
    }

    /// True while the registry process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(
            self.process.as_mut().map(|p| p.child.try_wait()),
            Some(Ok(None))
        )
    }

    fn v2_dir(&self) -> PathBuf {
        self.storage_dir().join("docker/registry/v2")
    }

    fn log_text(&self) -> String {
        fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `n` lines of the log, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn pid_file(&self) -> PathBuf {
        self.root.join("registry.pid")
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(WRAPPER)
            .arg(REGISTRY_BIN)
            .arg(self.config_path())
            .arg(self.pid_file())
            .current_dir(self.root.path())
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning docker-registry")?;
        let stdin = child.stdin.take();
        self.process = Some(RegistryProcess {
            child,
            stdin,
            pid_file: self.pid_file(),
        });
        let listening = format!("listening on {}", self.host());
        let deadline = Instant::now() + START_TIMEOUT;
        let url = format!("{}/v2/", self.url());
        let expected = if self.opts.basic_auth.is_some() || self.opts.token_auth.is_some() {
            401
        } else {
            200
        };
        loop {
            if !self.is_running() {
                bail!("docker-registry exited early:\n{}", self.log_tail(20));
            }
            if self.log_text().contains(&listening) {
                if let Ok(code) = self.probe(&url) {
                    if code == expected {
                        return Ok(());
                    }
                    bail!(
                        "GET {url} answered {code}, expected {expected}:\n{}",
                        self.log_tail(20)
                    );
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "docker-registry not ready after {START_TIMEOUT:?}:\n{}",
                    self.log_tail(20)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a uniquely marked request and waits until the access log shows it.
    fn log_barrier(&self) -> Result<()> {
        let marker = unique_name("barrier");
        let url = format!("{}/v2/?capstan-barrier={marker}", self.url());
        self.probe(&url).with_context(|| format!("GET {url}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log_text().contains(&marker) {
            if Instant::now() > deadline {
                bail!(
                    "barrier request {marker} never reached the access log {}",
                    self.log_path().display()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// GETs `url` without credentials (on a helper thread) and returns the status code.
    fn probe(&self, url: &str) -> Result<u16> {
        let ca = self.ca_pem.as_deref();
        http::off_runtime(|| Ok(http::client(ca)?.get(url).send()?.status().as_u16()))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The wrapper shell process and the write end of its stdin pipe.
struct RegistryProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    pid_file: PathBuf,
}

impl RegistryProcess {
    /// Closes stdin (the wrapper then kills the registry) and reaps the wrapper; SIGKILLs both after 10 s.
    fn stop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() > deadline => break,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        let pid = fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        if let Some(pid) = pid.filter(|p| *p > 1) {
            // SAFETY: kill(2) has no memory-safety preconditions; the pid is the registry our wrapper started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("url", &self.url())
            .field("root", &self.root.path())
            .finish()
    }
}

/// The hex part of `sha256:<hex>` (or the input if it has no algorithm prefix).
pub fn digest_hex(digest: &str) -> &str {
    digest.split_once(':').map_or(digest, |(_, hex)| hex)
}

/// The registry's config.yml.
fn config_yaml(root: &TempRoot, port: u16, opts: &RegistryOptions) -> String {
    let mut y = String::new();
    let _ = write!(
        y,
        "version: 0.1\n\
         log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
         storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: {delete}\n\
         \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: {secret}\n",
        storage = opts
            .storage
            .clone()
            .unwrap_or_else(|| root.join("storage"))
            .display(),
        delete = opts.delete_enabled,
        secret = unique_name("secret"),
    );
    if opts.tls {
        let _ = write!(
            y,
            "  tls:\n    certificate: {}\n    key: {}\n",
            root.join("tls/server.crt").display(),
            root.join("tls/server.key").display()
        );
    }
    if let Some(token) = &opts.token_auth {
        let _ = write!(
            y,
            "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
            token.realm,
            token.service,
            token.issuer,
            token.root_cert_bundle.display()
        );
    }
    if opts.basic_auth.is_some() {
        let _ = write!(
            y,
            "auth:\n  htpasswd:\n    realm: capstan-test\n    path: {}\n",
            root.join("htpasswd").display()
        );
    }
    y
}

/// Generates a CA and a server certificate for 127.0.0.1/localhost; writes tls/ and certs/; returns the CA PEM.
fn write_tls_files(root: &TempRoot) -> Result<Vec<u8>> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "capstan test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;

    let server_key = KeyPair::generate()?;
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let issuer = Issuer::new(ca_params, &ca_key);
    let server_cert = params.signed_by(&server_key, &issuer)?;

    fs::create_dir_all(root.join("tls"))?;
    fs::create_dir_all(root.join("certs"))?;
    let ca_pem = ca_cert.pem();
    // The server presents its chain: leaf then CA.
    fs::write(
        root.join("tls/server.crt"),
        format!("{}{}", server_cert.pem(), ca_pem),
    )?;
    let mut key = File::create(root.join("tls/server.key"))?;
    key.write_all(server_key.serialize_pem().as_bytes())?;
    fs::write(root.join("tls/ca.crt"), &ca_pem)?;
    fs::write(root.join("certs/ca.crt"), &ca_pem)?;
    Ok(ca_pem.into_bytes())
}
