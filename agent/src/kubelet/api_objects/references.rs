//! What a pod refers to in the API (the kubelet's `VisitPodSecretNames`/`VisitPodConfigmapNames`
//! plus projected tokens and service links).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{EnvFromSource, EnvVar, Pod};

use super::TokenKey;

/// The API's default `expirationSeconds` of a projected serviceAccountToken.
const DEFAULT_TOKEN_EXPIRATION_SECONDS: i64 = 3600;

/// Names of the objects one pod refers to, all in the pod's namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct References {
    /// ConfigMaps from volumes, projected sources, env and envFrom.
    pub config_maps: BTreeSet<String>,
    /// Secrets from volumes, projected sources, env, envFrom and imagePullSecrets.
    pub secrets: BTreeSet<String>,
    /// Projected serviceAccountToken requests.
    pub tokens: BTreeSet<TokenKey>,
    /// `enableServiceLinks` (default true): every Service of the namespace is wanted.
    pub service_links: bool,
}

impl References {
    /// Everything `pod` refers to, including its init and ephemeral containers.
    pub fn of(pod: &Pod) -> References {
        let mut refs = References {
            service_links: true,
            ..Default::default()
        };
        let Some(spec) = pod.spec.as_ref() else {
            return refs;
        };
        refs.service_links = spec.enable_service_links.unwrap_or(true);
        for secret in spec.image_pull_secrets.iter().flatten() {
            refs.secrets.insert(secret.name.clone());
        }
        for vol in spec.volumes.iter().flatten() {
            if let Some(cm) = &vol.config_map {
                refs.config_maps.insert(cm.name.clone());
            }
            if let Some(secret) = vol.secret.as_ref().and_then(|s| s.secret_name.clone()) {
                refs.secrets.insert(secret);
            }
            for source in vol
                .projected
                .iter()
                .flat_map(|p| p.sources.iter().flatten())
            {
                if let Some(cm) = &source.config_map {
                    refs.config_maps.insert(cm.name.clone());
                }
                if let Some(secret) = &source.secret {
                    refs.secrets.insert(secret.name.clone());
                }
                if let Some(token) = &source.service_account_token {
                    refs.tokens.insert(TokenKey {
                        audience: token.audience.clone().unwrap_or_default(),
                        expiration_seconds: token
                            .expiration_seconds
                            .unwrap_or(DEFAULT_TOKEN_EXPIRATION_SECONDS),
                    });
                }
            }
        }
        let envs = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .map(|c| (&c.env, &c.env_from))
            .chain(
                spec.ephemeral_containers
                    .iter()
                    .flatten()
                    .map(|c| (&c.env, &c.env_from)),
            );
        for (env, env_from) in envs {
            refs.add_env(env.as_deref().unwrap_or_default());
            refs.add_env_from(env_from.as_deref().unwrap_or_default());
        }
        refs
    }

    fn add_env(&mut self, env: &[EnvVar]) {
        for source in env.iter().filter_map(|v| v.value_from.as_ref()) {
            if let Some(cm) = &source.config_map_key_ref {
                self.config_maps.insert(cm.name.clone());
            }
            if let Some(secret) = &source.secret_key_ref {
                self.secrets.insert(secret.name.clone());
            }
        }
    }

    fn add_env_from(&mut self, env_from: &[EnvFromSource]) {
        for from in env_from {
            if let Some(cm) = &from.config_map_ref {
                self.config_maps.insert(cm.name.clone());
            }
            if let Some(secret) = &from.secret_ref {
                self.secrets.insert(secret.name.clone());
            }
        }
    }
}

/// The pod's service account (`serviceAccountName`, else the deprecated `serviceAccount`,
/// else `default`).
pub fn service_account_name(pod: &Pod) -> String {
    let spec = pod.spec.as_ref();
    spec.and_then(|s| s.service_account_name.clone())
        .or_else(|| spec.and_then(|s| s.service_account.clone()))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Result<Pod, serde_json::Error> {
        serde_json::from_value(json!({"metadata": {"name": "p", "uid": "u"}, "spec": spec}))
    }

    #[test]
    fn collects_every_reference() -> Result<(), serde_json::Error> {
        let pod = pod(json!({
            "imagePullSecrets": [{"name": "pull"}],
            "enableServiceLinks": false,
            "volumes": [
                {"name": "a", "configMap": {"name": "cm-vol"}},
                {"name": "b", "secret": {"secretName": "s-vol"}},
                {"name": "c", "projected": {"sources": [
                    {"configMap": {"name": "cm-proj"}},
                    {"secret": {"name": "s-proj"}},
                    {"serviceAccountToken": {"path": "t"}},
                    {"serviceAccountToken": {"path": "v", "audience": "vault", "expirationSeconds": 600}}
                ]}}
            ],
            "initContainers": [{"name": "i", "envFrom": [{"configMapRef": {"name": "cm-init"}}]}],
            "containers": [{"name": "c", "env": [
                {"name": "X", "valueFrom": {"secretKeyRef": {"name": "s-env", "key": "k"}}},
                {"name": "Y", "valueFrom": {"configMapKeyRef": {"name": "cm-env", "key": "k"}}}
            ], "envFrom": [{"secretRef": {"name": "s-from"}}]}],
            "ephemeralContainers": [{"name": "e", "env": [
                {"name": "Z", "valueFrom": {"configMapKeyRef": {"name": "cm-eph", "key": "k"}}}
            ]}]
        }))?;
        let refs = References::of(&pod);
        let names = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>();
        assert_eq!(
            names(&refs.config_maps),
            ["cm-env", "cm-eph", "cm-init", "cm-proj", "cm-vol"]
        );
        assert_eq!(
            names(&refs.secrets),
            ["pull", "s-env", "s-from", "s-proj", "s-vol"]
        );
        let tokens: Vec<_> = refs.tokens.iter().cloned().collect();
        assert_eq!(
            tokens,
            [
                TokenKey {
                    audience: String::new(),
                    expiration_seconds: 3600
                },
                TokenKey {
                    audience: "vault".into(),
                    expiration_seconds: 600
                }
            ]
        );
        assert!(!refs.service_links);
        Ok(())
    }

    #[test]
    fn service_links_default_on_and_account_defaults() -> Result<(), serde_json::Error> {
        let plain = pod(json!({"containers": [{"name": "c"}]}))?;
        assert!(References::of(&plain).service_links);
        assert_eq!(service_account_name(&plain), "default");
        let named = pod(json!({"serviceAccount": "old", "containers": []}))?;
        assert_eq!(service_account_name(&named), "old");
        let both =
            pod(json!({"serviceAccount": "old", "serviceAccountName": "new", "containers": []}))?;
        assert_eq!(service_account_name(&both), "new");
        Ok(())
    }
}
