//! Running a network's plugin list: ADD in order with each result passed on as
//! `prevResult`, DEL in reverse, CHECK, STATUS and GC; and what each plugin gets on stdin.

use cni_plugins::types::{self, CniResult, Command, NetConf};
use serde_json::{Map, Value};

use super::config::NetworkConfigList;
use super::error::NetworkError;
use super::exec::{CallEnv, PluginExec};

/// A network's plugins and the means to run them.
pub(crate) struct Chain<'a> {
    exec: &'a PluginExec,
    list: &'a NetworkConfigList,
}

impl<'a> Chain<'a> {
    /// The chain of `list`, run by `exec`.
    pub fn new(exec: &'a PluginExec, list: &'a NetworkConfigList) -> Self {
        Self { exec, list }
    }

    /// ADD through every plugin. Returns the final result as printed (in the network's
    /// version) and typed. When a plugin fails, the plugins already called, the failing one
    /// included (it may have done part of its work), are DELeted in reverse order before
    /// the error is returned.
    pub async fn add(
        &self,
        env: &CallEnv,
        capability_args: &Map<String, Value>,
    ) -> Result<(Value, CniResult), NetworkError> {
        let mut prev: Option<(Value, CniResult)> = None;
        for (index, plugin) in self.list.plugins.iter().enumerate() {
            let config = plugin_config(plugin, prev.as_ref().map(|p| &p.0), capability_args, None);
            let outcome = self
                .exec
                .run(&plugin.plugin_type, Command::Add, env, &config)
                .await
                .and_then(|output| self.normalize(plugin, output));
            match outcome {
                Ok(result) => prev = Some(result),
                Err(error) => {
                    let added = &self.list.plugins[..=index];
                    let last = prev.as_ref().map(|p| &p.0);
                    if let Err(undo) = self.del_plugins(added, env, capability_args, last).await {
                        tracing::warn!(error = %undo, "undoing a failed CNI ADD");
                    }
                    return Err(error);
                }
            }
        }
        prev.ok_or_else(|| NetworkError::InvalidConfig {
            file: self.list.source.clone(),
            reason: "no plugins".to_owned(),
        })
    }

    /// DEL through every plugin in reverse order, each given `prev` (the cached result).
    /// Every plugin is called even when one fails, so as much as possible is released.
    pub async fn del(
        &self,
        env: &CallEnv,
        capability_args: &Map<String, Value>,
        prev: Option<&Value>,
    ) -> Result<(), NetworkError> {
        self.del_plugins(&self.list.plugins, env, capability_args, prev)
            .await
    }

    async fn del_plugins(
        &self,
        plugins: &[NetConf],
        env: &CallEnv,
        capability_args: &Map<String, Value>,
        prev: Option<&Value>,
    ) -> Result<(), NetworkError> {
        let mut errors = Vec::new();
        for plugin in plugins.iter().rev() {
            let config = plugin_config(plugin, prev, capability_args, None);
            if let Err(e) = self
                .exec
                .run(&plugin.plugin_type, Command::Del, env, &config)
                .await
            {
                errors.push(e);
            }
        }
        NetworkError::combine(errors).map_or(Ok(()), Err)
    }

    /// CHECK through every plugin in order with the cached result; the first failure ends it.
    pub async fn check(
        &self,
        env: &CallEnv,
        capability_args: &Map<String, Value>,
        prev: &Value,
    ) -> Result<(), NetworkError> {
        for plugin in &self.list.plugins {
            let config = plugin_config(plugin, Some(prev), capability_args, None);
            self.exec
                .run(&plugin.plugin_type, Command::Check, env, &config)
                .await?;
        }
        Ok(())
    }

    /// STATUS of every plugin in order; the first one not ready ends it.
    pub async fn status(&self) -> Result<(), NetworkError> {
        for plugin in &self.list.plugins {
            let config = plugin_config(plugin, None, &Map::new(), None);
            self.exec
                .run(
                    &plugin.plugin_type,
                    Command::Status,
                    &CallEnv::default(),
                    &config,
                )
                .await?;
        }
        Ok(())
    }

    /// GC of every plugin with the attachments to keep; all plugins are called.
    pub async fn gc(&self, valid: &[types::Attachment]) -> Result<(), NetworkError> {
        let mut errors = Vec::new();
        for plugin in &self.list.plugins {
            let config = plugin_config(plugin, None, &Map::new(), Some(valid));
            if let Err(e) = self
                .exec
                .run(
                    &plugin.plugin_type,
                    Command::Gc,
                    &CallEnv::default(),
                    &config,
                )
                .await
            {
                errors.push(e);
            }
        }
        NetworkError::combine(errors).map_or(Ok(()), Err)
    }

    /// A plugin's ADD output as a result in the network's version: kept as printed when
    /// already in that version, else converted through the shared result type.
    fn normalize(
        &self,
        plugin: &NetConf,
        output: Option<Value>,
    ) -> Result<(Value, CniResult), NetworkError> {
        let bad = |reason: String| NetworkError::BadOutput {
            plugin: plugin.plugin_type.clone(),
            command: Command::Add.as_str(),
            reason,
        };
        let raw = output.ok_or_else(|| bad("no result on stdout".to_owned()))?;
        let mut typed: CniResult =
            serde_json::from_value(raw.clone()).map_err(|e| bad(format!("{e}: {raw}")))?;
        let version = &self.list.cni_version;
        let raw = if raw.get("cniVersion").and_then(Value::as_str) == Some(version.as_str()) {
            raw
        } else {
            typed.to_version(version)
        };
        typed.cni_version.clone_from(version);
        Ok((raw, typed))
    }
}

/// What a plugin reads on stdin: its configuration (already carrying the list's name and
/// version), `prevResult`, `runtimeConfig` with only the capabilities the plugin declares,
/// and for GC the attachments to keep.
pub(crate) fn plugin_config(
    plugin: &NetConf,
    prev: Option<&Value>,
    capability_args: &Map<String, Value>,
    valid: Option<&[types::Attachment]>,
) -> Value {
    let mut conf = plugin.clone();
    conf.prev_result = prev.cloned();
    let declared = declared_capabilities(plugin);
    let runtime_config: Map<String, Value> = capability_args
        .iter()
        .filter(|(key, _)| declared.contains(&key.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !runtime_config.is_empty() {
        conf.runtime_config = Some(Value::Object(runtime_config));
    }
    conf.valid_attachments = valid.map(<[_]>::to_vec);
    // NetConf holds only JSON values and strings, so encoding cannot fail.
    serde_json::to_value(conf).unwrap_or(Value::Null)
}

/// The capability names a plugin sets to `true` in its `capabilities`.
fn declared_capabilities(plugin: &NetConf) -> Vec<&str> {
    match plugin.rest.get("capabilities") {
        Some(Value::Object(caps)) => caps
            .iter()
            .filter(|(_, on)| on.as_bool() == Some(true))
            .map(|(name, _)| name.as_str())
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn runtime_config_holds_only_declared_capabilities() {
        let list = NetworkConfigList::parse(
            br#"{"cniVersion":"1.0.0","name":"n","plugins":[
                {"type":"portmap","capabilities":{"portMappings":true,"bandwidth":false}},
                {"type":"plain"}]}"#,
            std::path::Path::new("t"),
        )
        .unwrap();
        let mut caps = Map::new();
        caps.insert("portMappings".into(), json!([{"hostPort": 1}]));
        caps.insert("bandwidth".into(), json!({"ingressRate": 1}));
        let prev = json!({"cniVersion": "1.0.0"});
        let with = plugin_config(&list.plugins[0], Some(&prev), &caps, None);
        assert_eq!(
            with["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 1}]})
        );
        assert_eq!(with["prevResult"], prev);
        assert_eq!(with["name"], "n");
        assert_eq!(with["cniVersion"], "1.0.0");
        let without = plugin_config(&list.plugins[1], None, &caps, None);
        assert!(without.get("runtimeConfig").is_none(), "{without}");
        assert!(without.get("prevResult").is_none(), "{without}");
        let valid = [types::Attachment {
            container_id: "c".into(),
            ifname: "eth0".into(),
        }];
        let gc = plugin_config(&list.plugins[1], None, &Map::new(), Some(&valid));
        assert_eq!(
            gc["cni.dev/valid-attachments"],
            json!([{"containerID": "c", "ifname": "eth0"}])
        );
    }
}
