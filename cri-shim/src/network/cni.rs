//! The runtime's CNI entry point: ADD, DEL, CHECK, STATUS and GC for pod attachments, with
//! the configuration chosen from the configuration directory and results cached on disk.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cni_plugins::types::{self, CniResult};
use cni_plugins::version;
use serde_json::Map;
use tracing::Instrument;

use super::attachment::{minimal_cni_args, Attachment, AttachmentRef};
use super::cache::{CacheEntry, ResultCache};
use super::chain::Chain;
use super::config::NetworkConfigList;
use super::error::NetworkError;
use super::exec::{CallEnv, PluginExec};
use crate::config::CniSettings;

/// How long one plugin call may take before it is killed.
pub const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Filesystem magic of nsfs, what a live network namespace path resolves to.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Pod networking through CNI plugins (cheap to clone).
#[derive(Debug, Clone)]
pub struct Cni {
    settings: CniSettings,
    exec: PluginExec,
    cache: ResultCache,
}

impl Cni {
    /// CNI with the configuration, plugin and cache directories of `settings`.
    pub fn new(settings: CniSettings) -> Self {
        Self {
            exec: PluginExec::new(settings.bin_dirs.clone(), DEFAULT_PLUGIN_TIMEOUT),
            cache: ResultCache::new(&settings.cache_dir),
            settings,
        }
    }

    /// The same, with another limit on each plugin call.
    pub fn with_plugin_timeout(mut self, timeout: Duration) -> Self {
        self.exec = PluginExec::new(self.settings.bin_dirs.clone(), timeout);
        self
    }

    /// The directories in use.
    pub fn settings(&self) -> &CniSettings {
        &self.settings
    }

    /// The network used now: the first file (by name) in the configuration directory
    /// ending `.conflist`, `.conf` or `.json` that parses.
    pub fn load(&self) -> Result<NetworkConfigList, NetworkError> {
        NetworkConfigList::load_dir(&self.settings.conf_dir)
    }

    /// Where the cache entry of `attachment` on `network` lives.
    pub fn cache_path(&self, network: &str, attachment: &AttachmentRef) -> PathBuf {
        self.cache.path(network, attachment)
    }

    /// The cached ADD result of an attachment (after a restart, for its pod IPs).
    pub fn cached_result(
        &self,
        attachment: &AttachmentRef,
    ) -> Result<Option<CniResult>, NetworkError> {
        attachment.validate()?;
        let entries = self.cache.find(attachment)?;
        let Some((path, entry)) = entries.into_iter().next() else {
            return Ok(None);
        };
        serde_json::from_value(entry.result)
            .map(Some)
            .map_err(|e| NetworkError::Cache {
                path,
                reason: format!("cached result: {e}"),
            })
    }

    /// Attach a pod: ADD through the network's plugins, then cache the configuration and
    /// result (durably, before returning). On failure nothing stays attached or cached.
    pub async fn add(&self, attachment: &Attachment) -> Result<CniResult, NetworkError> {
        attachment.validate()?;
        let list = self.load()?;
        let span = tracing::info_span!(
            "cni_add",
            pod = %format!("{}/{}", attachment.pod.namespace, attachment.pod.name),
            uid = %attachment.pod.uid,
            network = %list.name,
        );
        self.add_with(attachment, &list).instrument(span).await
    }

    async fn add_with(
        &self,
        attachment: &Attachment,
        list: &NetworkConfigList,
    ) -> Result<CniResult, NetworkError> {
        let reference = AttachmentRef::from(attachment);
        let env = CallEnv {
            container_id: attachment.container_id.clone(),
            netns: Some(attachment.netns.clone()),
            ifname: attachment.ifname.clone(),
            args: attachment.cni_args(),
        };
        let capability_args = attachment.capability_args();
        let chain = Chain::new(&self.exec, list);
        let (raw, result) = chain.add(&env, &capability_args).await?;
        let entry = CacheEntry::new(
            list,
            &reference,
            &attachment.netns,
            env.args.clone(),
            capability_args.clone(),
            raw.clone(),
        );
        let cache = self.cache.clone();
        let written = tokio::task::spawn_blocking(move || cache.write(&entry))
            .await
            .unwrap_or_else(|e| {
                Err(NetworkError::Cache {
                    path: self.cache.path(&list.name, &reference),
                    reason: format!("writer task failed: {e}"),
                })
            });
        if let Err(error) = written {
            // Without a cache entry DEL could not find this attachment's configuration.
            if let Err(undo) = chain.del(&env, &capability_args, Some(&raw)).await {
                tracing::warn!(error = %undo, "undoing CNI ADD after the cache write failed");
            }
            return Err(error);
        }
        tracing::info!(ips = ?super::pod_ips(&result), "pod attached");
        Ok(result)
    }

    /// Detach: DEL through the cached configuration in reverse order with the cached result,
    /// whatever the configuration directory holds now. Succeeds when the namespace is gone
    /// and when repeated. Without a cache entry the current configuration is used.
    pub async fn del(&self, attachment: &AttachmentRef) -> Result<(), NetworkError> {
        attachment.validate()?;
        let span = tracing::info_span!(
            "cni_del",
            container = %attachment.container_id,
            ifname = %attachment.ifname
        );
        async {
            let entries = self.cache.find(attachment)?;
            if entries.is_empty() {
                return self.del_uncached(attachment).await;
            }
            let mut errors = Vec::new();
            for (path, entry) in entries {
                if let Err(e) = self.del_entry(&path, &entry).await {
                    errors.push(e);
                }
            }
            NetworkError::combine(errors).map_or(Ok(()), Err)
        }
        .instrument(span)
        .await
    }

    /// DEL of one cached attachment, then removal of its entry.
    async fn del_entry(&self, path: &Path, entry: &CacheEntry) -> Result<(), NetworkError> {
        let list = match entry.config_list(path) {
            Ok(list) => list,
            Err(error) => {
                tracing::warn!(%error, "cached configuration unusable; DEL with the current one");
                self.del_uncached(&entry.reference()).await?;
                return self.cache.remove(path);
            }
        };
        let env = CallEnv {
            container_id: entry.container_id.clone(),
            netns: live_netns(&entry.netns),
            ifname: entry.if_name.clone(),
            args: entry.cni_args.clone(),
        };
        // DEL carries prevResult from CNI 0.4.0 on.
        let prev = version::has_check(&list.cni_version).then_some(&entry.result);
        Chain::new(&self.exec, &list)
            .del(&env, &entry.capability_args, prev)
            .await?;
        self.cache.remove(path)
    }

    /// DEL with the current configuration when the cache knows nothing (a second DEL, or a
    /// crash during ADD): plugins release by container ID and interface. Without a usable
    /// configuration there is nothing to call.
    async fn del_uncached(&self, attachment: &AttachmentRef) -> Result<(), NetworkError> {
        let list = match self.load() {
            Ok(list) => list,
            Err(error) => {
                tracing::warn!(%error, "no cached attachment and no usable CNI configuration; DEL skipped");
                return Ok(());
            }
        };
        let env = CallEnv {
            container_id: attachment.container_id.clone(),
            netns: None,
            ifname: attachment.ifname.clone(),
            args: minimal_cni_args(&attachment.container_id),
        };
        Chain::new(&self.exec, &list)
            .del(&env, &Map::new(), None)
            .await
    }

    /// Verify an attachment: CHECK through its cached configuration with the cached result.
    pub async fn check(&self, attachment: &AttachmentRef) -> Result<(), NetworkError> {
        attachment.validate()?;
        let entries = self.cache.find(attachment)?;
        if entries.is_empty() {
            return Err(NetworkError::NotAttached {
                container_id: attachment.container_id.clone(),
                ifname: attachment.ifname.clone(),
            });
        }
        for (path, entry) in entries {
            let list = entry.config_list(&path)?;
            if !version::has_check(&list.cni_version) {
                return Err(NetworkError::Unsupported {
                    command: "CHECK",
                    version: list.cni_version,
                    network: list.name,
                });
            }
            if list.disable_check {
                continue;
            }
            let env = CallEnv {
                container_id: entry.container_id.clone(),
                netns: (!entry.netns.is_empty()).then(|| PathBuf::from(&entry.netns)),
                ifname: entry.if_name.clone(),
                args: entry.cni_args.clone(),
            };
            Chain::new(&self.exec, &list)
                .check(&env, &entry.capability_args, &entry.result)
                .await?;
        }
        Ok(())
    }

    /// Whether pods can be networked (CRI NetworkReady): the configuration loads, its
    /// plugins (and IPAM plugins) exist, and from CNI 1.1 on every plugin's STATUS succeeds.
    pub async fn status(&self) -> Result<(), NetworkError> {
        let list = self.load()?;
        for plugin in &list.plugins {
            self.exec.find(&plugin.plugin_type)?;
            let ipam = plugin.ipam.as_ref().and_then(|i| i.get("type"));
            if let Some(ipam) = ipam.and_then(|t| t.as_str()) {
                self.exec.find(ipam)?;
            }
        }
        if version::has_status_and_gc(&list.cni_version) {
            Chain::new(&self.exec, &list).status().await?;
        }
        Ok(())
    }

    /// Release attachments not in `valid`: cached attachments on the current network that
    /// are not listed get a DEL (and lose their entry), then from CNI 1.1 on every plugin
    /// gets GC with `cni.dev/valid-attachments`. Entries of other networks are left alone:
    /// the cache directory may be shared with another runtime. `valid` must include pods
    /// whose ADD is still running, or the plugins' GC may release what they are given.
    pub async fn gc(&self, valid: &[AttachmentRef]) -> Result<(), NetworkError> {
        let list = self.load()?;
        let keep: HashSet<&AttachmentRef> = valid.iter().collect();
        let mut errors = Vec::new();
        for (path, entry) in self.cache.on_network(&list.name)? {
            if keep.contains(&entry.reference()) {
                continue;
            }
            tracing::info!(
                container = %entry.container_id,
                ifname = %entry.if_name,
                "CNI GC: releasing a stale attachment"
            );
            if let Err(e) = self.del_entry(&path, &entry).await {
                errors.push(e);
            }
        }
        if version::has_status_and_gc(&list.cni_version) && !list.disable_gc {
            let valid: Vec<types::Attachment> = valid.iter().map(Into::into).collect();
            if let Err(e) = Chain::new(&self.exec, &list).gc(&valid).await {
                errors.push(e);
            }
        }
        NetworkError::combine(errors).map_or(Ok(()), Err)
    }
}

/// The cached namespace path if it still is a namespace; DEL passes none otherwise, which
/// plugins take as "the namespace and its interfaces are gone".
fn live_netns(path: &str) -> Option<PathBuf> {
    if path.is_empty() {
        return None;
    }
    let stat = rustix::fs::statfs(path).ok()?;
    // f_type is i64 on some architectures and narrower on others.
    #[allow(clippy::useless_conversion)]
    let fs_type = i64::from(stat.f_type);
    (fs_type == NSFS_MAGIC).then(|| PathBuf::from(path))
}
