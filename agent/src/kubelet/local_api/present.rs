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
                    "http-get :{}{}",
                    port_text(&http.port),
                    http.path.as_deref().unwrap_or("/")
                )
            } else if let Some(tcp) = &probe.tcp_socket {
                format!("tcp-socket :{}", port_text(&tcp.port))
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
    // Top-level values start at column 18, nested ones at column 20 (as kubectl lays them out).
    let column = if depth == 0 { 18 } else { 20 };
    let width = (column - depth.min(column)).max(label.len() + 2);
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

/// A probe port as kubectl prints it: the number or the port's name.
fn port_text(port: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString) -> String {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match port {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(name) => name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::kubelet::local_api::types::EventType;

    const NOW: &str = "2024-05-01T12:00:00Z";

    fn now() -> Timestamp {
        NOW.parse().unwrap()
    }

    /// A pod with app containers `c0..`, init containers `i0..` (sidecars `s..`) and statuses.
    fn pod(apps: usize, inits: &[&str], status: Value) -> Pod {
        let containers: Vec<Value> = (0..apps)
            .map(|i| json!({"name": format!("c{i}")}))
            .collect();
        let init_containers: Vec<Value> = inits
            .iter()
            .map(|name| match name.starts_with('s') {
                true => json!({"name": name, "restartPolicy": "Always"}),
                false => json!({"name": name}),
            })
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": "p", "creationTimestamp": "2024-05-01T11:55:00Z"},
            "spec": {"containers": containers, "initContainers": init_containers},
            "status": status,
        }))
        .unwrap()
    }

    fn running(name: &str, ready: bool) -> Value {
        json!({"name": name, "ready": ready, "restartCount": 0, "image": "", "imageID": "",
               "state": {"running": {"startedAt": "2024-05-01T11:56:00Z"}}})
    }

    fn waiting(name: &str, reason: &str) -> Value {
        json!({"name": name, "ready": false, "restartCount": 0, "image": "", "imageID": "",
               "state": {"waiting": {"reason": reason}}})
    }

    fn terminated(name: &str, exit_code: i32, reason: Option<&str>, signal: Option<i32>) -> Value {
        let mut t = json!({"exitCode": exit_code});
        if let Some(r) = reason {
            t["reason"] = json!(r);
        }
        if let Some(s) = signal {
            t["signal"] = json!(s);
        }
        json!({"name": name, "ready": false, "restartCount": 0, "image": "", "imageID": "",
               "state": {"terminated": t}})
    }

    fn row(pod: &Pod) -> (String, String, String) {
        let row = pod_row(pod, now());
        (row.ready, row.status, row.restarts)
    }

    #[test]
    fn running_and_ready() {
        let p = pod(
            1,
            &[],
            json!({"phase": "Running", "containerStatuses": [running("c0", true)]}),
        );
        assert_eq!(row(&p), ("1/1".into(), "Running".into(), "0".into()));
        assert_eq!(pod_row(&p, now()).age, "5m");
        let not_ready = pod(
            2,
            &[],
            json!({"phase": "Running", "containerStatuses": [running("c0", true), running("c1", false)]}),
        );
        assert_eq!(row(&not_ready).0, "1/2");
        assert_eq!(row(&not_ready).1, "Running");
    }

    #[test]
    fn waiting_reasons_replace_the_phase() {
        for reason in [
            "ContainerCreating",
            "ImagePullBackOff",
            "ErrImagePull",
            "CrashLoopBackOff",
        ] {
            let p = pod(
                1,
                &[],
                json!({"phase": "Pending", "containerStatuses": [waiting("c0", reason)]}),
            );
            assert_eq!(pod_status(&p), reason);
        }
        // No statuses yet: the phase.
        assert_eq!(
            pod_status(&pod(1, &[], json!({"phase": "Pending"}))),
            "Pending"
        );
    }

    #[test]
    fn restarts_show_when_the_last_one_was() {
        let mut status = waiting("c0", "CrashLoopBackOff");
        status["restartCount"] = json!(3);
        status["lastState"] = json!({"terminated": {"exitCode": 1, "reason": "Error",
            "finishedAt": "2024-05-01T11:58:00Z"}});
        let p = pod(
            1,
            &[],
            json!({"phase": "Running", "containerStatuses": [status]}),
        );
        assert_eq!(
            row(&p),
            ("0/1".into(), "CrashLoopBackOff".into(), "3 (2m ago)".into())
        );
    }

    #[test]
    fn terminated_containers() {
        let done = pod(
            1,
            &[],
            json!({"phase": "Succeeded",
            "containerStatuses": [terminated("c0", 0, Some("Completed"), None)]}),
        );
        assert_eq!(pod_status(&done), "Completed");
        let exit = pod(
            1,
            &[],
            json!({"phase": "Failed",
            "containerStatuses": [terminated("c0", 2, None, None)]}),
        );
        assert_eq!(pod_status(&exit), "ExitCode:2");
        let signal = pod(
            1,
            &[],
            json!({"phase": "Failed",
            "containerStatuses": [terminated("c0", 137, None, Some(9))]}),
        );
        assert_eq!(pod_status(&signal), "Signal:9");
        let error = pod(
            1,
            &[],
            json!({"phase": "Failed",
            "containerStatuses": [terminated("c0", 1, Some("Error"), None)]}),
        );
        assert_eq!(pod_status(&error), "Error");
    }

    #[test]
    fn completed_with_a_running_container_is_running_or_not_ready() {
        let statuses = json!([
            terminated("c0", 0, Some("Completed"), None),
            running("c1", true)
        ]);
        let ready = pod(
            2,
            &[],
            json!({"phase": "Running", "containerStatuses": statuses,
            "conditions": [{"type": "Ready", "status": "True"}]}),
        );
        assert_eq!(pod_status(&ready), "Running");
        let not_ready = pod(
            2,
            &[],
            json!({"phase": "Running", "containerStatuses": statuses}),
        );
        assert_eq!(pod_status(&not_ready), "NotReady");
    }

    #[test]
    fn init_container_progress_and_failures() {
        let pending = pod(
            1,
            &["i0", "i1"],
            json!({"phase": "Pending",
            "initContainerStatuses": [terminated("i0", 0, Some("Completed"), None),
                                      waiting("i1", "PodInitializing")],
            "containerStatuses": [waiting("c0", "PodInitializing")]}),
        );
        assert_eq!(pod_status(&pending), "Init:1/2");
        let crash = pod(
            1,
            &["i0"],
            json!({"phase": "Pending",
            "initContainerStatuses": [waiting("i0", "CrashLoopBackOff")]}),
        );
        assert_eq!(pod_status(&crash), "Init:CrashLoopBackOff");
        let error = pod(
            1,
            &["i0"],
            json!({"phase": "Pending",
            "initContainerStatuses": [terminated("i0", 1, Some("Error"), None)]}),
        );
        assert_eq!(pod_status(&error), "Init:Error");
        let code = pod(
            1,
            &["i0"],
            json!({"phase": "Pending",
            "initContainerStatuses": [terminated("i0", 4, None, None)]}),
        );
        assert_eq!(pod_status(&code), "Init:ExitCode:4");
        let signal = pod(
            1,
            &["i0"],
            json!({"phase": "Pending",
            "initContainerStatuses": [terminated("i0", 0, None, Some(15))]}),
        );
        // Exit code 0 means done, whatever else it says.
        assert_eq!(pod_status(&signal), "Pending");
        let signal = pod(
            1,
            &["i0"],
            json!({"phase": "Pending",
            "initContainerStatuses": [terminated("i0", 143, None, Some(15))]}),
        );
        assert_eq!(pod_status(&signal), "Init:Signal:15");
    }

    #[test]
    fn sidecars_count_as_containers() {
        let mut sidecar = running("s0", true);
        sidecar["started"] = json!(true);
        sidecar["restartCount"] = json!(2);
        let p = pod(
            1,
            &["i0", "s0"],
            json!({"phase": "Running",
            "conditions": [{"type": "Initialized", "status": "True"}],
            "initContainerStatuses": [terminated("i0", 0, Some("Completed"), None), sidecar],
            "containerStatuses": [running("c0", true)]}),
        );
        assert_eq!(row(&p), ("2/2".into(), "Running".into(), "2".into()));
    }

    #[test]
    fn deletion_and_pod_reasons() {
        let mut p = pod(
            1,
            &[],
            json!({"phase": "Running", "containerStatuses": [running("c0", true)]}),
        );
        p.metadata.deletion_timestamp = Some(Time(NOW.parse().unwrap()));
        assert_eq!(pod_status(&p), "Terminating");
        let mut done = pod(
            1,
            &[],
            json!({"phase": "Succeeded",
            "containerStatuses": [terminated("c0", 0, Some("Completed"), None)]}),
        );
        done.metadata.deletion_timestamp = Some(Time(NOW.parse().unwrap()));
        assert_eq!(pod_status(&done), "Completed");
        let evicted = pod(1, &[], json!({"phase": "Failed", "reason": "Evicted"}));
        assert_eq!(pod_status(&evicted), "Evicted");
        let gated = pod(
            1,
            &[],
            json!({"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
        );
        assert_eq!(pod_status(&gated), "SchedulingGated");
    }

    #[test]
    fn ages_like_kubectl() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (185, "3m5s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 20 * 60, "3h20m"),
            (8 * 3600 + 59, "8h"),
            (47 * 3600, "47h"),
            (48 * 3600, "2d"),
            (4 * 86400 + 2 * 3600, "4d2h"),
            (8 * 86400, "8d"),
            (729 * 86400, "729d"),
            (730 * 86400, "2y"),
            (740 * 86400, "2y10d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (seconds, want) in cases {
            assert_eq!(
                human_duration(SignedDuration::from_secs(seconds)),
                want,
                "{seconds}s"
            );
        }
        let mut p = pod(1, &[], json!({}));
        p.metadata.creation_timestamp = None;
        assert_eq!(pod_row(&p, now()).age, "<unknown>");
    }

    #[test]
    fn table_columns_align_and_follow_the_options() {
        let mut p = pod(
            1,
            &[],
            json!({"phase": "Running", "podIP": "10.1.0.7",
            "containerStatuses": [running("c0", true)]}),
        );
        p.metadata.name = Some("a-much-longer-name".into());
        let short = pod(1, &[], json!({"phase": "Pending"}));
        let columns = Columns {
            namespace: false,
            wide: false,
        };
        let rows = [&p, &short]
            .iter()
            .map(|pod| columns.cells(&pod_row(pod, now())))
            .collect();
        let text = table(columns.header(), rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "NAME                 READY   STATUS    RESTARTS   AGE   IP"
        );
        assert_eq!(
            lines[1],
            "a-much-longer-name   1/1     Running   0          5m    10.1.0.7"
        );
        assert_eq!(
            lines[2],
            "p                    0/1     Pending   0          5m    <none>"
        );
        let all = Columns {
            namespace: true,
            wide: true,
        };
        assert_eq!(all.header().first().map(String::as_str), Some("NAMESPACE"));
        assert_eq!(all.header().last().map(String::as_str), Some("NODE"));
        assert_eq!(all.cells(&pod_row(&short, now()))[0], "default");
    }

    #[test]
    fn describe_shows_spec_status_and_events() {
        let mut last = waiting("c0", "CrashLoopBackOff");
        last["restartCount"] = json!(4);
        last["lastState"] = json!({"terminated": {"exitCode": 1, "reason": "Error"}});
        let mut p = pod(
            1,
            &["i0"],
            json!({"phase": "Running", "podIP": "10.1.0.7",
            "podIPs": [{"ip": "10.1.0.7"}, {"ip": "fd00::7"}],
            "conditions": [{"type": "Ready", "status": "False"}],
            "initContainerStatuses": [terminated("i0", 0, Some("Completed"), None)],
            "containerStatuses": [last]}),
        );
        let spec = p.spec.as_mut().unwrap();
        spec.containers[0].image = Some("busybox:1.36".into());
        spec.containers[0].ports = Some(vec![serde_json::from_value(
            json!({"containerPort": 80, "hostPort": 8080}),
        )
        .unwrap()]);
        spec.volumes = Some(vec![serde_json::from_value(
            json!({"name": "data", "emptyDir": {"medium": "Memory"}}),
        )
        .unwrap()]);
        let at = |s: &str| Time(s.parse().unwrap());
        let detail = PodDetail {
            pod: p,
            events: vec![PodEvent {
                first_timestamp: at("2024-05-01T11:50:00Z"),
                last_timestamp: at("2024-05-01T11:59:00Z"),
                event_type: EventType::Warning,
                reason: "BackOff".into(),
                message: "Back-off restarting failed container".into(),
                count: 5,
            }],
        };
        let text = describe(&detail, now());
        for want in [
            "Name:             p\n",
            "Status:           Running\n",
            "IPs:\n  IP:  10.1.0.7\n  IP:  fd00::7\n",
            "Init Containers:\n  i0:\n",
            "    Image:          busybox:1.36\n",
            "    Ports:          80/TCP (host port 8080)\n",
            "    State:          Waiting\n      Reason:       CrashLoopBackOff\n",
            "    Last State:     Terminated\n      Reason:       Error\n      Exit Code:    1\n",
            "    Restart Count:  4\n",
            "  Ready   False\n",
            "  data:\n    Type:           EmptyDir",
            "    Medium:         Memory\n",
            "Warning   BackOff   60s (x5 over 10m)   kubelet   Back-off restarting failed container",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        let empty = PodDetail {
            pod: pod(1, &[], json!({})),
            events: Vec::new(),
        };
        assert!(describe(&empty, now()).contains("Events:           <none>\n"));
    }
}
