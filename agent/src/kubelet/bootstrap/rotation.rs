//! Client certificate rotation, like client-go's certificate manager: renew at a jittered
//! 70–90 % of the certificate's lifetime with a CSR authenticated by the current
//! certificate, swap the `kubelet-client-current.pem` link, rebuild the client.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::PublicKeyData;

use super::certificate::{check_issued, describe, Validity};
use super::client::read_kubeconfig;
use super::csr::{self, Credential};
use super::files::store_pair;
use super::{ApiClient, BootstrapError};

/// How rotation asks for and waits for new certificates.
#[derive(Debug, Clone)]
pub struct RotationOptions {
    /// The lifetime to ask for (`expirationSeconds`); the signer's default if unset.
    pub requested_duration: Option<Duration>,
    /// How long one CSR may wait for approval and signing.
    pub approval_timeout: Duration,
    /// The first retry delay after a failed renewal; it doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    /// The longest delay between retries.
    pub max_backoff: Duration,
}

impl Default for RotationOptions {
    fn default() -> Self {
        RotationOptions {
            requested_duration: None,
            approval_timeout: Duration::from_secs(15 * 60),
            initial_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(5 * 60),
        }
    }
}

/// The certificate being rotated.
struct Current {
    link: PathBuf,
    server: String,
    node: String,
    validity: Validity,
}

impl ApiClient {
    /// Renew the client certificate before it expires, forever; returns only when the
    /// kubeconfig's credentials are not a rotatable certificate file.
    pub async fn run_rotation(&self, options: RotationOptions) -> Result<(), BootstrapError> {
        let kubeconfig = self
            .kubeconfig()
            .map(Path::to_owned)
            .ok_or_else(|| BootstrapError::NotRotatable(PathBuf::from("<in-memory client>")))?;
        let mut backoff = options.initial_backoff;
        loop {
            let current = current(&kubeconfig)?;
            let deadline = rotation_deadline(current.validity, jitter());
            let wait = deadline
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            tracing::info!(
                certificate = %current.link.display(),
                in_secs = wait.as_secs(),
                "client certificate rotation scheduled"
            );
            tokio::time::sleep(wait).await;
            loop {
                match self.rotate(&current, &options).await {
                    Ok(validity) => {
                        let expires = jiff::Timestamp::try_from(validity.not_after)
                            .map(|t| t.to_string())
                            .unwrap_or_default();
                        tracing::info!(%expires, "client certificate rotated");
                        backoff = options.initial_backoff;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in_secs = backoff.as_secs(), "client certificate rotation failed");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(options.max_backoff);
                    }
                }
            }
        }
    }

    async fn rotate(
        &self,
        current: &Current,
        options: &RotationOptions,
    ) -> Result<Validity, BootstrapError> {
        let request = csr::new_request(&current.node)?;
        let cert_pem = csr::submit_and_wait(
            self.current(),
            &current.server,
            &request,
            Credential::ClientCertificate,
            options.requested_duration,
            options.approval_timeout,
        )
        .await?;
        let user = format!("system:node:{}", current.node);
        let validity = check_issued(&cert_pem, &request.key.subject_public_key_info(), &user)?;
        let dir = current.link.parent().unwrap_or(Path::new("."));
        let (_, previous) = store_pair(dir, &cert_pem, &request.key.serialize_pem())?;
        self.reload().await?;
        if let Some(previous) = previous {
            // The old pair is loaded nowhere any more; keep the directory to the live pair.
            let _ = std::fs::remove_file(previous);
        }
        Ok(validity)
    }
}

/// The certificate link the kubeconfig's current user names for both certificate and key,
/// with what the certificate says.
fn current(kubeconfig: &Path) -> Result<Current, BootstrapError> {
    let not_rotatable = || BootstrapError::NotRotatable(kubeconfig.to_owned());
    let config = read_kubeconfig(kubeconfig)?;
    let context = config
        .current_context
        .as_deref()
        .and_then(|name| config.contexts.iter().find(|c| c.name == name))
        .and_then(|c| c.context.as_ref());
    let user = match context {
        Some(context) => config
            .auth_infos
            .iter()
            .find(|a| Some(&a.name) == context.user.as_ref()),
        None => config.auth_infos.first(),
    }
    .and_then(|a| a.auth_info.as_ref())
    .ok_or_else(not_rotatable)?;
    let (Some(cert), Some(key)) = (&user.client_certificate, &user.client_key) else {
        return Err(not_rotatable());
    };
    if cert != key {
        return Err(not_rotatable());
    }
    let server = match context {
        Some(context) => config.clusters.iter().find(|c| c.name == context.cluster),
        None => config.clusters.first(),
    }
    .and_then(|c| c.cluster.as_ref())
    .and_then(|c| c.server.clone())
    .unwrap_or_default();
    let link = PathBuf::from(cert);
    let pem = std::fs::read_to_string(&link).map_err(|source| BootstrapError::Io {
        path: link.clone(),
        source,
    })?;
    let (cn, validity) = describe(&pem)?;
    let node = cn
        .strip_prefix("system:node:")
        .ok_or_else(not_rotatable)?
        .to_owned();
    Ok(Current {
        link,
        server,
        node,
        validity,
    })
}

/// When to renew: notBefore plus `fraction` (70–90 %) of the lifetime, as client-go does.
fn rotation_deadline(validity: Validity, fraction: f64) -> SystemTime {
    let lifetime = validity
        .not_after
        .duration_since(validity.not_before)
        .unwrap_or_default();
    validity.not_before + lifetime.mul_f64(fraction.clamp(0.7, 0.9))
}

/// A uniformly spread fraction in [0.7, 0.9), different per call and per node.
fn jitter() -> f64 {
    let random = RandomState::new().build_hasher().finish();
    0.7 + 0.2 * (random >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_is_between_70_and_90_percent_of_the_lifetime() {
        let not_before = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let validity = Validity {
            not_before,
            not_after: not_before + Duration::from_secs(100),
        };
        assert_eq!(
            rotation_deadline(validity, 0.7),
            not_before + Duration::from_secs(70)
        );
        assert_eq!(
            rotation_deadline(validity, 0.9),
            not_before + Duration::from_secs(90)
        );
        assert_eq!(
            rotation_deadline(validity, 0.0),
            not_before + Duration::from_secs(70)
        );
        let samples: Vec<f64> = (0..200).map(|_| jitter()).collect();
        assert!(samples.iter().all(|f| (0.7..0.9).contains(f)));
        let distinct = samples
            .iter()
            .map(|f| f.to_bits())
            .collect::<std::collections::HashSet<_>>();
        assert!(distinct.len() > 150);
    }

    #[test]
    fn only_a_combined_certificate_file_is_rotatable() {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://x\n\
             contexts:\n- name: ctx\n  context:\n    cluster: c\n    user: u\ncurrent-context: ctx\n\
             users:\n- name: u\n  user:\n    token: abc\n",
        )
        .unwrap();
        assert!(matches!(
            current(&kubeconfig),
            Err(BootstrapError::NotRotatable(_))
        ));
    }
}
