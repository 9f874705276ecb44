//! Pod start through the API as a cluster user sees it: from creating the pod (POST as the
//! admin) to a watching client seeing it Running, on a node joined with `capstan join`.
//! One pod at a time (median, p99), then 100 pods created at once until all are Running,
//! then the API requests the agent makes in a minute with those 100 pods running (only
//! lease renewals and real changes should remain).
//!
//! `CAPSTAN_BENCH_PODS` (default 30) sets the one-at-a-time count; `CAPSTAN_BENCH_BURST`
//! (default 100) the burst size.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, watcher, Event};
use tests::agent::{Agent, Runtime};
use tests::apiserver::ApiServer;
use tests::pods::bench::{
    build_capstan_release, count_from_env, percentile_ms, report_times, tail,
};
use tokio::sync::mpsc;

/// How long the agent's steady-state requests are counted.
const STEADY_WINDOW: Duration = Duration::from_secs(60);
const LABEL: &str = "bench=api-pod-start";

fn pod(name: &str, node: &str, image: &str) -> Result<Pod> {
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"bench": "api-pod-start"}},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "c",
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 3600; done"]
            }]
        }
    });
    Ok(serde_json::from_value(pod)?)
}

/// What the watching client saw: a pod Running, or deleted.
enum Seen {
    Running(String, Instant),
    Deleted(String),
}

/// The watching client: reports each pod's first Running and its deletion.
fn watch_pods(api: Api<Pod>) -> (mpsc::UnboundedReceiver<Seen>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut running = BTreeSet::new();
        let mut stream = watcher(api, watcher::Config::default().labels(LABEL)).boxed();
        while let Some(event) = stream.next().await {
            let (pod, deleted) = match event {
                Ok(Event::Apply(pod) | Event::InitApply(pod)) => (pod, false),
                Ok(Event::Delete(pod)) => (pod, true),
                Ok(_) => continue,
                Err(error) => {
                    eprintln!("watch error: {error}");
                    continue;
                }
            };
            let name = pod.metadata.name.clone().unwrap_or_default();
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            let sent = if deleted {
                running.remove(&name);
                tx.send(Seen::Deleted(name))
            } else if phase == Some("Running") && running.insert(name.clone()) {
                tx.send(Seen::Running(name, Instant::now()))
            } else {
                Ok(())
            };
            if sent.is_err() {
                return;
            }
        }
    });
    (rx, task)
}

async fn wait_running(
    seen: &mut mpsc::UnboundedReceiver<Seen>,
    names: &BTreeSet<String>,
    timeout: Duration,
) -> Result<BTreeMap<String, Instant>> {
    let mut running = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while running.len() < names.len() {
        match tokio::time::timeout_at(deadline, seen.recv()).await {
            Ok(Some(Seen::Running(name, at))) if names.contains(&name) => {
                running.insert(name, at);
            }
            Ok(Some(_)) => {}
            Ok(None) => bail!("the watch ended"),
            Err(_) => bail!(
                "{} of {} pods Running after {timeout:?}",
                running.len(),
                names.len()
            ),
        }
    }
    Ok(running)
}

async fn wait_deleted(seen: &mut mpsc::UnboundedReceiver<Seen>, name: &str) -> Result<()> {
    let wait = async {
        loop {
            match seen.recv().await {
                Some(Seen::Deleted(gone)) if gone == name => return Ok(()),
                Some(_) => {}
                None => bail!("the watch ended"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .with_context(|| format!("{name} not deleted within 60 s"))?
}

async fn one_at_a_time(
    api: &Api<Pod>,
    seen: &mut mpsc::UnboundedReceiver<Seen>,
    agent: &Agent,
    count: usize,
    prefix: &str,
) -> Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(count);
    for i in 0..count {
        let name = format!("{prefix}{i}");
        let started = Instant::now();
        api.create(
            &PostParams::default(),
            &pod(&name, agent.node_name(), agent.images.busybox())?,
        )
        .await?;
        let running = wait_running(seen, &[name.clone()].into(), Duration::from_secs(60))
            .await
            .with_context(|| format!("--- agent log ---\n{}", tail(&agent.log(), 30)))?;
        times.push(running[&name].duration_since(started));
        api.delete(&name, &DeleteParams::default()).await?;
        wait_deleted(seen, &name).await?;
    }
    Ok(times)
}

async fn admin_client(server: &ApiServer) -> Result<kube::Client> {
    let kubeconfig = Kubeconfig::read_from(server.admin_kubeconfig())?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

#[tokio::main]
async fn main() -> Result<()> {
    tests::binaries::require_root()?;
    build_capstan_release()?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let count = count_from_env("CAPSTAN_BENCH_PODS", 30);
    let burst = count_from_env("CAPSTAN_BENCH_BURST", 100);

    let server = ApiServer::start()?;
    let agent = tokio::task::block_in_place(|| Agent::join(Runtime::Builtin, &server, &[]))?;
    let client = admin_client(&server).await?;
    let api: Api<Pod> = Api::namespaced(client, "default");
    let (mut seen, watching) = watch_pods(api.clone());

    // Warm-up: registers the node, pulls the image, creates the bridge.
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.get("nodes", "", agent.node_name()).is_none() {
        if Instant::now() > deadline {
            bail!("node not registered:\n{}", tail(&agent.log(), 30));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    one_at_a_time(&api, &mut seen, &agent, 2, "warm").await?;
    let times = one_at_a_time(&api, &mut seen, &agent, count, "one").await?;
    report_times("created through the API → Running (watch)", &times);

    let names: BTreeSet<String> = (0..burst).map(|i| format!("burst{i}")).collect();
    let started = Instant::now();
    let creates = names.iter().map(|name| {
        let api = api.clone();
        let pod = pod(name, agent.node_name(), agent.images.busybox());
        async move {
            api.create(&PostParams::default(), &pod?)
                .await
                .map_err(anyhow::Error::from)
        }
    });
    for created in futures::future::join_all(creates).await {
        created?;
    }
    wait_running(&mut seen, &names, Duration::from_secs(300))
        .await
        .with_context(|| format!("--- agent log ---\n{}", tail(&agent.log(), 30)))?;
    let burst_s = started.elapsed().as_secs_f64();
    println!("{burst} pods created at once, all Running in {burst_s:.2} s");

    // Let the burst settle (readiness, last status patches), then count the agent's calls.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let user = format!("system:node:{}", agent.node_name());
    let mark = server.request_count();
    tokio::time::sleep(STEADY_WINDOW).await;
    let requests: Vec<_> = server
        .requests_since(mark)
        .into_iter()
        .filter(|r| r.user == user)
        .collect();
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for request in &requests {
        let resource = request
            .path
            .split('/')
            .rev()
            .nth(1)
            .unwrap_or("")
            .to_owned();
        *by_kind
            .entry(format!("{} {resource}", request.verb))
            .or_default() += 1;
    }
    let per_minute = requests.len() as f64 * 60.0 / STEADY_WINDOW.as_secs_f64();
    println!("agent requests in {STEADY_WINDOW:?} with {burst} pods running: {by_kind:?}");

    println!(
        "BENCH api_pod_start median_ms={:.1} p99_ms={:.1} burst100_s={burst_s:.2} steady_requests_per_min={per_minute:.0}",
        percentile_ms(&times, 0.5),
        percentile_ms(&times, 0.99),
    );
    // The watch would only complain about the server going away.
    watching.abort();
    drop(agent);
    Ok(())
}
