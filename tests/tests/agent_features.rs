//! End-to-end: kubelet features of `capstan agent` in standalone mode, each on the
//! built-in runtime and on containerd: liveness and startup probes, lifecycle hooks,
//! hostPort, volumes (emptyDir on tmpfs, hostPath types, downwardAPI, subPath escapes),
//! image pull policies, env expansion and the downward API in env, logs (--previous,
//! -f, --tail) and graceful termination with its grace period.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rand::Rng as _;
use serde_json::Value;
use tests::agent::{container_status, http_get, is_ready, Agent, Runtime};
use tests::binaries::capstan_bin;
use tests::TempRoot;

/// Restarts after at most a second, so restart scenarios stay quick.
const QUICK_BACKOFF: &str = "crashLoopBackOff: {maxContainerRestartPeriod: 1s}";
/// Time a pod gets to become Running or Ready.
const START: Duration = Duration::from_secs(60);

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or("")
}

fn running(pod: &Value, container: &str) -> bool {
    container_status(pod, container).is_some_and(|s| s["state"]["running"].is_object())
}

fn waiting_reason<'a>(pod: &'a Value, container: &str) -> &'a str {
    container_status(pod, container)
        .and_then(|s| s["state"]["waiting"]["reason"].as_str())
        .unwrap_or("")
}

fn waiting_message<'a>(pod: &'a Value, container: &str) -> &'a str {
    container_status(pod, container)
        .and_then(|s| s["state"]["waiting"]["message"].as_str())
        .unwrap_or("")
}

/// Retry `probe` until it returns `Some`, or fail naming `what` and the last value seen.
fn eventually<T: std::fmt::Debug>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<(Option<T>, String)>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        let (found, seen) = probe()?;
        if let Some(found) = found {
            return Ok(found);
        }
        last = seen;
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{what} not seen within {timeout:?}; last seen:\n{last}")
}

/// `capstan logs <args>` until its output contains `needle`.
fn logs_containing(agent: &Agent, args: &[&str], needle: &str) -> Result<String> {
    let mut full = vec!["logs"];
    full.extend_from_slice(args);
    let found = eventually(
        Duration::from_secs(15),
        &format!("{needle:?} in logs"),
        || {
            let out = stdout(&agent.cli(&full)?);
            Ok((out.contains(needle).then(|| out.clone()), out))
        },
    );
    found.with_context(|| {
        let describe = agent
            .cli(&["pods", "describe", args[0]])
            .map(|o| stdout(&o))
            .unwrap_or_default();
        format!("{describe}\nagent log:\n{}", tail(&agent.log(), 30))
    })
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `capstan pods describe NAME` until it contains every needle.
fn describe_containing(agent: &Agent, name: &str, needles: &[&str]) -> Result<String> {
    eventually(
        Duration::from_secs(15),
        &format!("{needles:?} in describe"),
        || {
            let out = stdout(&agent.cli(&["pods", "describe", name])?);
            Ok((
                needles.iter().all(|n| out.contains(n)).then(|| out.clone()),
                out,
            ))
        },
    )
}

/// A one-container pod: `spec` and `container` are extra YAML lines at their indents
/// (`spec` under `spec:`, `container` under the container item).
fn pod(name: &str, image: &str, spec: &str, container: &str) -> String {
    let indent = |text: &str, by: &str| {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| format!("{by}{l}\n"))
            .collect::<String>()
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: {name}, tier: test}}\nspec:\n{}  containers:\n  - name: c\n    image: {image}\n{}",
        indent(spec, "  "),
        indent(container, "    "),
    )
}

/// Remove the manifests and return how long each pod took to disappear.
fn time_until_gone(
    agent: &Agent,
    names: &[&str],
    timeout: Duration,
) -> Result<BTreeMap<String, Duration>> {
    let started = Instant::now();
    for name in names {
        agent.remove_manifest(&format!("{name}.yaml"))?;
    }
    let mut gone = BTreeMap::new();
    while gone.len() < names.len() {
        if started.elapsed() > timeout {
            bail!(
                "pods still there after {timeout:?} (gone: {gone:?}):\n{}",
                agent.log()
            );
        }
        let (pods, _) = agent.pods()?;
        for name in names {
            let full = format!("{name}-{}", agent.node_name());
            if !gone.contains_key(*name) && !pods.iter().any(|p| p["metadata"]["name"] == *full) {
                gone.insert((*name).to_owned(), started.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(gone)
}

/// How the runtime's container IDs start in the pod status.
fn id_prefix(runtime: Runtime) -> &'static str {
    match runtime {
        Runtime::Builtin => "capstan://",
        Runtime::Containerd => "containerd://",
    }
}

/// The agent's watch events, read on a thread.
fn watch_events(agent: &Agent) -> Result<mpsc::Receiver<Value>> {
    let mut watch = agent.watch()?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        while let Ok(event) = watch.next_event() {
            if tx.send(event).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

fn liveness_probe_failure_restarts_the_container(runtime: Runtime) -> Result<()> {
    let agent = Agent::start_with(runtime, &[QUICK_BACKOFF])?;
    let manifest = pod(
        "live",
        agent.images.busybox(),
        "terminationGracePeriodSeconds: 1",
        r#"
command: [sh, -c, "trap 'exit 0' TERM; touch /tmp/healthy; echo up; sleep 2; rm /tmp/healthy; while true; do sleep 1; done"]
livenessProbe:
  exec: {command: [cat, /tmp/healthy]}
  periodSeconds: 1
  failureThreshold: 1
"#,
    );
    agent.write_manifest("live.yaml", &manifest)?;
    let pod = agent.wait_pod("live", START, "restarted by liveness", |p| {
        container_status(p, "c").is_some_and(|s| s["restartCount"].as_i64() >= Some(1))
    })?;
    let status = container_status(&pod, "c").context("no status")?;
    let last = &status["lastState"]["terminated"];
    ensure!(
        last.is_object() && last["finishedAt"].is_string(),
        "lastState: {status}"
    );
    // The killed instance is not the one running now; both IDs carry the runtime.
    let (last_id, now_id) = (last["containerID"].as_str(), status["containerID"].as_str());
    ensure!(
        last_id.is_some_and(|id| id.starts_with(id_prefix(runtime))) && last_id != now_id,
        "containerIDs: {status}"
    );
    describe_containing(
        &agent,
        "live",
        &["Unhealthy", "Liveness probe failed", "Killing"],
    )?;
    Ok(())
}

fn startup_probe_gates_started_and_ready(runtime: Runtime) -> Result<()> {
    let agent = Agent::start(runtime)?;
    let manifest = pod(
        "slow",
        agent.images.busybox(),
        "terminationGracePeriodSeconds: 1",
        r#"
command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
startupProbe:
  exec: {command: [cat, /tmp/started]}
  periodSeconds: 1
  failureThreshold: 60
livenessProbe:
  exec: {command: [cat, /tmp/started]}
  periodSeconds: 1
  failureThreshold: 1
"#,
    );
    agent.write_manifest("slow.yaml", &manifest)?;
    agent.wait_pod("slow", START, "running", |p| running(p, "c"))?;
    // Several probe periods pass: still not started, not Ready, and the liveness probe
    // (which would fail) is held back by the startup probe.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let pod = agent.pod("slow")?.context("pod gone")?;
        let status = container_status(&pod, "c").context("no status")?;
        ensure!(
            status["started"] == false && status["ready"] == false && !is_ready(&pod),
            "started before its startup probe passed: {status}"
        );
        ensure!(status["restartCount"] == 0, "liveness ran early: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let exec = agent.cli(&["exec", "slow", "--", "touch", "/tmp/started"])?;
    ensure!(exec.status.success(), "exec: {exec:?}");
    let pod = agent.wait_pod("slow", Duration::from_secs(15), "Ready", is_ready)?;
    let status = container_status(&pod, "c").context("no status")?;
    ensure!(
        status["started"] == true && status["ready"] == true && status["restartCount"] == 0,
        "{status}"
    );
    Ok(())
}

fn post_start_and_pre_stop_hooks_and_pre_stop_sleep_within_grace(runtime: Runtime) -> Result<()> {
    let host = TempRoot::new("hooks")?;
    let agent = Agent::start(runtime)?;
    let image = agent.images.busybox().to_owned();
    let out_dir = host.path().display().to_string();
    agent.write_manifest(
        "hooks.yaml",
        &pod(
            "hooks",
            &image,
            &format!(
                "terminationGracePeriodSeconds: 10\nvolumes:\n- name: out\n  hostPath: {{path: {out_dir}, type: Directory}}"
            ),
            r#"
command: [sh, -c, "trap 'exit 0' TERM; while [ ! -f /tmp/hook ]; do sleep 0.1; done; echo main read $(cat /tmp/hook); while true; do sleep 1; done"]
volumeMounts: [{name: out, mountPath: /out}]
lifecycle:
  postStart:
    exec: {command: [sh, -c, "echo written-by-post-start > /tmp/hook"]}
  preStop:
    exec: {command: [sh, -c, "echo written-by-pre-stop > /out/pre-stop"]}
"#,
        ),
    )?;
    let sleeper = |name: &str, sleep: u32, grace: u32| {
        pod(
            name,
            &image,
            &format!("terminationGracePeriodSeconds: {grace}"),
            &format!(
                "command: [sh, -c, \"trap 'exit 0' TERM; while true; do sleep 1; done\"]\nlifecycle:\n  preStop:\n    sleep: {{seconds: {sleep}}}"
            ),
        )
    };
    // preStop time counts against the grace period: a 30 s sleep is cut at 2 s.
    agent.write_manifest("short.yaml", &sleeper("short", 2, 10))?;
    agent.write_manifest("cut.yaml", &sleeper("cut", 30, 2))?;
    for name in ["hooks", "short", "cut"] {
        agent.wait_pod(name, START, "running", |p| running(p, "c"))?;
    }
    logs_containing(&agent, &["hooks"], "main read written-by-post-start")?;
    describe_containing(&agent, "hooks", &["Started"])?;

    let gone = time_until_gone(&agent, &["hooks", "short", "cut"], Duration::from_secs(30))?;
    let written = std::fs::read_to_string(host.join("pre-stop"))
        .context("the preStop hook did not write into the hostPath directory")?;
    ensure!(written.trim() == "written-by-pre-stop", "{written:?}");
    let (short, cut) = (gone["short"], gone["cut"]);
    ensure!(
        short >= Duration::from_secs(2) && short < Duration::from_secs(7),
        "preStop sleep 2 s with 10 s grace took {short:?}"
    );
    ensure!(
        cut >= Duration::from_secs(2) && cut < Duration::from_secs(7),
        "preStop sleep 30 s with 2 s grace took {cut:?}"
    );
    Ok(())
}

fn host_port_reaches_the_pod_from_the_node(runtime: Runtime) -> Result<()> {
    let agent = Agent::start(runtime)?;
    let port: u16 = rand::rng().random_range(30_000..40_000);
    let manifest = pod(
        "hostport",
        agent.images.busybox(),
        "terminationGracePeriodSeconds: 1",
        &format!(
            r#"
command: [sh, -c, "mkdir -p /www && echo served-through-host-port > /www/index.html && exec httpd -f -p 8080 -h /www"]
ports: [{{containerPort: 8080, hostPort: {port}}}]
readinessProbe:
  tcpSocket: {{port: 8080}}
  periodSeconds: 1
"#
        ),
    );
    agent.write_manifest("hostport.yaml", &manifest)?;
    let pod = agent.wait_pod("hostport", START, "Ready", is_ready)?;
    let ip = pod["status"]["podIP"].as_str().context("no pod IP")?;
    ensure!(http_get(ip, 8080, "/index.html")?.contains("served-through-host-port"));
    let page = eventually(Duration::from_secs(10), "the hostPort answering", || {
        let got = http_get("127.0.0.1", port, "/index.html").unwrap_or_else(|e| format!("{e:#}"));
        Ok((
            got.contains("served-through-host-port")
                .then(|| got.clone()),
            got,
        ))
    })?;
    ensure!(page.contains("200 OK"), "{page}");
    agent.remove_manifest("hostport.yaml")?;
    agent.wait_gone("hostport", Duration::from_secs(30))?;
    ensure!(
        http_get("127.0.0.1", port, "/index.html").is_err(),
        "the hostPort still answers after the pod is gone"
    );
    Ok(())
}

fn volumes_memory_empty_dir_host_path_and_downward_api(runtime: Runtime) -> Result<()> {
    let host = TempRoot::new("volumes")?;
    let agent = Agent::start(runtime)?;
    let created = host.join("made/by/agent");
    let manifest = pod(
        "vols",
        agent.images.busybox(),
        &format!(
            r#"
terminationGracePeriodSeconds: 1
volumes:
- name: cache
  emptyDir: {{medium: Memory, sizeLimit: 16Mi}}
- name: made
  hostPath: {{path: {}, type: DirectoryOrCreate}}
- name: info
  downwardAPI:
    items:
    - path: labels
      fieldRef: {{fieldPath: metadata.labels}}
"#,
            created.display()
        ),
        r#"
command: [sh, -c, "trap 'exit 0' TERM; echo from-container > /made/file; while true; do sleep 1; done"]
volumeMounts:
- {name: cache, mountPath: /cache}
- {name: made, mountPath: /made}
- {name: info, mountPath: /info}
"#,
    );
    agent.write_manifest("vols.yaml", &manifest)?;
    agent.wait_pod("vols", START, "running", |p| running(p, "c"))?;

    let df = agent.cli(&["exec", "vols", "--", "df", "-k", "/cache"])?;
    let df = stdout(&df);
    let line = df
        .lines()
        .find(|l| l.trim_end().ends_with("/cache"))
        .with_context(|| format!("df: {df}"))?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    ensure!(
        fields.first() == Some(&"tmpfs") && fields.get(1) == Some(&"16384"),
        "emptyDir medium Memory with sizeLimit 16Mi: {line}"
    );
    ensure!(
        created.is_dir(),
        "DirectoryOrCreate did not create {created:?}"
    );
    let file = eventually(Duration::from_secs(10), "the container's file", || {
        let got = std::fs::read_to_string(created.join("file")).unwrap_or_default();
        Ok(((!got.is_empty()).then(|| got.clone()), got))
    })?;
    ensure!(file.trim() == "from-container", "{file:?}");
    let labels = stdout(&agent.cli(&["exec", "vols", "--", "cat", "/info/labels"])?);
    ensure!(
        labels.contains("app=\"vols\"") && labels.contains("tier=\"test\""),
        "downwardAPI labels file: {labels:?}"
    );
    Ok(())
}

fn host_path_type_mismatch_and_sub_path_escape_are_refused(runtime: Runtime) -> Result<()> {
    let host = TempRoot::new("badvols")?;
    let agent = Agent::start(runtime)?;
    let image = agent.images.busybox().to_owned();
    let dir = host.path().display().to_string();
    agent.write_manifest(
        "mismatch.yaml",
        &pod(
            "mismatch",
            &image,
            &format!(
                "terminationGracePeriodSeconds: 1\nvolumes:\n- name: f\n  hostPath: {{path: {dir}, type: File}}"
            ),
            "command: [sleep, '3600']\nvolumeMounts: [{name: f, mountPath: /f}]",
        ),
    )?;
    // The classic subPath attack: an earlier container plants a symlink to / in a
    // volume, a later one mounts it by subPath.
    agent.write_manifest(
        "escape.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: escape}}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: data
    emptyDir: {{}}
  initContainers:
  - name: plant
    image: {image}
    command: [ln, -s, /, /data/escape]
    volumeMounts: [{{name: data, mountPath: /data}}]
  containers:
  - name: c
    image: {image}
    command: [sleep, '3600']
    volumeMounts: [{{name: data, mountPath: /host, subPath: escape}}]
"#
        ),
    )?;
    let seen = agent.wait_pod("mismatch", START, "waiting on its volume", |p| {
        waiting_message(p, "c").contains(&dir)
    })?;
    ensure!(
        waiting_reason(&seen, "c") == "ContainerCreating",
        "{}",
        seen["status"]
    );
    ensure!(
        waiting_message(&seen, "c").contains("not a file"),
        "{}",
        waiting_message(&seen, "c")
    );
    describe_containing(&agent, "mismatch", &["FailedMount", &dir])?;

    let seen_escape = agent.wait_pod("escape", START, "refused", |p| {
        waiting_reason(p, "c") == "CreateContainerConfigError"
    })?;
    let message = waiting_message(&seen_escape, "c");
    ensure!(
        message.contains("escapes the volume") && message.contains("\"data\""),
        "subPath escape message: {message}"
    );
    describe_containing(&agent, "escape", &["Failed", "escapes the volume"])?;
    ensure!(
        !running(&seen_escape, "c"),
        "escaping container runs: {}",
        seen_escape["status"]
    );

    // The agent keeps serving and running other pods.
    agent.write_manifest(
        "fine.yaml",
        &pod(
            "fine",
            &image,
            "terminationGracePeriodSeconds: 1",
            "command: [sleep, '3600']",
        ),
    )?;
    agent.wait_pod("fine", START, "running", |p| running(p, "c"))?;
    ensure!(agent.pod("mismatch")?.is_some() && agent.pod("escape")?.is_some());
    Ok(())
}

fn image_pull_policies_never_missing_and_always(runtime: Runtime) -> Result<()> {
    let agent = Agent::start(runtime)?;
    let absent = format!("{}/capstan-test/absent:1", agent.images.registry().host());
    let mut watch = agent.watch()?;
    agent.write_manifest(
        "never.yaml",
        &pod(
            "never",
            &absent,
            "",
            "imagePullPolicy: Never\ncommand: [sleep, '3600']",
        ),
    )?;
    agent.write_manifest(
        "missing.yaml",
        &pod(
            "missing",
            &absent,
            "",
            "imagePullPolicy: IfNotPresent\ncommand: [sleep, '3600']",
        ),
    )?;
    agent.write_manifest(
        "always.yaml",
        &pod(
            "always",
            agent.images.busybox(),
            "terminationGracePeriodSeconds: 1",
            "imagePullPolicy: Always\ncommand: [sh, -c, \"trap 'exit 0' TERM; echo pulled-and-running; while true; do sleep 1; done\"]",
        ),
    )?;
    // Every waiting reason each pod went through, in order, from the watch.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        while let Ok(event) = watch.next_event() {
            if tx.send(event).is_err() {
                break;
            }
        }
    });
    let mut reasons: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = |r: &BTreeMap<String, Vec<String>>| {
        let seen =
            |name: &str, reason: &str| r.get(name).is_some_and(|v| v.iter().any(|x| x == reason));
        seen("never", "ErrImageNeverPull") && seen("missing", "ImagePullBackOff")
    };
    while !done(&reasons) && Instant::now() < deadline {
        let Ok(event) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let object = &event["object"];
        let name = object["metadata"]["name"].as_str().unwrap_or("");
        let short = name
            .strip_suffix(&format!("-{}", agent.node_name()))
            .unwrap_or(name)
            .to_owned();
        let reason = waiting_reason(object, "c").to_owned();
        if reason.is_empty() {
            continue;
        }
        let list = reasons.entry(short).or_default();
        if list.last() != Some(&reason) {
            list.push(reason);
        }
    }
    ensure!(done(&reasons), "waiting reasons seen: {reasons:?}");
    let missing = &reasons["missing"];
    let first_pull_error = missing.iter().position(|r| r == "ErrImagePull");
    let first_backoff = missing.iter().position(|r| r == "ImagePullBackOff");
    ensure!(
        matches!((first_pull_error, first_backoff), (Some(a), Some(b)) if a < b),
        "ErrImagePull then ImagePullBackOff expected: {missing:?}"
    );
    let never = agent.pod("never")?.context("never gone")?;
    ensure!(
        waiting_message(&never, "c").contains("pull policy of Never"),
        "{}",
        never["status"]
    );
    describe_containing(
        &agent,
        "missing",
        &["Failed to pull image", "Back-off pulling image"],
    )?;
    describe_containing(&agent, "never", &["ErrImageNeverPull"])?;

    let always = agent.wait_pod("always", START, "running", |p| running(p, "c"))?;
    ensure!(phase(&always) == "Running", "{}", always["status"]);
    logs_containing(&agent, &["always"], "pulled-and-running")?;
    describe_containing(&agent, "always", &["Pulled", "Successfully pulled image"])?;
    Ok(())
}

fn env_expansion_and_downward_api_in_env(runtime: Runtime) -> Result<()> {
    let agent = Agent::start(runtime)?;
    let manifest = pod(
        "env",
        agent.images.busybox(),
        "terminationGracePeriodSeconds: 1",
        r#"
command: [sh, -c, "echo cmd=$(GREETING) zero=$0 one=$1 mem=$(MEM) mem_mi=$(MEM_MI) kept='$$(GREETING)' undefined='$(NOT_DEFINED_ANYWHERE)'; echo shell=$MY_IP; sleep 3600"]
args: ["$(COMBINED)", "ip=$(MY_IP)"]
env:
- {name: GREETING, value: hello}
- {name: COMBINED, value: "$(GREETING)-world"}
- name: MY_IP
  valueFrom: {fieldRef: {fieldPath: status.podIP}}
- name: MEM
  valueFrom: {resourceFieldRef: {resource: limits.memory}}
- name: MEM_MI
  valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}
resources:
  limits: {memory: 64Mi}
"#,
    );
    agent.write_manifest("env.yaml", &manifest)?;
    let pod = agent.wait_pod("env", START, "running", |p| running(p, "c"))?;
    let ip = pod["status"]["podIP"].as_str().context("no pod IP")?;
    let logs = logs_containing(&agent, &["env"], "shell=")?;
    // `sh -c SCRIPT ARG0 ARG1`: the args are the script's $0 and $1; $(VAR) is expanded
    // by the kubelet in both, `$$` escapes it and an undefined reference stays as written.
    let want = format!(
        "cmd=hello zero=hello-world one=ip={ip} mem=67108864 mem_mi=64 kept=$(GREETING) undefined=$(NOT_DEFINED_ANYWHERE)"
    );
    ensure!(logs.contains(&want), "want {want:?} in logs: {logs:?}");
    ensure!(logs.contains(&format!("shell={ip}")), "logs: {logs:?}");
    Ok(())
}

fn logs_previous_follow_and_tail(runtime: Runtime) -> Result<()> {
    let agent = Agent::start_with(runtime, &[QUICK_BACKOFF])?;
    // The first instance prints and fails; the second prints five lines, then ticks.
    let manifest = pod(
        "chatty",
        agent.images.busybox(),
        "terminationGracePeriodSeconds: 1\nvolumes:\n- {name: state, emptyDir: {}}",
        r#"
command: [sh, -c, "trap 'exit 0' TERM; if [ ! -f /state/ran ]; then touch /state/ran; echo first-instance; exit 1; fi; echo second-instance; for i in 1 2 3 4 5; do echo line-$i; done; i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.3; done"]
volumeMounts: [{name: state, mountPath: /state}]
"#,
    );
    agent.write_manifest("chatty.yaml", &manifest)?;
    agent.wait_pod("chatty", START, "restarted and running", |p| {
        running(p, "c")
            && container_status(p, "c").is_some_and(|s| s["restartCount"].as_i64() >= Some(1))
    })?;
    let current = logs_containing(&agent, &["chatty"], "tick-1")?;
    ensure!(
        current.contains("second-instance") && !current.contains("first-instance"),
        "current: {current:?}"
    );
    let previous = stdout(&agent.cli(&["logs", "chatty", "--previous"])?);
    ensure!(
        previous.trim() == "first-instance",
        "--previous: {previous:?}"
    );

    // --tail 2: the two newest lines, once a few ticks are out.
    logs_containing(&agent, &["chatty"], "tick-3")?;
    let tail = stdout(&agent.cli(&["logs", "chatty", "--tail", "2"])?);
    let ticks: Vec<u64> = tail
        .lines()
        .filter_map(|l| l.strip_prefix("tick-")?.parse().ok())
        .collect();
    ensure!(
        tail.lines().count() == 2 && ticks.len() == 2 && ticks[1] >= 3 && ticks[1] == ticks[0] + 1,
        "--tail 2: {tail:?}"
    );
    let all = stdout(&agent.cli(&["logs", "chatty"])?);
    ensure!(
        all.contains(&format!("tick-{}\ntick-{}\n", ticks[0], ticks[1])) && all.lines().count() > 2,
        "--tail 2 gave {tail:?}, all: {all:?}"
    );

    // Follow: the stream goes on past what was written when it started.
    let last_tick = |text: &str| -> u64 {
        text.lines()
            .filter_map(|l| l.strip_prefix("tick-")?.trim().parse().ok())
            .max()
            .unwrap_or(0)
    };
    let before = last_tick(&stdout(&agent.cli(&["logs", "chatty"])?));
    let mut child = Command::new(capstan_bin()?)
        .args(["logs", "-f", "chatty"])
        .env("CAPSTAN_AGENT_SOCKET", agent.socket())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let out = child.stdout.take().context("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut followed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let result = loop {
        if Instant::now() > deadline {
            break Err(anyhow::anyhow!(
                "-f showed nothing past tick-{before} in 10 s: {followed:?}"
            ));
        }
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                followed.push(line);
                if last_tick(&followed.join("\n")) >= before + 3 {
                    break Ok(());
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Err(anyhow::anyhow!("-f ended early: {followed:?}"))
            }
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    result?;
    ensure!(
        followed.first().map(String::as_str) == Some("second-instance"),
        "-f starts from the beginning of the current instance: {followed:?}"
    );
    Ok(())
}

fn graceful_termination_term_then_kill_after_grace(runtime: Runtime) -> Result<()> {
    let host = TempRoot::new("grace")?;
    let agent = Agent::start(runtime)?;
    let image = agent.images.busybox().to_owned();
    let out_dir = host.path().display().to_string();
    agent.write_manifest(
        "polite.yaml",
        &pod(
            "polite",
            &image,
            &format!(
                "terminationGracePeriodSeconds: 30\nvolumes:\n- name: out\n  hostPath: {{path: {out_dir}, type: Directory}}"
            ),
            r#"
command: [sh, -c, "trap 'echo bye; echo bye > /out/bye; exit 0' TERM; echo waiting; while true; do sleep 1; done"]
volumeMounts: [{name: out, mountPath: /out}]
"#,
        ),
    )?;
    agent.write_manifest(
        "stubborn.yaml",
        &pod(
            "stubborn",
            &image,
            "terminationGracePeriodSeconds: 3",
            r#"command: [sh, -c, "trap '' TERM; echo ignoring; while true; do sleep 1; done"]"#,
        ),
    )?;
    for name in ["polite", "stubborn"] {
        agent.wait_pod(name, START, "running", |p| running(p, "c"))?;
        logs_containing(
            &agent,
            &[name],
            if name == "polite" {
                "waiting"
            } else {
                "ignoring"
            },
        )?;
    }
    let events = watch_events(&agent)?;
    let gone = time_until_gone(&agent, &["polite", "stubborn"], Duration::from_secs(30))?;
    let (polite, stubborn) = (gone["polite"], gone["stubborn"]);
    // The last status before each pod went says how its container ended.
    let mut last_state = BTreeMap::new();
    for event in events.try_iter() {
        let object = &event["object"];
        let name = object["metadata"]["name"].as_str().unwrap_or("").to_owned();
        if let Some(status) = container_status(object, "c") {
            last_state.insert(name, status["state"].clone());
        }
    }
    let state = |name: &str| &last_state[&format!("{name}-{}", agent.node_name())];
    let (polite_end, stubborn_end) = (
        &state("polite")["terminated"],
        &state("stubborn")["terminated"],
    );
    ensure!(
        polite_end["exitCode"] == 0 && polite_end["reason"] == "Completed",
        "polite ended as {polite_end}"
    );
    ensure!(
        stubborn_end["exitCode"] == 137 && stubborn_end["reason"] == "Error",
        "stubborn ended as {stubborn_end} (SIGKILL expected)"
    );
    ensure!(
        stubborn_end["containerID"]
            .as_str()
            .is_some_and(|id| id.starts_with(id_prefix(runtime))),
        "{stubborn_end}"
    );
    ensure!(
        polite < Duration::from_secs(5),
        "a container exiting on TERM took {polite:?} (grace 30 s)"
    );
    let bye = std::fs::read_to_string(host.join("bye")).context("the TERM trap did not run")?;
    ensure!(bye.trim() == "bye", "{bye:?}");
    ensure!(
        stubborn >= Duration::from_secs(3) && stubborn < Duration::from_secs(8),
        "a container ignoring TERM with 3 s grace was stopped after {stubborn:?}"
    );
    Ok(())
}

/// Each scenario as a test on the built-in runtime and one on containerd.
macro_rules! on_both_runtimes {
    ($($name:ident),* $(,)?) => {
        mod builtin {
            $(#[test]
            fn $name() -> anyhow::Result<()> {
                super::$name(tests::agent::Runtime::Builtin)
            })*
        }
        mod containerd {
            $(#[test]
            fn $name() -> anyhow::Result<()> {
                super::$name(tests::agent::Runtime::Containerd)
            })*
        }
    };
}

on_both_runtimes!(
    liveness_probe_failure_restarts_the_container,
    startup_probe_gates_started_and_ready,
    post_start_and_pre_stop_hooks_and_pre_stop_sleep_within_grace,
    host_port_reaches_the_pod_from_the_node,
    volumes_memory_empty_dir_host_path_and_downward_api,
    host_path_type_mismatch_and_sub_path_escape_are_refused,
    image_pull_policies_never_missing_and_always,
    env_expansion_and_downward_api_in_env,
    logs_previous_follow_and_tail,
    graceful_termination_term_then_kill_after_grace,
);
