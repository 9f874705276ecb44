//! Blocking HTTP plumbing shared by the registry and push modules.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use reqwest::blocking::Client;

/// Builds a blocking client trusting only `ca_pem` when given (else the default roots), with generous timeouts.
pub fn client(ca_pem: Option<&[u8]>) -> Result<Client> {
    let mut builder = Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(600))
        .redirect(reqwest::redirect::Policy::limited(5));
    if let Some(pem) = ca_pem {
        let cert = reqwest::Certificate::from_pem(pem).context("parsing CA certificate PEM")?;
        builder = builder.tls_certs_only([cert]);
    }
    builder.build().context("building HTTP client")
}

/// Reads a PEM CA file and builds a client trusting it.
pub fn client_with_ca_file(ca: Option<&Path>) -> Result<Client> {
    match ca {
        Some(path) => {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            client(Some(&pem))
        }
        None => client(None),
    }
}

/// Runs `f` on a fresh OS thread so reqwest's blocking API also works when the caller is inside a tokio runtime.
pub fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}
