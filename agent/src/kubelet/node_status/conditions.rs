//! The node conditions the kubelet sets (MemoryPressure, DiskPressure, PIDPressure, Ready),
//! with its reasons and messages: the heartbeat moves on every update, the transition time
//! only when the status flips.

use k8s_cri::v1::RuntimeStatus;
use k8s_openapi::api::core::v1::NodeCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::pressure::Pressure;

/// Whether the runtime can run pods: `Err` holds the kubelet's NotReady message.
pub fn runtime_readiness(status: Result<&RuntimeStatus, String>) -> Result<(), String> {
    let status = status.map_err(|e| format!("container runtime is down: {e}"))?;
    let mut problems = Vec::new();
    for (kind, what) in [
        ("RuntimeReady", "container runtime not ready"),
        ("NetworkReady", "container runtime network not ready"),
    ] {
        match status.conditions.iter().find(|c| c.r#type == kind) {
            Some(c) if c.status => {}
            Some(c) => problems.push(format!(
                "{what}: {kind}=false reason:{} message:{}",
                c.reason, c.message
            )),
            None => problems.push(format!("{what}: {kind} condition missing")),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join(", "))
    }
}

/// One condition's facts.
struct Wanted {
    kind: &'static str,
    status: bool,
    reason: &'static str,
    message: String,
}

/// The conditions for `pressure` and `ready`, carrying over transition times from
/// `previous` where the status did not change.
pub fn conditions(
    previous: &[NodeCondition],
    pressure: Pressure,
    ready: &Result<(), String>,
    now: &Time,
) -> Vec<NodeCondition> {
    let pick = |bad: bool, kind, yes: (&'static str, &str), no: (&'static str, &str)| {
        let (reason, message) = if bad { yes } else { no };
        Wanted {
            kind,
            status: bad,
            reason,
            message: message.to_owned(),
        }
    };
    let wanted = [
        pick(
            pressure.memory,
            "MemoryPressure",
            (
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
            ),
            (
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
        ),
        pick(
            pressure.disk,
            "DiskPressure",
            ("KubeletHasDiskPressure", "kubelet has disk pressure"),
            ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ),
        pick(
            pressure.pid,
            "PIDPressure",
            (
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
            ),
            (
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
        ),
        match ready {
            Ok(()) => Wanted {
                kind: "Ready",
                status: true,
                reason: "KubeletReady",
                message: "kubelet is posting ready status".to_owned(),
            },
            Err(message) => Wanted {
                kind: "Ready",
                status: false,
                reason: "KubeletNotReady",
                message: message.clone(),
            },
        },
    ];
    wanted
        .into_iter()
        .map(|w| {
            let status = if w.status { "True" } else { "False" };
            let before = previous.iter().find(|c| c.type_ == w.kind);
            let transition = match before {
                Some(c) if c.status == status => c
                    .last_transition_time
                    .clone()
                    .unwrap_or_else(|| now.clone()),
                _ => now.clone(),
            };
            NodeCondition {
                type_: w.kind.to_owned(),
                status: status.to_owned(),
                reason: Some(w.reason.to_owned()),
                message: Some(w.message),
                last_heartbeat_time: Some(now.clone()),
                last_transition_time: Some(transition),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_cri::v1::RuntimeCondition;

    use super::*;

    fn at(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).unwrap())
    }

    fn find<'a>(list: &'a [NodeCondition], kind: &str) -> &'a NodeCondition {
        list.iter().find(|c| c.type_ == kind).unwrap()
    }

    #[test]
    fn transitions_move_only_when_the_status_flips() {
        let first = conditions(&[], Pressure::default(), &Ok(()), &at(100));
        let kinds: Vec<&str> = first.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            kinds,
            ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
        );
        let ready = find(&first, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("True", Some("KubeletReady"))
        );
        assert_eq!(
            ready.message.as_deref(),
            Some("kubelet is posting ready status")
        );
        assert_eq!(
            find(&first, "MemoryPressure").reason.as_deref(),
            Some("KubeletHasSufficientMemory")
        );

        let pressure = Pressure {
            memory: true,
            ..Pressure::default()
        };
        let second = conditions(&first, pressure, &Ok(()), &at(110));
        let memory = find(&second, "MemoryPressure");
        assert_eq!(
            (memory.status.as_str(), memory.reason.as_deref()),
            ("True", Some("KubeletHasInsufficientMemory"))
        );
        assert_eq!(memory.last_transition_time, Some(at(110)));
        let ready = find(&second, "Ready");
        assert_eq!(ready.last_heartbeat_time, Some(at(110)));
        assert_eq!(ready.last_transition_time, Some(at(100)));

        let third = conditions(&second, pressure, &Err("down".to_owned()), &at(120));
        let ready = find(&third, "Ready");
        assert_eq!(
            (
                ready.status.as_str(),
                ready.reason.as_deref(),
                ready.message.as_deref()
            ),
            ("False", Some("KubeletNotReady"), Some("down"))
        );
        assert_eq!(ready.last_transition_time, Some(at(120)));
        assert_eq!(
            find(&third, "MemoryPressure").last_transition_time,
            Some(at(110))
        );
    }

    #[test]
    fn runtime_conditions_decide_readiness() {
        let cond = |kind: &str, ok: bool| RuntimeCondition {
            r#type: kind.to_owned(),
            status: ok,
            reason: if ok {
                String::new()
            } else {
                "NetworkPluginNotReady".to_owned()
            },
            message: if ok {
                String::new()
            } else {
                "cni config uninitialized".to_owned()
            },
        };
        let healthy = RuntimeStatus {
            conditions: vec![cond("RuntimeReady", true), cond("NetworkReady", true)],
        };
        assert_eq!(runtime_readiness(Ok(&healthy)), Ok(()));
        let no_network = RuntimeStatus {
            conditions: vec![cond("RuntimeReady", true), cond("NetworkReady", false)],
        };
        assert_eq!(
            runtime_readiness(Ok(&no_network)),
            Err("container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:cni config uninitialized".to_owned())
        );
        let empty = RuntimeStatus::default();
        assert!(runtime_readiness(Ok(&empty))
            .unwrap_err()
            .contains("RuntimeReady condition missing"));
        assert!(runtime_readiness(Err("connection refused".to_owned()))
            .unwrap_err()
            .starts_with("container runtime is down"));
    }
}
