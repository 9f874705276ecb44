//! Pod status as the kubelet computes it: phase, conditions, IPs and per-container states
//! from what the runtime shows and what the probes say.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::observed::{ContainerHistory, ObservedContainer, RunState, Waiting};

/// Everything the status is computed from.
pub struct StatusInput<'a> {
    /// The pod (spec, and the previous status for transition times).
    pub pod: &'a Pod,
    /// The sandbox is ready with its network.
    pub sandbox_ready: bool,
    /// The pod's IPs (IPv4 first).
    pub pod_ips: &'a [String],
    /// The node's IP.
    pub host_ip: &'a str,
    /// Runtime history of each container, by name.
    pub containers: &'a BTreeMap<String, ContainerHistory>,
    /// Why containers without a running instance wait, by name.
    pub waiting: &'a BTreeMap<String, Waiting>,
    /// Container IDs whose readiness probe (or lack of one) says ready.
    pub ready: &'a dyn Fn(&str) -> bool,
    /// Container IDs whose startup probe (or lack of one) says started.
    pub started: &'a dyn Fn(&str) -> bool,
    /// CRI runtime name for container IDs (`<runtime>://<id>`).
    pub runtime_name: &'a str,
    /// When the kubelet first saw the pod.
    pub start_time: Timestamp,
    /// Now, for transition times.
    pub now: Timestamp,
}

/// Whether a container's spec is a sidecar: an init container that keeps running.
pub fn is_sidecar(container: &Container) -> bool {
    container.restart_policy.as_deref() == Some("Always")
}

/// The pod's restart policy (default Always).
pub fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// Whether an exited container will be started again under `policy`.
pub fn will_restart(policy: &str, exited: &ObservedContainer) -> bool {
    match policy {
        "Always" => true,
        "OnFailure" => exited.exit_code != 0,
        _ => false,
    }
}

/// Compute the pod's status.
pub fn pod_status(input: &StatusInput<'_>) -> PodStatus {
    let spec = input.pod.spec.clone().unwrap_or_default();
    let policy = restart_policy(input.pod);
    let init_specs = spec.init_containers.clone().unwrap_or_default();
    let init_statuses: Vec<ContainerStatus> = init_specs
        .iter()
        .map(|c| container_status(input, c, true))
        .collect();
    let app_statuses: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .map(|c| container_status(input, c, false))
        .collect();
    let (initialized, incomplete) = initialization(input, &init_specs);
    let init_failed = init_specs.iter().any(|c| {
        !is_sidecar(c) && current(input, c).is_some_and(|o| o.failed() && policy == "Never")
    });
    let phase = if init_failed {
        "Failed"
    } else if !initialized {
        "Pending"
    } else {
        app_phase(policy, &app_statuses)
    };
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let unready: Vec<&str> = app_statuses
        .iter()
        .chain(
            init_statuses
                .iter()
                .zip(&init_specs)
                .filter(|(_, c)| is_sidecar(c))
                .map(|(s, _)| s),
        )
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    let previous = input.pod.status.as_ref().and_then(|s| s.conditions.clone());
    let condition = |kind: &str, ok: bool, reason: Option<String>, message: Option<String>| {
        let value = if ok { "True" } else { "False" };
        let since = previous
            .iter()
            .flatten()
            .find(|c| c.type_ == kind && c.status == value)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or(Time(input.now));
        PodCondition {
            type_: kind.to_owned(),
            status: value.to_owned(),
            last_transition_time: Some(since),
            reason,
            message,
            ..Default::default()
        }
    };
    let not_ready = |reason: &str| {
        if terminal {
            (Some("PodCompleted".to_owned()), None)
        } else {
            (
                Some(reason.to_owned()),
                Some(format!(
                    "containers with unready status: [{}]",
                    unready.join(" ")
                )),
            )
        }
    };
    let containers_ready = unready.is_empty() && !terminal;
    let (ready_reason, ready_message) = if containers_ready {
        (None, None)
    } else {
        not_ready("ContainersNotReady")
    };
    let (init_reason, init_message) = if initialized {
        (None, None)
    } else {
        (
            Some("ContainersNotInitialized".to_owned()),
            Some(format!(
                "containers with incomplete status: [{}]",
                incomplete.join(" ")
            )),
        )
    };
    let conditions = vec![
        condition("PodReadyToStartContainers", input.sandbox_ready, None, None),
        condition("Initialized", initialized, init_reason, init_message),
        condition(
            "Ready",
            containers_ready,
            ready_reason.clone(),
            ready_message.clone(),
        ),
        condition(
            "ContainersReady",
            containers_ready,
            ready_reason,
            ready_message,
        ),
        condition("PodScheduled", true, None, None),
    ];
    let pod_ips: Vec<PodIP> = input
        .pod_ips
        .iter()
        .map(|ip| PodIP { ip: ip.clone() })
        .collect();
    let qos = crate::kubelet::convert::qos_class(input.pod).ok();
    PodStatus {
        phase: Some(phase.to_owned()),
        conditions: Some(conditions),
        host_ip: Some(input.host_ip.to_owned()),
        host_ips: Some(vec![HostIP {
            ip: input.host_ip.to_owned(),
        }]),
        pod_ip: input.pod_ips.first().cloned(),
        pod_ips: (!pod_ips.is_empty()).then_some(pod_ips),
        start_time: Some(Time(input.start_time)),
        container_statuses: Some(app_statuses),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        qos_class: qos.map(|q| q.as_str().to_owned()),
        ..Default::default()
    }
}

fn current<'a>(input: &'a StatusInput<'_>, c: &Container) -> Option<&'a ObservedContainer> {
    input.containers.get(&c.name)?.current.as_ref()
}

/// All regular init containers succeeded and every sidecar started; and which did not.
fn initialization(input: &StatusInput<'_>, init: &[Container]) -> (bool, Vec<String>) {
    let incomplete: Vec<String> = init
        .iter()
        .filter(|c| match current(input, c) {
            None => true,
            Some(o) if is_sidecar(c) => !(o.state == RunState::Running && (input.started)(&o.id)),
            Some(o) => !o.succeeded(),
        })
        .map(|c| c.name.clone())
        .collect();
    (incomplete.is_empty(), incomplete)
}

/// The kubelet's getPhase over app containers once initialised.
fn app_phase(policy: &str, statuses: &[ContainerStatus]) -> &'static str {
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for status in statuses {
        let state = status.state.as_ref();
        if state.and_then(|s| s.running.as_ref()).is_some() {
            running += 1;
        } else if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if let Some(t) = status
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
        {
            // Waiting to restart after an exit counts as stopped, like the kubelet.
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        match policy {
            "Always" => "Running",
            "OnFailure" if stopped == succeeded => "Succeeded",
            "OnFailure" => "Running",
            _ if stopped == succeeded => "Succeeded",
            _ => "Failed",
        }
    } else {
        "Pending"
    }
}

fn container_status(input: &StatusInput<'_>, spec: &Container, init: bool) -> ContainerStatus {
    let history = input
        .containers
        .get(&spec.name)
        .cloned()
        .unwrap_or_default();
    let waiting = input.waiting.get(&spec.name);
    let mut status = ContainerStatus {
        name: spec.name.clone(),
        image: spec.image.clone().unwrap_or_default(),
        ..Default::default()
    };
    let Some(now) = history.current.as_ref() else {
        let reason = waiting.map_or("ContainerCreating", |w| w.reason.as_str());
        status.state = Some(waiting_state(reason, waiting.map(|w| w.message.clone())));
        status.started = Some(false);
        return status;
    };
    status.container_id = Some(format!("{}://{}", input.runtime_name, now.id));
    status.image_id = now.image_ref.clone();
    status.restart_count = i32::try_from(now.restart_count).unwrap_or(i32::MAX);
    let running = now.state == RunState::Running;
    status.started = Some(running && (input.started)(&now.id));
    status.ready = if init && !is_sidecar(spec) {
        now.succeeded()
    } else {
        running && (input.started)(&now.id) && (input.ready)(&now.id)
    };
    let terminated = |c: &ObservedContainer| terminated_state(c, input.runtime_name);
    let last_terminated = history.previous.as_ref().map(terminated);
    match (now.state, waiting) {
        (RunState::Running, _) => {
            status.state = Some(ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: now.started_at.map(Time),
                }),
                ..Default::default()
            });
            status.last_state = last_terminated;
        }
        // An exited container waiting for its restart shows Waiting, its exit as lastState.
        (RunState::Exited, Some(waiting)) => {
            status.state = Some(waiting_state(
                &waiting.reason,
                Some(waiting.message.clone()),
            ));
            status.last_state = Some(terminated(now));
        }
        (RunState::Exited, None) => {
            status.state = Some(terminated(now));
            status.last_state = last_terminated;
        }
        (RunState::Created | RunState::Unknown, _) => {
            let reason = waiting.map_or("ContainerCreating", |w| w.reason.as_str());
            status.state = Some(waiting_state(reason, waiting.map(|w| w.message.clone())));
            status.last_state = last_terminated;
        }
    }
    status
}

fn waiting_state(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_owned()),
            message: message.filter(|m| !m.is_empty()),
        }),
        ..Default::default()
    }
}

fn terminated_state(observed: &ObservedContainer, runtime_name: &str) -> ContainerState {
    let reason = if observed.reason.is_empty() {
        if observed.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        }
    } else {
        observed.reason.as_str()
    };
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            // The same `<runtime>://<id>` form as the status's own containerID.
            container_id: Some(format!("{runtime_name}://{}", observed.id)),
            exit_code: observed.exit_code,
            reason: Some(reason.to_owned()),
            message: (!observed.message.is_empty()).then(|| observed.message.clone()),
            started_at: observed.started_at.map(Time),
            finished_at: observed.finished_at.map(Time),
            ..Default::default()
        }),
        ..Default::default()
    }
}
