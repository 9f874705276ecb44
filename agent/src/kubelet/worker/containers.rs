//! Runtime actions of a sync: the sandbox, images under the pull policy, starting a
//! container (with its postStart hook) and killing one (with its preStop hook).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, Pod};

use super::observe::{observe, RuntimeView};
use super::pod::PodWorker;
use super::sync::{pod_label, SandboxInfo};
use crate::kubelet::api_objects::{image_auth, ImageAuth};
use crate::kubelet::convert::{self, ContainerInputs, PodContext};
use crate::kubelet::probe::{run_hook, HookError, ProbeKind, ProbeTarget};
use crate::kubelet::runtime::RuntimeError;
use crate::kubelet::status::{restart_policy, EventKind, ObservedContainer, RunState, Waiting};

/// Bound on a termination message read from the container's file, like the kubelet.
const MAX_TERMINATION_MESSAGE: u64 = 4096;
/// Log tail used as the message with FallbackToLogsOnError.
const FALLBACK_LOG_LINES: usize = 80;
const FALLBACK_LOG_BYTES: usize = 2048;

impl PodWorker {
    /// The facts about node and pod the converters need.
    pub(super) fn context(
        &self,
        pod: &Pod,
        pod_ips: Vec<String>,
    ) -> Result<PodContext, convert::ConvertError> {
        let settings = &self.shared.settings;
        Ok(PodContext {
            node: settings.node.clone(),
            pod_ips,
            cgroup_parent: convert::pod_cgroup_parent(&settings.cgroup_root, pod)?,
            pod_log_dir: convert::pod_log_directory(&settings.pod_logs_dir, pod)?,
            objects: self.objects.clone(),
        })
    }

    /// The ready sandbox, creating one when there is none and the pod still needs one.
    /// `None` when the pod is finished (nothing will run again) or creation failed.
    pub(super) async fn ensure_sandbox(
        &mut self,
        pod: &Pod,
        view: &RuntimeView,
    ) -> Result<Option<SandboxInfo>, RuntimeError> {
        let cri = &self.shared.cri;
        if let Some(sandbox) = view.ready_sandbox() {
            let status = cri.sandbox_status(&sandbox.id).await?;
            let ips = sandbox_ips(&status);
            let attempt = sandbox.metadata.as_ref().map_or(0, |m| m.attempt);
            let config = match self
                .context(pod, ips.clone())
                .and_then(|ctx| convert::sandbox_config(pod, &ctx, attempt))
            {
                Ok(config) => config,
                Err(error) => return self.config_error(pod, error.to_string()),
            };
            return Ok(Some(SandboxInfo {
                id: sandbox.id.clone(),
                config,
                ips,
            }));
        }
        if !view.sandboxes.is_empty() && finished(pod, view) {
            return Ok(None);
        }
        // A dead sandbox takes its containers with it: clear it out, then start over.
        for old in &view.sandboxes {
            cri.stop_sandbox(&old.id).await?;
        }
        let attempt = view.next_attempt();
        let config = match self
            .context(pod, Vec::new())
            .and_then(|ctx| convert::sandbox_config(pod, &ctx, attempt))
        {
            Ok(config) => config,
            Err(error) => return self.config_error(pod, error.to_string()),
        };
        if !view.sandboxes.is_empty() {
            self.event(
                EventKind::Normal,
                "SandboxChanged",
                None,
                "Pod sandbox changed, it will be killed and re-created.".to_owned(),
            );
        }
        let id = match cri.run_sandbox(config.clone(), &runtime_handler(pod)).await {
            Ok(id) => id,
            Err(error) => {
                let message = format!("Failed to create pod sandbox: {error}");
                self.all_waiting_created(pod, &message);
                self.event(EventKind::Warning, "FailedCreatePodSandBox", None, message);
                self.wake_by(tokio::time::Instant::now() + Duration::from_secs(2));
                return Ok(None);
            }
        };
        let status = cri.sandbox_status(&id).await?;
        let ips = sandbox_ips(&status);
        for old in &view.sandboxes {
            if let Err(error) = cri.remove_sandbox(&old.id).await {
                tracing::debug!(%error, sandbox = %old.id, "removing a dead sandbox");
            }
        }
        Ok(Some(SandboxInfo { id, config, ips }))
    }

    fn config_error(
        &mut self,
        pod: &Pod,
        message: String,
    ) -> Result<Option<SandboxInfo>, RuntimeError> {
        self.all_waiting_created(pod, &message);
        self.event(EventKind::Warning, "Failed", None, message);
        Ok(None)
    }

    fn all_waiting_created(&mut self, pod: &Pod, message: &str) {
        let spec = pod.spec.as_ref();
        let init = spec
            .and_then(|s| s.init_containers.as_ref())
            .into_iter()
            .flatten();
        let app = spec.map(|s| s.containers.iter()).into_iter().flatten();
        for container in init.chain(app) {
            self.waiting.insert(
                container.name.clone(),
                Waiting::new("CreateContainerConfigError", message),
            );
        }
    }

    /// Pull (per imagePullPolicy), create and start one container, then run its postStart
    /// hook. Failures become the container's waiting reason and an event; true on success.
    pub(super) async fn start_container(
        &mut self,
        pod: &Pod,
        spec: &Container,
        restart_count: u32,
        sandbox: &SandboxInfo,
    ) -> bool {
        let name = spec.name.as_str();
        let Some(image) = self.ensure_image(pod, spec, sandbox).await else {
            return false;
        };
        let ctx = match self.context(pod, sandbox.ips.clone()) {
            Ok(ctx) => ctx,
            Err(error) => return self.create_failed(name, "CreateContainerConfigError", error),
        };
        let env: BTreeMap<String, String> = match convert::container_env(pod, spec, &ctx) {
            Ok(env) => env.into_iter().collect(),
            Err(error) => return self.create_failed(name, "CreateContainerConfigError", error),
        };
        let mut mounts = match self.shared.volumes.container_mounts(pod, spec, &env) {
            Ok(mounts) => mounts,
            Err(error) => return self.create_failed(name, "CreateContainerConfigError", error),
        };
        match self.termination_message_mount(spec, restart_count) {
            Ok(Some(mount)) => mounts.push(mount),
            Ok(None) => {}
            Err(error) => return self.create_failed(name, "CreateContainerConfigError", error),
        }
        let inputs = ContainerInputs {
            restart_count,
            image_ref: image.id.clone(),
            image_uid: image.uid.as_ref().map(|u| u.value),
            image_username: image.username.clone(),
            mounts,
        };
        let config = match convert::container_config(pod, spec, inputs, &ctx) {
            Ok(config) => config,
            Err(error) => return self.create_failed(name, "CreateContainerConfigError", error),
        };
        for message in convert::invalid_env_from_keys(pod, spec, &self.objects) {
            self.event(
                EventKind::Warning,
                "InvalidEnvironmentVariableNames",
                Some(name),
                message,
            );
        }
        let cri = &self.shared.cri;
        let id = match cri
            .create_container(&sandbox.id, config, sandbox.config.clone())
            .await
        {
            Ok(id) => id,
            Err(error) => return self.create_failed(name, "CreateContainerError", error),
        };
        self.shared
            .container_index()
            .insert(id.clone(), self.uid.clone());
        self.event(
            EventKind::Normal,
            "Created",
            Some(name),
            format!("Created container {name}"),
        );
        if let Err(error) = cri.start_container(&id).await {
            return self.create_failed(name, "RunContainerError", error);
        }
        self.waiting.remove(name);
        self.shared
            .store
            .set_container(&self.uid, name, &id, restart_count, true);
        self.event(
            EventKind::Normal,
            "Started",
            Some(name),
            format!("Started container {name}"),
        );
        let hook = spec.lifecycle.as_ref().and_then(|l| l.post_start.clone());
        if let Some(hook) = hook {
            let target = self.target(pod, spec, &id, sandbox);
            if let Err(error) = run_hook(&hook, &target, &self.shared.cri, None).await {
                self.event(
                    EventKind::Warning,
                    "FailedPostStartHook",
                    Some(name),
                    error.to_string(),
                );
                let message = format!("FailedPostStartHook: {error}");
                self.kill_container(pod, spec, &id, message).await;
                return false;
            }
        }
        true
    }

    fn create_failed(&mut self, name: &str, reason: &str, error: impl std::fmt::Display) -> bool {
        let message = error.to_string();
        self.waiting
            .insert(name.to_owned(), Waiting::new(reason, message.clone()));
        self.event(
            EventKind::Warning,
            "Failed",
            Some(name),
            format!("Error: {message}"),
        );
        // Retried by the next sync, after the usual delay.
        self.wake_by(tokio::time::Instant::now() + Duration::from_secs(2));
        false
    }

    /// Pull `image` with each credential the pod's imagePullSecrets give for its registry,
    /// in the kubelet's order (anonymously when none match); the last error if all fail.
    async fn pull_with_pull_secrets(
        &mut self,
        pod: &Pod,
        container: &str,
        image: &str,
        sandbox: &SandboxInfo,
    ) -> Result<(), RuntimeError> {
        let auth = match image_auth(pod, &self.objects, image) {
            Ok(auth) => auth,
            Err(error) => {
                self.event(
                    EventKind::Warning,
                    "Failed",
                    Some(container),
                    error.to_string(),
                );
                ImageAuth::default()
            }
        };
        if !auth.missing_secrets.is_empty() {
            let message = format!(
                "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
                auth.missing_secrets.join(", ")
            );
            self.event(
                EventKind::Warning,
                "FailedToRetrieveImagePullSecret",
                None,
                message,
            );
        }
        let cri = self.shared.cri.clone();
        let mut credentials = auth.configs.into_iter();
        let Some(first) = credentials.next() else {
            return cri
                .pull_image(image, None, sandbox.config.clone())
                .await
                .map(drop);
        };
        let mut result = cri
            .pull_image(image, Some(first), sandbox.config.clone())
            .await;
        for credential in credentials {
            if result.is_ok() {
                break;
            }
            result = cri
                .pull_image(image, Some(credential), sandbox.config.clone())
                .await;
        }
        result.map(drop)
    }

    /// Make the image present per imagePullPolicy; `None` when it is not (waiting set).
    async fn ensure_image(
        &mut self,
        pod: &Pod,
        spec: &Container,
        sandbox: &SandboxInfo,
    ) -> Option<k8s_cri::v1::Image> {
        let name = spec.name.as_str();
        let image = spec.image.clone().unwrap_or_default();
        let policy = spec
            .image_pull_policy
            .clone()
            .unwrap_or_else(|| default_pull_policy(&image).to_owned());
        let cri = self.shared.cri.clone();
        let present = match cri.image_status(&image).await {
            Ok(found) => found,
            Err(error) => {
                tracing::debug!(%error, image, "image status");
                None
            }
        };
        match (policy.as_str(), present) {
            ("IfNotPresent" | "Never", Some(found)) => return Some(found),
            ("Never", None) => {
                let message =
                    format!("Container image \"{image}\" is not present with pull policy of Never");
                self.waiting.insert(
                    name.to_owned(),
                    Waiting::new("ErrImageNeverPull", message.clone()),
                );
                self.event(EventKind::Warning, "ErrImageNeverPull", Some(name), message);
                return None;
            }
            _ => {}
        }
        let now = Timestamp::now();
        if let Some(until) = self.pull_backoff.blocked_until(&image, now, now) {
            let message = format!("Back-off pulling image \"{image}\"");
            self.waiting.insert(
                name.to_owned(),
                Waiting::new("ImagePullBackOff", message.clone()),
            );
            self.event(EventKind::Normal, "BackOff", Some(name), message);
            self.wake_at_time(until);
            return None;
        }
        self.event(
            EventKind::Normal,
            "Pulling",
            Some(name),
            format!("Pulling image \"{image}\""),
        );
        let started = std::time::Instant::now();
        match self
            .pull_with_pull_secrets(pod, name, &image, sandbox)
            .await
        {
            Ok(_) => {
                self.pull_backoff.reset(&image);
                let took = started.elapsed().as_secs_f64();
                self.event(
                    EventKind::Normal,
                    "Pulled",
                    Some(name),
                    format!("Successfully pulled image \"{image}\" in {took:.3}s"),
                );
                match cri.image_status(&image).await {
                    Ok(Some(found)) => Some(found),
                    _ => {
                        let message = format!("image \"{image}\" is missing after its pull");
                        self.waiting
                            .insert(name.to_owned(), Waiting::new("ErrImagePull", message));
                        None
                    }
                }
            }
            Err(error) => {
                self.pull_backoff.next(&image, now, now);
                let message = format!("Failed to pull image \"{image}\": {error}");
                self.waiting.insert(
                    name.to_owned(),
                    Waiting::new("ErrImagePull", message.clone()),
                );
                self.event(EventKind::Warning, "Failed", Some(name), message);
                self.wake_at_time(now);
                None
            }
        }
    }

    /// The host file behind terminationMessagePath (created empty, world-writable so any
    /// container user can write it, as the kubelet does).
    fn termination_message_mount(
        &self,
        spec: &Container,
        restart_count: u32,
    ) -> std::io::Result<Option<k8s_cri::v1::Mount>> {
        let target = spec
            .termination_message_path
            .clone()
            .unwrap_or_else(|| "/dev/termination-log".to_owned());
        if target.is_empty() {
            return Ok(None);
        }
        let host = self.termination_message_file(&spec.name, restart_count);
        if let Some(dir) = host.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::File::create(&host)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o666))?;
        Ok(Some(k8s_cri::v1::Mount {
            container_path: target,
            host_path: host.display().to_string(),
            ..Default::default()
        }))
    }

    pub(super) fn termination_message_file(&self, name: &str, restart_count: u32) -> PathBuf {
        let dir = self.shared.settings.root_dir.join("pods").join(&self.uid);
        dir.join("containers")
            .join(name)
            .join(restart_count.to_string())
    }

    /// The termination message of an exited instance: its file, or with
    /// FallbackToLogsOnError and a failure, the tail of its log.
    pub(super) fn termination_message(
        &self,
        pod: &Pod,
        spec: &Container,
        exited: &ObservedContainer,
    ) -> Option<String> {
        use std::io::Read;
        let file = self.termination_message_file(&spec.name, exited.restart_count);
        let mut message = String::new();
        if let Ok(f) = std::fs::File::open(file) {
            let mut bytes = Vec::new();
            let _ = f.take(MAX_TERMINATION_MESSAGE).read_to_end(&mut bytes);
            message = String::from_utf8_lossy(&bytes).into_owned();
        }
        let fallback = spec.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
        if message.is_empty() && fallback && exited.failed() {
            let settings = &self.shared.settings;
            if let Ok(dir) = convert::pod_log_directory(&settings.pod_logs_dir, pod) {
                let log = convert::container_log_path(&spec.name, exited.restart_count);
                message = log_tail(&dir.join(log));
            }
        }
        (!message.is_empty()).then_some(message)
    }

    pub(super) fn target(
        &self,
        pod: &Pod,
        spec: &Container,
        container_id: &str,
        sandbox: &SandboxInfo,
    ) -> ProbeTarget {
        ProbeTarget {
            pod_ip: sandbox.ips.first().cloned(),
            container_id: container_id.to_owned(),
            container: spec.clone(),
            pod: pod_label(pod),
        }
    }

    /// Stop one container: preStop hook, then SIGTERM and SIGKILL after the grace period
    /// (the hook's time counts against it).
    pub(super) async fn kill_container(
        &mut self,
        pod: &Pod,
        spec: &Container,
        container_id: &str,
        message: String,
    ) {
        let grace = super::grace_period(pod);
        self.kill_with_grace(pod, Some(spec), container_id, grace, message)
            .await;
    }

    pub(super) async fn kill_with_grace(
        &self,
        pod: &Pod,
        spec: Option<&Container>,
        container_id: &str,
        grace: Duration,
        message: String,
    ) {
        let name = spec.map(|s| s.name.as_str());
        self.event(EventKind::Normal, "Killing", name, message);
        let started = std::time::Instant::now();
        let hook = spec.and_then(|s| s.lifecycle.as_ref()?.pre_stop.clone());
        if let (Some(hook), Some(spec)) = (hook, spec) {
            let ips = pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .into_iter()
                .collect();
            let sandbox = SandboxInfo {
                id: String::new(),
                config: Default::default(),
                ips,
            };
            let target = self.target(pod, spec, container_id, &sandbox);
            match run_hook(&hook, &target, &self.shared.cri, Some(grace)).await {
                Ok(()) => {}
                Err(HookError::TimedOut(_)) => {
                    tracing::info!(
                        container = spec.name,
                        "preStop hook ran out of grace period"
                    );
                }
                Err(error) => self.event(
                    EventKind::Warning,
                    "FailedPreStopHook",
                    Some(&spec.name),
                    error.to_string(),
                ),
            }
        }
        // The runtime wants at least a second; the hook may have used up the rest.
        let left = grace.saturating_sub(started.elapsed());
        let left = if grace.is_zero() {
            Duration::ZERO
        } else {
            left.max(Duration::from_secs(1))
        };
        if let Err(error) = self.shared.cri.stop_container(container_id, left).await {
            tracing::warn!(%error, container = container_id, "stopping container");
        }
    }

    /// A liveness or startup failure: kill the instance so the restart policy applies.
    pub(super) async fn restart_unhealthy(
        &mut self,
        pod: &Pod,
        spec: &Container,
        running: &ObservedContainer,
        kind: ProbeKind,
    ) {
        let message = format!(
            "Container {} failed {} probe, will be restarted",
            spec.name,
            kind.as_str().to_lowercase()
        );
        self.kill_container(pod, spec, &running.id, message).await;
    }

    /// Observe once more: used by termination to see what is still running.
    pub(super) async fn observe(&self) -> Result<RuntimeView, RuntimeError> {
        observe(&self.shared.cri, &self.uid).await
    }
}

/// The pod has run and nothing in it will start again under its restart policy.
fn finished(pod: &Pod, view: &RuntimeView) -> bool {
    let policy = restart_policy(pod);
    if policy == "Always" {
        return false;
    }
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    spec.containers.iter().all(|c| {
        let current = view
            .containers
            .get(&c.name)
            .and_then(|h| h.current.as_ref());
        current.is_some_and(|o| {
            o.state == RunState::Exited && !crate::kubelet::status::will_restart(policy, o)
        })
    })
}

/// The CRI runtime handler: in standalone mode `runtimeClassName` names it directly (no
/// RuntimeClass objects exist without an API server).
fn runtime_handler(pod: &Pod) -> String {
    let spec = pod.spec.as_ref();
    spec.and_then(|s| s.runtime_class_name.clone())
        .unwrap_or_default()
}

/// Pod IPs from a sandbox status, the primary first.
fn sandbox_ips(status: &k8s_cri::v1::PodSandboxStatus) -> Vec<String> {
    let Some(network) = status.network.as_ref() else {
        return Vec::new();
    };
    let mut ips = Vec::new();
    if !network.ip.is_empty() {
        ips.push(network.ip.clone());
    }
    ips.extend(network.additional_ips.iter().map(|ip| ip.ip.clone()));
    ips
}

/// The API default: Always for `:latest` or untagged images, else IfNotPresent.
fn default_pull_policy(image: &str) -> &'static str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    match last.split_once(':') {
        Some((_, "latest")) | None if !image.contains('@') => "Always",
        _ => "IfNotPresent",
    }
}

/// The last lines of a CRI-format log, content only, bounded.
fn log_tail(path: &std::path::Path) -> String {
    let Ok(text) = std::fs::read(path) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text
        .lines()
        .filter_map(|line| line.splitn(4, ' ').nth(3))
        .collect();
    let start = lines.len().saturating_sub(FALLBACK_LOG_LINES);
    let mut tail = lines[start..].join("\n");
    if tail.len() > FALLBACK_LOG_BYTES {
        let mut cut = tail.len() - FALLBACK_LOG_BYTES;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail = tail.split_off(cut);
    }
    tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_defaults_follow_the_tag() {
        assert_eq!(default_pull_policy("busybox"), "Always");
        assert_eq!(default_pull_policy("busybox:latest"), "Always");
        assert_eq!(default_pull_policy("127.0.0.1:5000/busybox"), "Always");
        assert_eq!(
            default_pull_policy("127.0.0.1:5000/busybox:1.36"),
            "IfNotPresent"
        );
        assert_eq!(default_pull_policy("busybox@sha256:abcd"), "IfNotPresent");
    }

    #[test]
    fn log_tails_keep_content_only_and_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut text = String::new();
        for i in 0..200 {
            text.push_str(&format!(
                "2026-01-01T00:00:00.000000000Z stderr F line {i}\n"
            ));
        }
        std::fs::write(&path, text).unwrap();
        let tail = log_tail(&path);
        assert!(tail.ends_with("line 199"), "{tail}");
        assert!(!tail.contains("line 119\n"), "only 80 lines");
        assert!(tail.len() <= FALLBACK_LOG_BYTES);
        assert_eq!(log_tail(&dir.path().join("absent")), "");
    }
}
