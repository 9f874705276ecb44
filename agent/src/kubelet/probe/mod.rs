//! Container probes (startup, liveness, readiness) and lifecycle hooks (postStart, preStop),
//! with the kubelet prober's semantics and messages.
//!
//! - [`run_once`] runs one probe attempt (exec, httpGet, tcpSocket, grpc) honouring
//!   `timeoutSeconds` and returns a [`ProbeResult`] whose message is the kubelet's event text.
//! - [`spawn`] starts a periodic [`ProbeWorker`] for one container instance and one
//!   [`ProbeKind`]; it applies `initialDelaySeconds`, `periodSeconds` and the thresholds and
//!   reports on an mpsc channel. Spawn the workers when a container starts and drop them when
//!   it exits: a new container instance gets new workers, as the kubelet resets a worker on a
//!   new container ID. Liveness and readiness workers wait for the `started` watch to become
//!   true (set it when the startup worker reports [`ProbeState::Success`], or at once when the
//!   container has no startup probe). On pod deletion drop the liveness and startup workers, so
//!   a terminating container is not restarted (the kubelet stops them then too).
//! - [`run_hook`] runs a postStart/preStop [`LifecycleHandler`] (exec, httpGet, sleep).
//!
//! Exec goes through the [`ContainerExec`] trait (CRI ExecSync in the agent); the network
//! handlers dial the pod IP (or the handler's `host`) directly from the node.

mod exec;
mod expand;
mod grpc;
mod hooks;
mod http;
mod port;
mod tcp;
mod worker;

#[cfg(test)]
mod test_support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};

pub use exec::{ContainerExec, ExecError, ExecResult};
pub use hooks::{run_hook, HookError};
pub use k8s_openapi::api::core::v1::LifecycleHandler;
pub use worker::{
    instant_from_unix_nanos, spawn, ProbeEvent, ProbeState, ProbeUpdate, ProbeUpdateKind,
    ProbeWorker, WorkerConfig,
};

/// The Kubernetes minor version probes announce in `User-Agent: kube-probe/<ver>`.
const KUBE_VERSION: &str = "1.33";

/// `timeoutSeconds` when unset (the API default).
const DEFAULT_TIMEOUT_SECONDS: i32 = 1;

/// Which probe of a container a worker runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// `startupProbe`: gates the other two; failure restarts the container.
    Startup,
    /// `livenessProbe`: failure restarts the container.
    Liveness,
    /// `readinessProbe`: drives the container's `ready` and the pod's Ready condition.
    Readiness,
}

impl ProbeKind {
    /// The name the kubelet uses in event messages ("Liveness probe failed: ...").
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }
}

impl std::fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one probe attempt, as the kubelet's `probe.Result` plus its output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeResult {
    /// The probe passed.
    Success,
    /// The probe passed with a warning (an HTTP redirect to another host); the message is
    /// the `ProbeWarning` event text.
    Warning(String),
    /// The probe failed; the message is the `Unhealthy` event text.
    Failure(String),
    /// The probe could not be run (bad port, no pod IP, exec transport error); the kubelet
    /// records an event and discards the attempt, so it does not count toward a threshold.
    Unknown(String),
}

/// Where probes and hooks go and what they need to know about the container.
#[derive(Clone, Debug)]
pub struct ProbeTarget {
    /// The pod IP: default host of httpGet and tcpSocket, and the host of grpc.
    pub pod_ip: Option<String>,
    /// The CRI container ID that exec handlers run in.
    pub container_id: String,
    /// The container spec: named ports, env for `$(VAR)` in exec commands, its name.
    pub container: Container,
    /// The pod as the kubelet names it in hook messages, see [`format_pod`].
    pub pod: String,
}

/// The pod as the kubelet's `format.Pod` writes it: `name_namespace(uid)`.
pub fn format_pod(name: &str, namespace: &str, uid: &str) -> String {
    format!("{name}_{namespace}({uid})")
}

/// `timeoutSeconds` of a probe with the API default and non-positive values replaced by it.
fn probe_timeout(probe: &Probe) -> Duration {
    let seconds = probe
        .timeout_seconds
        .filter(|s| *s > 0)
        .unwrap_or(DEFAULT_TIMEOUT_SECONDS);
    Duration::from_secs(seconds.unsigned_abs().into())
}

/// Runs one attempt of `probe` against `target`, bounded by the probe's `timeoutSeconds`.
pub async fn run_once<E: ContainerExec>(
    probe: &Probe,
    target: &ProbeTarget,
    exec: &E,
) -> ProbeResult {
    let timeout = probe_timeout(probe);
    if let Some(action) = &probe.exec {
        exec::probe(action, target, exec, timeout).await
    } else if let Some(action) = &probe.http_get {
        http::probe(action, target, timeout).await
    } else if let Some(action) = &probe.tcp_socket {
        tcp::probe(action, target, timeout).await
    } else if let Some(action) = &probe.grpc {
        grpc::probe(action, target, timeout).await
    } else {
        ProbeResult::Unknown(format!(
            "missing probe handler for {}:{}",
            target.pod, target.container.name
        ))
    }
}
