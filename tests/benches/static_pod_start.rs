//! Static pod start as a user sees it: from writing a manifest to the agent reporting the
//! pod Ready on its own watch stream, for the busybox image already present. One pod at a
//! time (median, p99), then 100 manifests at once until all are Ready, then the agent's CPU
//! use with those 100 pods idle. The one-at-a-time figure is repeated with containerd as
//! the agent's runtime.
//!
//! `CAPSTAN_BENCH_PODS` (default 30) sets the one-at-a-time count; `CAPSTAN_BENCH_BURST`
//! (default 100) the burst size.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tests::agent::{is_ready, Agent, PodWatch, Runtime};
use tests::pods::bench::{
    build_capstan_release, count_from_env, percentile_ms, report_times, tail,
};

/// How long the idle agent is watched for its CPU use.
const IDLE_WINDOW: Duration = Duration::from_secs(10);

fn pod(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {image}\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, \"trap 'exit 0' TERM; while true; do sleep 3600; done\"]\n"
    )
}

/// Wait on the watch until every pod in `names` (full names) is Ready.
fn wait_ready(watch: &mut PodWatch, names: &BTreeSet<String>, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut ready = BTreeSet::new();
    while ready.len() < names.len() {
        if Instant::now() > deadline {
            bail!(
                "{} of {} pods Ready after {timeout:?}",
                ready.len(),
                names.len()
            );
        }
        let event = watch.next_event()?;
        let name = event["object"]["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        if names.contains(&name) && is_ready(&event["object"]) {
            ready.insert(name);
        }
    }
    Ok(())
}

/// Wait on the watch until `name` is deleted.
fn wait_deleted(watch: &mut PodWatch, name: &str) -> Result<()> {
    loop {
        let event = watch.next_event()?;
        if event["type"] == "DELETED" && event["object"]["metadata"]["name"] == name {
            return Ok(());
        }
    }
}

/// Manifest → Ready for `count` pods one at a time.
fn one_at_a_time(agent: &Agent, count: usize, prefix: &str) -> Result<Vec<Duration>> {
    let mut watch = agent.watch()?;
    let mut times = Vec::with_capacity(count);
    for i in 0..count {
        let name = format!("{prefix}{i}");
        let full: BTreeSet<String> = [format!("{name}-{}", agent.node_name())].into();
        let started = Instant::now();
        agent.write_manifest(&format!("{name}.yaml"), &pod(&name, agent.images.busybox()))?;
        wait_ready(&mut watch, &full, Duration::from_secs(60))
            .with_context(|| format!("--- agent log ---\n{}", tail(&agent.log(), 30)))?;
        times.push(started.elapsed());
        agent.remove_manifest(&format!("{name}.yaml"))?;
        let full = full.into_iter().next().unwrap_or_default();
        wait_deleted(&mut watch, &full)?;
    }
    Ok(times)
}

/// CPU time (user + system) of `pid` in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let utime: u64 = fields.get(11).context("utime")?.parse()?;
    let stime: u64 = fields.get(12).context("stime")?.parse()?;
    Ok(utime + stime)
}

fn main() -> Result<()> {
    tests::binaries::require_root()?;
    build_capstan_release()?;
    let count = count_from_env("CAPSTAN_BENCH_PODS", 30);
    let burst = count_from_env("CAPSTAN_BENCH_BURST", 100);

    let agent = Agent::start(Runtime::Builtin)?;
    // Warm-up: pulls the image and creates the bridge.
    one_at_a_time(&agent, 2, "warm")?;
    let ours = one_at_a_time(&agent, count, "one")?;
    report_times("capstan (built-in runtime)", &ours);

    let mut watch = agent.watch()?;
    let names: BTreeSet<String> = (0..burst)
        .map(|i| format!("burst{i}-{}", agent.node_name()))
        .collect();
    let started = Instant::now();
    for i in 0..burst {
        let name = format!("burst{i}");
        agent.write_manifest(&format!("{name}.yaml"), &pod(&name, agent.images.busybox()))?;
    }
    wait_ready(&mut watch, &names, Duration::from_secs(300))?;
    let burst_s = started.elapsed().as_secs_f64();
    println!("capstan: {burst} pods Ready in {burst_s:.2} s");

    // Let the burst's stragglers (probes, status) settle, then watch the idle agent.
    std::thread::sleep(Duration::from_secs(3));
    let pid = agent.pid().context("agent not running")?;
    let ticks_per_s = clock_ticks_per_second();
    let before = cpu_ticks(pid)?;
    std::thread::sleep(IDLE_WINDOW);
    let used = cpu_ticks(pid)?.saturating_sub(before) as f64 / ticks_per_s;
    let idle_cpu_pct = 100.0 * used / IDLE_WINDOW.as_secs_f64();
    println!("capstan: agent CPU with {burst} idle pods: {idle_cpu_pct:.2} % of a core");
    drop(watch);
    drop(agent);

    let peer = Agent::start(Runtime::Containerd)?;
    one_at_a_time(&peer, 2, "warm")?;
    let theirs = one_at_a_time(&peer, count, "one")?;
    report_times("capstan agent on containerd", &theirs);
    drop(peer);

    println!(
        "BENCH static_pod_start median_ms={:.1} p99_ms={:.1} burst100_s={burst_s:.2} idle_cpu_pct={idle_cpu_pct:.2} containerd_median_ms={:.1}",
        percentile_ms(&ours, 0.5),
        percentile_ms(&ours, 0.99),
        percentile_ms(&theirs, 0.5)
    );
    Ok(())
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}
