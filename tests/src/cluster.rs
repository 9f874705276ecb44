//! Cluster-mode fixtures shared by the end-to-end tests: waiting on API objects, applying
//! manifests with the real `kubectl`, and running commands in an agent's pods.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::agent::{condition, manifest, Agent};
use crate::apiserver::ApiServer;

/// Poll the API object until `check` accepts it; the last object seen is in the error.
pub fn wait_object(
    server: &ApiServer,
    agent: &Agent,
    (resource, namespace, name): (&str, &str, &str),
    timeout: Duration,
    what: &str,
    check: impl Fn(Option<&Value>) -> bool,
) -> Result<Option<Value>> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    while Instant::now() < deadline {
        last = server.get(resource, namespace, name);
        if check(last.as_ref()) {
            return Ok(last);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "{resource} {namespace}/{name} not {what} within {timeout:?}; last seen:\n{}\nagent log:\n{}",
        serde_json::to_string_pretty(&last).unwrap_or_default(),
        tail(&agent.log(), 60)
    )
}

/// Poll pod `default/<name>` until `check` accepts it (60 s).
pub fn wait_pod(
    server: &ApiServer,
    agent: &Agent,
    name: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let found = wait_object(
        server,
        agent,
        ("pods", "default", name),
        Duration::from_secs(60),
        what,
        |pod| pod.is_some_and(&check),
    )?;
    found.context("pod vanished")
}

/// Wait for the agent's Node to be Ready and return it.
pub fn node_ready(server: &ApiServer, agent: &Agent) -> Result<Value> {
    let node = wait_object(
        server,
        agent,
        ("nodes", "", agent.node_name()),
        Duration::from_secs(60),
        "Ready",
        |node| node.is_some_and(|n| condition(n, "Ready") == Some("True")),
    )?;
    node.context("node vanished")
}

/// `kubectl apply` `template` with IMAGE and NODE filled in and `extra` replacements.
pub fn apply(
    server: &ApiServer,
    agent: &Agent,
    template: &str,
    extra: &[(&str, &str)],
) -> Result<()> {
    let mut yaml = manifest(template, agent.images.busybox()).replace("NODE", agent.node_name());
    for (from, to) in extra {
        yaml = yaml.replace(from, to);
    }
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), yaml)?;
    let path = file.path().to_string_lossy().into_owned();
    server.kubectl(&["apply", "-f", &path])?;
    Ok(())
}

/// Run `command` in pod `default/<pod>` through the agent's CLI; its stdout.
pub fn exec(agent: &Agent, pod: &str, command: &[&str]) -> Result<String> {
    let mut args = vec!["exec", "-n", "default", pod, "--"];
    args.extend_from_slice(command);
    let out = agent.cli(&args)?;
    ensure!(
        out.status.success(),
        "capstan exec {command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
