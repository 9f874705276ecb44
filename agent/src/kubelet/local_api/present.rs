//! How `capstan pods` presents pods: kubectl's table columns (READY, STATUS, RESTARTS, AGE)
//! and `describe` text, computed the way kubectl computes them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Container, ContainerState, ContainerStatus, Pod, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::types::{PodDetail, PodEvent};

/// One row of the pods table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRow {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Ready containers / containers, e.g. `1/2`.
    pub ready: String,
    /// kubectl's STATUS column.
    pub status: String,
    /// Restarts, with how long ago the last was, e.g. `3 (2m ago)`.
    pub restarts: String,
    /// Time since creation.
    pub age: String,
    /// The pod's primary IP, or `<none>`.
    pub ip: String,
    /// The node, or `<none>`.
    pub node: String,
}

/// Which columns a table shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Columns {
    /// Show NAMESPACE (for all namespaces).
    pub namespace: bool,
    /// Show NODE too (`-o wide`).
    pub wide: bool,
}

impl Columns {
    /// The header cells.
    pub fn header(&self) -> Vec<String> {
        self.select(
            [
                "NAMESPACE",
                "NAME",
                "READY",
                "STATUS",
                "RESTARTS",
                "AGE",
                "IP",
                "NODE",
            ]
            .map(str::to_owned),
        )
    }

    /// A row's cells.
    pub fn cells(&self, row: &PodRow) -> Vec<String> {
        self.select([
            row.namespace.clone(),
            row.name.clone(),
            row.ready.clone(),
            row.status.clone(),
            row.restarts.clone(),
            row.age.clone(),
            row.ip.clone(),
            row.node.clone(),
        ])
    }

    /// Column widths for watch output, where later rows are not known in advance.
    pub fn watch_widths(&self) -> Vec<usize> {
        self.select([12, 30, 7, 18, 12, 7, 16, 16])
    }

    fn select<T>(&self, all: [T; 8]) -> Vec<T> {
        all.into_iter()
            .enumerate()
            .filter(|(i, _)| (*i != 0 || self.namespace) && (*i != 7 || self.wide))
            .map(|(_, cell)| cell)
            .collect()
    }
}

/// The table row kubectl would print for `pod` at `now`.
pub fn pod_row(pod: &Pod, now: Timestamp) -> PodRow {
    let summary = summarize(pod);
    let status = pod.status.as_ref();
    let ip = status
        .and_then(|s| s.pod_ip.clone())
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| "<none>".to_owned());
    PodRow {
        namespace: pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned()),
        name: pod.metadata.name.clone().unwrap_or_default(),
        ready: format!("{}/{}", summary.ready, summary.total),
        status: summary.reason,
        restarts: match summary.last_restart {
            Some(when) => format!("{} ({} ago)", summary.restarts, since(&when, now)),
            None => summary.restarts.to_string(),
        },
        age: match &pod.metadata.creation_timestamp {
            Some(created) => since(&created.0, now),
            None => "<unknown>".to_owned(),
        },
        ip,
        node: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_else(|| "<none>".to_owned()),
    }
}

/// kubectl's STATUS column for `pod`.
pub fn pod_status(pod: &Pod) -> String {
    summarize(pod).reason
}

/// Cells padded into columns three spaces apart (like kubectl's tabwriter).
pub fn format_row(cells: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, cell) in cells.iter().enumerate() {
        if i + 1 == cells.len() {
            line.push_str(cell);
        } else {
            let width = widths.get(i).copied().unwrap_or(0);
            let _ = write!(line, "{cell:<width$}   ");
        }
    }
    line.trim_end().to_owned()
}

/// A whole table: header then rows, each column as wide as its widest cell.
pub fn table(header: Vec<String>, rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let mut out = format_row(&header, &widths);
    out.push('\n');
    for row in rows {
        out.push_str(&format_row(&row, &widths));
        out.push('\n');
    }
    out
}

/// A duration the way kubectl prints ages (`45s`, `5m3s`, `3h20m`, `4d2h`, `2y10d`).
pub fn human_duration(duration: SignedDuration) -> String {
    let seconds = duration.as_secs();
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{}d", hours / 24),
            h => format!("{}d{h}h", hours / 24),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        return match (hours / 24) % 365 {
            0 => format!("{}y", hours / 24 / 365),
            d => format!("{}y{d}d", hours / 24 / 365),
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn since(when: &Timestamp, now: Timestamp) -> String {
    human_duration(now.duration_since(*when))
}

/// What kubectl derives from a pod's status for its table.
struct Summary {
    ready: usize,
    total: usize,
    restarts: i64,
    last_restart: Option<Timestamp>,
    reason: String,
}

fn is_sidecar(container: Option<&Container>) -> bool {
    container.is_some_and(|c| c.restart_policy.as_deref() == Some("Always"))
}

fn terminated_at(state: &Option<ContainerState>) -> Option<Timestamp> {
    state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .and_then(|t| t.finished_at.as_ref())
        .map(|t| t.0)
}

fn later(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// kubectl's printPod: the READY, STATUS and RESTARTS computation, case for case.
fn summarize(pod: &Pod) -> Summary {
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let no_statuses: Vec<ContainerStatus> = Vec::new();
    let containers = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
    let inits = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default();
    let init_statuses = status
        .and_then(|s| s.init_container_statuses.as_ref())
        .unwrap_or(&no_statuses);
    let statuses = status
        .and_then(|s| s.container_statuses.as_ref())
        .unwrap_or(&no_statuses);
    let conditions = status
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let phase = status.and_then(|s| s.phase.clone()).unwrap_or_default();

    let total = containers.len() + inits.iter().filter(|c| is_sidecar(Some(c))).count();
    let mut ready = 0;
    let mut restarts: i64 = 0;
    let mut sidecar_restarts: i64 = 0;
    let mut last_restart = None;
    let mut last_sidecar_restart = None;
    let mut reason = match status.and_then(|s| s.reason.clone()) {
        Some(reason) if !reason.is_empty() => reason,
        _ => phase.clone(),
    };
    if conditions
        .iter()
        .any(|c| c.type_ == "PodScheduled" && c.reason.as_deref() == Some("SchedulingGated"))
    {
        reason = "SchedulingGated".to_owned();
    }

    let mut initializing = false;
    for (i, container) in init_statuses.iter().enumerate() {
        let spec = inits.iter().find(|c| c.name == container.name);
        restarts += i64::from(container.restart_count);
        last_restart = later(last_restart, terminated_at(&container.last_state));
        if is_sidecar(spec) {
            sidecar_restarts += i64::from(container.restart_count);
            last_sidecar_restart =
                later(last_sidecar_restart, terminated_at(&container.last_state));
        }
        let state = container.state.as_ref();
        let terminated = state.and_then(|s| s.terminated.as_ref());
        let waiting = state.and_then(|s| s.waiting.as_ref());
        let waiting_reason = waiting
            .and_then(|w| w.reason.as_deref())
            .filter(|r| !r.is_empty());
        if terminated.is_some_and(|t| t.exit_code == 0) {
            continue;
        }
        if is_sidecar(spec) && container.started == Some(true) {
            if container.ready {
                ready += 1;
            }
            continue;
        }
        initializing = true;
        reason = match (terminated, waiting_reason) {
            (Some(t), _) => match t.reason.as_deref().filter(|r| !r.is_empty()) {
                Some(r) => format!("Init:{r}"),
                None => match t.signal.filter(|s| *s != 0) {
                    Some(signal) => format!("Init:Signal:{signal}"),
                    None => format!("Init:ExitCode:{}", t.exit_code),
                },
            },
            (None, Some(r)) if r != "PodInitializing" => format!("Init:{r}"),
            _ => format!("Init:{i}/{}", inits.len()),
        };
        break;
    }

    let initialized = conditions
        .iter()
        .any(|c| c.type_ == "Initialized" && c.status == "True");
    if !initializing || initialized {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for container in statuses.iter().rev() {
            restarts += i64::from(container.restart_count);
            last_restart = later(last_restart, terminated_at(&container.last_state));
            let state = container.state.as_ref();
            let waiting = state
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.as_deref())
                .filter(|r| !r.is_empty());
            let terminated = state.and_then(|s| s.terminated.as_ref());
            if let Some(r) = waiting {
                reason = r.to_owned();
            } else if let Some(t) = terminated {
                reason = match t.reason.as_deref().filter(|r| !r.is_empty()) {
                    Some(r) => r.to_owned(),
                    None => match t.signal.filter(|s| *s != 0) {
                        Some(signal) => format!("Signal:{signal}"),
                        None => format!("ExitCode:{}", t.exit_code),
                    },
                };
            } else if container.ready && state.is_some_and(|s| s.running.is_some()) {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let has_ready_condition = conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            reason = if has_ready_condition {
                "Running"
            } else {
                "NotReady"
            }
            .to_owned();
        }
    }

    if pod.metadata.deletion_timestamp.is_some() {
        if status.and_then(|s| s.reason.as_deref()) == Some("NodeLost") {
            reason = "Unknown".to_owned();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".to_owned();
        }
    }
    Summary {
        ready,
        total,
        restarts,
        last_restart,
        reason,
    }
}

/// `capstan pods describe`: spec summary, status and recent events, like `kubectl describe`.
pub fn describe(detail: &PodDetail, now: Timestamp) -> String {
    let pod = &detail.pod;
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let mut out = String::new();
    let none = || "<none>".to_owned();
    field(&mut out, 0, "Name", meta.name.clone().unwrap_or_else(none));
    field(
        &mut out,
        0,
        "Namespace",
        meta.namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned()),
    );
    field(
        &mut out,
        0,
        "Node",
        spec.and_then(|s| s.node_name.clone()).unwrap_or_else(none),
    );
    field(
        &mut out,
        0,
        "Start Time",
        status
            .and_then(|s| s.start_time.as_ref())
            .map(time)
            .unwrap_or_else(none),
    );
    map_field(&mut out, "Labels", meta.labels.as_ref());
    map_field(&mut out, "Annotations", meta.annotations.as_ref());
    let mut phase = status.and_then(|s| s.phase.clone()).unwrap_or_default();
    if let Some(deleted) = &meta.deletion_timestamp {
        phase = format!("Terminating (lasts {})", since(&deleted.0, now));
    }
    field(&mut out, 0, "Status", phase);
    if let Some(reason) = status.and_then(|s| s.reason.clone()) {
        field(&mut out, 0, "Reason", reason);
    }
    if let Some(message) = status.and_then(|s| s.message.clone()) {
        field(&mut out, 0, "Message", message);
    }
    field(
        &mut out,
        0,
        "IP",
        status.and_then(|s| s.pod_ip.clone()).unwrap_or_default(),
    );
    let ips: Vec<String> = status
        .and_then(|s| s.pod_ips.as_ref())
        .map(|ips| ips.iter().map(|ip| ip.ip.clone()).collect())
        .unwrap_or_default();
    if ips.is_empty() {
        field(&mut out, 0, "IPs", none());
    } else {
        out.push_str("IPs:\n");
        for ip in ips {
            let _ = writeln!(out, "  IP:  {ip}");
        }
    }
    let no_statuses = Vec::new();
    if let Some(inits) = spec.and_then(|s| s.init_containers.as_ref()) {
        let statuses = status
            .and_then(|s| s.init_container_statuses.as_ref())
            .unwrap_or(&no_statuses);
        out.push_str("Init Containers:\n");
        for container in inits {
            describe_container(&mut out, container, statuses);
        }
    }
    out.push_str("Containers:\n");
    let statuses = status
        .and_then(|s| s.container_statuses.as_ref())
        .unwrap_or(&no_statuses);
    for container in spec.map(|s| s.containers.as_slice()).unwrap_or_default() {
        describe_container(&mut out, container, statuses);
    }
    let conditions = status
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    if !conditions.is_empty() {
        out.push_str("Conditions:\n");
        let rows = conditions
            .iter()
            .map(|c| vec![c.type_.clone(), c.status.clone()])
            .collect();
        indent(&mut out, &table(vec!["Type".into(), "Status".into()], rows));
    }
    let volumes = spec.and_then(|s| s.volumes.as_deref()).unwrap_or_default();
    if volumes.is_empty() {
        field(&mut out, 0, "Volumes", none());
    } else {
        out.push_str("Volumes:\n");
        for volume in volumes {
            describe_volume(&mut out, volume);
        }
    }
    if let Some(qos) = status.and_then(|s| s.qos_class.clone()) {
        field(&mut out, 0, "QoS Class", qos);
    }
    describe_events(&mut out, &detail.events, now);
    out
}

fn describe_container(out: &mut String, container: &Container, statuses: &[ContainerStatus]) {
    let _ = writeln!(out, "  {}:", container.name);
    let status = statuses.iter().find(|s| s.name == container.name);
    if let Some(id) = status.and_then(|s| s.container_id.clone()) {
        field(out, 4, "Container ID", id);
    }
    field(out, 4, "Image", container.image.clone().unwrap_or_default());
    if let Some(id) = status.map(|s| s.image_id.clone()).filter(|i| !i.is_empty()) {
        field(out, 4, "Image ID", id);
    }
    let ports: Vec<String> = container
        .ports
        .iter()
        .flatten()
        .map(|p| {
            let protocol = p.protocol.as_deref().unwrap_or("TCP");
            match p.host_port {
                Some(host) => format!("{}/{protocol} (host port {host})", p.container_port),
                None => format!("{}/{protocol}", p.container_port),
            }
        })
        .collect();
    field(
        out,
        4,
        "Ports",
        if ports.is_empty() {
            "<none>".to_owned()
        } else {
            ports.join(", ")
        },
    );
    for (label, words) in [("Command", &container.command), ("Args", &container.args)] {
        if let Some(words) = words.as_ref().filter(|w| !w.is_empty()) {
            let _ = writeln!(out, "    {label}:");
            for word in words {
                let _ = writeln!(out, "      {word}");
            }
        }
    }
    if let Some(status) = status {
        describe_state(out, "State", status.state.as_ref());
        if status
            .last_state
            .as_ref()
            .is_some_and(|s| s.running.is_some() || s.terminated.is_some() || s.waiting.is_some())
        {
            describe_state(out, "Last State", status.last_state.as_ref());
        }
        field(out, 4, "Ready", title_bool(status.ready));
        field(out, 4, "Restart Count", status.restart_count.to_string());
    } else {
        field(out, 4, "State", "Waiting".to_owned());
    }
    if let Some(resources) = &container.resources {
        for (label, list) in [
            ("Limits", &resources.limits),
            ("Requests", &resources.requests),
        ] {
            if let Some(list) = list.as_ref().filter(|l| !l.is_empty()) {
                let _ = writeln!(out, "    {label}:");
                for (name, quantity) in list {
                    let _ = writeln!(out, "      {name}:  {}", quantity.0);
                }
            }
        }
    }
    for (label, probe) in [
        ("Liveness", &container.liveness_probe),
        ("Readiness", &container.readiness_probe),
        ("Startup", &container.startup_probe),
    ] {
        if let Some(probe) = probe {
            let handler = if let Some(exec) = &probe.exec {
                format!("exec {:?}", exec.command.clone().unwrap_or_default())
            } else if let Some(http) = &probe.http_get {
                format!(
                    "http-get :{:?}{}",
                    http.port,
                    http.path.as_deref().unwrap_or("/")
                )
            } else if let Some(tcp) = &probe.tcp_socket {
                format!("tcp-socket :{:?}", tcp.port)
            } else if let Some(grpc) = &probe.grpc {
                format!("grpc :{}", grpc.port)
            } else {
                "<none>".to_owned()
            };
            let value = format!(
                "{handler} delay={}s timeout={}s period={}s #success={} #failure={}",
                probe.initial_delay_seconds.unwrap_or(0),
                probe.timeout_seconds.unwrap_or(1),
                probe.period_seconds.unwrap_or(10),
                probe.success_threshold.unwrap_or(1),
                probe.failure_threshold.unwrap_or(3),
            );
            field(out, 4, label, value);
        }
    }
}

fn describe_state(out: &mut String, label: &str, state: Option<&ContainerState>) {
    let Some(state) = state else {
        field(out, 4, label, "Waiting".to_owned());
        return;
    };
    if let Some(running) = &state.running {
        field(out, 4, label, "Running".to_owned());
        if let Some(started) = &running.started_at {
            field(out, 6, "Started", time(started));
        }
    } else if let Some(t) = &state.terminated {
        field(out, 4, label, "Terminated".to_owned());
        if let Some(reason) = &t.reason {
            field(out, 6, "Reason", reason.clone());
        }
        if let Some(message) = &t.message {
            field(out, 6, "Message", message.clone());
        }
        field(out, 6, "Exit Code", t.exit_code.to_string());
        if let Some(signal) = t.signal.filter(|s| *s != 0) {
            field(out, 6, "Signal", signal.to_string());
        }
        if let Some(started) = &t.started_at {
            field(out, 6, "Started", time(started));
        }
        if let Some(finished) = &t.finished_at {
            field(out, 6, "Finished", time(finished));
        }
    } else {
        field(out, 4, label, "Waiting".to_owned());
        if let Some(waiting) = &state.waiting {
            if let Some(reason) = &waiting.reason {
                field(out, 6, "Reason", reason.clone());
            }
            if let Some(message) = &waiting.message {
                field(out, 6, "Message", message.clone());
            }
        }
    }
}

fn describe_volume(out: &mut String, volume: &Volume) {
    let _ = writeln!(out, "  {}:", volume.name);
    if let Some(empty) = &volume.empty_dir {
        field(
            out,
            4,
            "Type",
            "EmptyDir (a temporary directory that shares a pod's lifetime)".to_owned(),
        );
        field(out, 4, "Medium", empty.medium.clone().unwrap_or_default());
        field(
            out,
            4,
            "SizeLimit",
            empty
                .size_limit
                .as_ref()
                .map(|q| q.0.clone())
                .unwrap_or_else(|| "<unset>".to_owned()),
        );
    } else if let Some(host) = &volume.host_path {
        field(
            out,
            4,
            "Type",
            "HostPath (bare host directory volume)".to_owned(),
        );
        field(out, 4, "Path", host.path.clone());
        field(
            out,
            4,
            "HostPathType",
            host.type_.clone().unwrap_or_default(),
        );
    } else if let Some(downward) = &volume.downward_api {
        field(
            out,
            4,
            "Type",
            "DownwardAPI (a volume populated by information about the pod)".to_owned(),
        );
        let _ = writeln!(out, "    Items:");
        for item in downward.items.iter().flatten() {
            let source = match (&item.field_ref, &item.resource_field_ref) {
                (Some(f), _) => f.field_path.clone(),
                (None, Some(r)) => r.resource.clone(),
                (None, None) => String::new(),
            };
            let _ = writeln!(out, "      {source} -> {}", item.path);
        }
    } else if let Some(config_map) = &volume.config_map {
        field(
            out,
            4,
            "Type",
            "ConfigMap (a volume populated by a ConfigMap)".to_owned(),
        );
        field(out, 4, "Name", config_map.name.clone());
    } else if let Some(secret) = &volume.secret {
        field(
            out,
            4,
            "Type",
            "Secret (a volume populated by a Secret)".to_owned(),
        );
        field(
            out,
            4,
            "SecretName",
            secret.secret_name.clone().unwrap_or_default(),
        );
    } else if volume.projected.is_some() {
        field(
            out,
            4,
            "Type",
            "Projected (a volume that contains injected data from multiple sources)".to_owned(),
        );
    } else {
        field(out, 4, "Type", "<unknown>".to_owned());
    }
}

fn describe_events(out: &mut String, events: &[PodEvent], now: Timestamp) {
    if events.is_empty() {
        field(out, 0, "Events", "<none>".to_owned());
        return;
    }
    out.push_str("Events:\n");
    let header = ["Type", "Reason", "Age", "From", "Message"].map(str::to_owned);
    let mut rows = vec![["----", "------", "----", "----", "-------"]
        .map(str::to_owned)
        .to_vec()];
    for event in events {
        let last = since(&event.last_timestamp.0, now);
        let age = if event.count > 1 {
            let first = since(&event.first_timestamp.0, now);
            format!("{last} (x{} over {first})", event.count)
        } else {
            last
        };
        rows.push(vec![
            format!("{:?}", event.event_type),
            event.reason.clone(),
            age,
            "kubelet".to_owned(),
            event.message.clone(),
        ]);
    }
    indent(out, &table(header.to_vec(), rows));
}

/// `Label:  value` with the value column aligned (kubectl describe's layout).
fn field(out: &mut String, depth: usize, label: &str, value: String) {
    let label = format!("{label}:");
    let width = 18usize.saturating_sub(depth).max(label.len() + 2);
    let _ = writeln!(out, "{:depth$}{label:<width$}{value}", "");
}

fn map_field(out: &mut String, label: &str, map: Option<&BTreeMap<String, String>>) {
    let entries: Vec<String> = map
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if entries.is_empty() {
        field(out, 0, label, "<none>".to_owned());
        return;
    }
    let pad = " ".repeat(18);
    field(out, 0, label, entries.join(&format!("\n{pad}")));
}

fn indent(out: &mut String, text: &str) {
    for line in text.lines() {
        let _ = writeln!(out, "  {line}");
    }
}

fn time(time: &Time) -> String {
    time.0.strftime("%a, %d %b %Y %H:%M:%S %z").to_string()
}

fn title_bool(value: bool) -> String {
    if value { "True" } else { "False" }.to_owned()
}
