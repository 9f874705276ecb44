//! Registry endpoints: the mirrors configured for a registry, then the registry itself, each
//! with a registry client built from that host's settings.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::{Client, Reference};

use super::auth::Credentials;
use crate::config::{RegistrySettings, RuntimeConfig};
use crate::image::error::ImageError;

/// One place an image can be fetched from.
pub struct Endpoint {
    /// Host asked (a mirror or the registry).
    pub host: String,
    /// Client configured for that host.
    pub client: Arc<Client>,
    /// The image reference, redirected to the mirror when this is one.
    pub reference: Reference,
    /// Credentials presented to this host.
    pub credentials: Option<Credentials>,
}

/// Registry clients by host and credentials, reused across pulls so connections and tokens
/// are shared. A client remembers the first credentials it authenticated with, so different
/// credentials need different clients.
#[derive(Default)]
pub struct Endpoints {
    clients: Mutex<HashMap<String, Arc<Client>>>,
}

impl Endpoints {
    /// Where to fetch `reference` from: its mirrors in the order to try, then the registry
    /// itself; `credentials` says what to present to each host.
    pub fn for_reference(
        &self,
        config: &RuntimeConfig,
        reference: &Reference,
        credentials: impl Fn(&str) -> Result<Option<Credentials>, ImageError>,
    ) -> Result<(Vec<Endpoint>, Endpoint), ImageError> {
        let registry = reference.registry().to_owned();
        let mut mirrors = Vec::new();
        for mirror in config.registry(&registry).mirrors {
            let mut redirected = reference.clone();
            redirected.set_mirror_registry(mirror.clone());
            let credentials = credentials(&mirror)?;
            mirrors.push(Endpoint {
                client: self.client(&mirror, &config.registry(&mirror), credentials.as_ref())?,
                host: mirror,
                reference: redirected,
                credentials,
            });
        }
        let credentials = credentials(&registry)?;
        let registry = Endpoint {
            client: self.client(&registry, &config.registry(&registry), credentials.as_ref())?,
            host: registry,
            reference: reference.clone(),
            credentials,
        };
        Ok((mirrors, registry))
    }

    fn client(
        &self,
        host: &str,
        settings: &RegistrySettings,
        credentials: Option<&Credentials>,
    ) -> Result<Arc<Client>, ImageError> {
        let key = format!(
            "{host}|{}",
            credentials
                .map(Credentials::fingerprint)
                .unwrap_or_default()
        );
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let mut extra_root_certificates = Vec::new();
        if let Some(ca) = &settings.ca_file {
            let data = std::fs::read(ca).map_err(|e| {
                ImageError::io(format!("reading CA file {} for {host}", ca.display()), e)
            })?;
            extra_root_certificates.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            });
        }
        let client = Arc::new(Client::new(ClientConfig {
            protocol: if settings.insecure {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            accept_invalid_certificates: settings.skip_verify,
            extra_root_certificates,
            platform_resolver: None,
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            read_timeout: Some(std::time::Duration::from_secs(60)),
            user_agent: concat!("capstan/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        }));
        // A client keeps the first bearer token it is given; identity tokens yield a new,
        // repository-scoped access token per pull, so their clients are not reused.
        if !matches!(credentials, Some(Credentials::IdentityToken(_))) {
            clients.insert(key, client.clone());
        }
        Ok(client)
    }
}
