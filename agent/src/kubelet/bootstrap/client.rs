//! The shared API client handle: one `kube::Client` that rotation can replace under everyone.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use kube::config::{KubeConfigOptions, Kubeconfig};

use super::{install_crypto_provider, BootstrapError};

/// A cheap-to-clone handle on the node's API client; call [`ApiClient::current`] per request
/// or watch so a rotated certificate is picked up.
#[derive(Clone)]
pub struct ApiClient {
    inner: Arc<Inner>,
}

struct Inner {
    kubeconfig: Option<PathBuf>,
    client: RwLock<kube::Client>,
}

impl ApiClient {
    /// Build the client from a kubeconfig file (certificate files it names are read now).
    pub async fn from_kubeconfig(path: &Path) -> Result<ApiClient, BootstrapError> {
        let client = load(path).await?;
        Ok(ApiClient {
            inner: Arc::new(Inner {
                kubeconfig: Some(path.to_owned()),
                client: RwLock::new(client),
            }),
        })
    }

    /// Wrap an existing client (no kubeconfig behind it, so it cannot be rotated).
    pub fn from_client(client: kube::Client) -> ApiClient {
        ApiClient {
            inner: Arc::new(Inner {
                kubeconfig: None,
                client: RwLock::new(client),
            }),
        }
    }

    /// The client to use for the next request or watch.
    pub fn current(&self) -> kube::Client {
        self.inner
            .client
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The kubeconfig the client was built from.
    pub fn kubeconfig(&self) -> Option<&Path> {
        self.inner.kubeconfig.as_deref()
    }

    /// Rebuild the client from its kubeconfig (after the certificate files were swapped).
    pub(super) async fn reload(&self) -> Result<(), BootstrapError> {
        let Some(path) = self.kubeconfig() else {
            return Ok(());
        };
        let client = load(path).await?;
        *self
            .inner
            .client
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = client;
        Ok(())
    }
}

impl fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiClient")
            .field("kubeconfig", &self.inner.kubeconfig)
            .finish_non_exhaustive()
    }
}

/// Read a kubeconfig (relative file references resolved against its directory).
pub(super) fn read_kubeconfig(path: &Path) -> Result<Kubeconfig, BootstrapError> {
    Kubeconfig::read_from(path).map_err(|source| BootstrapError::Kubeconfig {
        path: path.to_owned(),
        source,
    })
}

async fn load(path: &Path) -> Result<kube::Client, BootstrapError> {
    install_crypto_provider();
    let kubeconfig = read_kubeconfig(path)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|source| BootstrapError::Kubeconfig {
            path: path.to_owned(),
            source,
        })?;
    kube::Client::try_from(config).map_err(|source| BootstrapError::Client {
        path: path.to_owned(),
        source,
    })
}
