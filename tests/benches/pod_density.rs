//! Memory it takes to hold pods: 100 sandboxes, each running one busybox `sleep`, on
//! Capstan's built-in runtime (one `capstan shim` monitor per pod plus the `capstan cri`
//! server) and on containerd + runc (the daemon, one shim per pod, the pause processes).
//! The `sleep` processes themselves are left out on both sides.
//!
//! `CAPSTAN_BENCH_PODS` (default 100) sets the number of pods.

use std::collections::HashSet;

use anyhow::{bail, ensure, Context, Result};
use tests::capstan::{CapstanCri, CriConfig};
use tests::containerd::Containerd;
use tests::cri_driver::CriDriver;
use tests::pods::bench::{build_capstan_release, count_from_env, tail};
use tests::pods::{monitor_pids, procs, PodEnv, PodImages, PodNetwork};

/// Pods started and torn down together; anything still listed is removed on drop.
struct Pods<'d> {
    driver: &'d CriDriver,
    running: Vec<(String, String)>,
}

impl<'d> Pods<'d> {
    fn start(driver: &'d CriDriver, env: &PodEnv, image: &str, count: usize) -> Result<Self> {
        driver.pull_image(image)?;
        let mut pods = Self {
            driver,
            running: Vec::with_capacity(count),
        };
        for i in 0..count {
            let pod = driver
                .start_pod(env, &format!("density-{i}"), image, &["sleep", "3600"])
                .with_context(|| format!("starting pod {i}"))?;
            pods.running.push(pod);
        }
        Ok(pods)
    }

    /// Stop and remove every pod, failing with the first error after trying all.
    fn remove(mut self) -> Result<()> {
        let mut first = None;
        for (pod, ctr) in std::mem::take(&mut self.running) {
            if let Err(e) = self.driver.teardown(&pod, &[ctr]) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for Pods<'_> {
    fn drop(&mut self) {
        for (pod, ctr) in self.running.drain(..) {
            let _ = self.driver.teardown(&pod, &[ctr]);
        }
    }
}

/// containerd's footprint: the daemon, its shims, and the shims' children that are not
/// container processes (the pause processes); in KiB of Pss.
fn containerd_footprint(
    containerd: &Containerd,
    driver: &CriDriver,
    pods: &Pods,
) -> Result<(u64, usize)> {
    let mut workload = HashSet::new();
    for (_, ctr) in &pods.running {
        let pid = driver
            .container_pid(ctr)?
            .with_context(|| format!("containerd reported no pid for container {ctr}"))?;
        workload.insert(pid);
    }
    let daemon = containerd.pid().context("containerd is not running")?;
    let mut holders = vec![i32::try_from(daemon)?];
    let shims = containerd.shim_pids();
    for &shim in &shims {
        holders.push(shim);
        holders.extend(
            procs::children(shim)
                .into_iter()
                .filter(|pid| !workload.contains(pid)),
        );
    }
    let mut total = 0;
    for pid in &holders {
        total += procs::pss_kb(*pid)?;
    }
    Ok((total, holders.len()))
}

fn measure_containerd(
    images: &PodImages,
    net: &PodNetwork,
    env: &PodEnv,
    count: usize,
) -> Result<f64> {
    let containerd = Containerd::start_pods(&[images.registry().host()], net, images.pause())?;
    let driver = CriDriver::connect(&containerd.socket())?;
    driver.pull_image(images.pause())?;
    let pods = Pods::start(&driver, env, images.busybox(), count)?;
    let (total_kb, processes) = containerd_footprint(&containerd, &driver, &pods)?;
    let shims = containerd.shim_pids().len();
    println!(
        "containerd: {count} pods held by {processes} processes ({shims} shims): total Pss {:.1} MiB, {:.0} KiB per pod",
        total_kb as f64 / 1024.0,
        total_kb as f64 / count as f64
    );
    pods.remove()?;
    Ok(total_kb as f64 / 1024.0)
}

/// Largest monitor Pss (KiB) and the server's RSS (MiB).
fn measure_capstan(
    images: &PodImages,
    net: &PodNetwork,
    env: &PodEnv,
    count: usize,
) -> Result<(u64, f64)> {
    let config = env.capstan_config(net, CriConfig::default().registry(images.registry()));
    let cri = CapstanCri::start(&config)?;
    let driver = CriDriver::connect(&cri.socket())?;
    let result = (|| {
        let pods = Pods::start(&driver, env, images.busybox(), count)?;
        let monitors = monitor_pids(&env.run_root());
        ensure!(
            monitors.len() == count,
            "{} monitor.pid files under {} for {count} pods",
            monitors.len(),
            env.run_root().display()
        );
        let mut pss = Vec::with_capacity(count);
        for pid in &monitors {
            let cmdline = procs::cmdline(*pid);
            ensure!(
                cmdline.contains("shim"),
                "monitor {pid} is not a capstan shim: {cmdline:?}"
            );
            pss.push(procs::pss_kb(*pid)?);
        }
        let config_path = cri.config_path().to_string_lossy().into_owned();
        let server = match procs::find(|c| c.contains(" cri ") && c.contains(&config_path))[..] {
            [pid] => pid,
            ref found => bail!("expected one capstan cri process, found {found:?}"),
        };
        let server_rss = procs::rss_kb(server)? as f64 / 1024.0;
        let largest = pss.iter().copied().max().unwrap_or_default();
        let total: u64 = pss.iter().sum();
        println!(
            "capstan: {count} pods: monitor Pss largest {largest} KiB, mean {:.0} KiB, total {:.1} MiB; server RSS {server_rss:.1} MiB, Pss {:.1} MiB",
            total as f64 / count as f64,
            total as f64 / 1024.0,
            procs::pss_kb(server)? as f64 / 1024.0
        );
        pods.remove()?;
        ensure!(
            monitor_pids(&env.run_root()).is_empty(),
            "monitors left under {} after removing every pod",
            env.run_root().display()
        );
        Ok((largest, server_rss))
    })();
    result.with_context(|| format!("--- capstan cri log (tail) ---\n{}", tail(&cri.log(), 30)))
}

fn main() -> Result<()> {
    tests::binaries::require_root()?;
    // A capstan that does not build fails only its own half: containerd is still measured.
    let built = build_capstan_release();
    let count = count_from_env("CAPSTAN_BENCH_PODS", 100);
    let images = PodImages::start()?;
    let net = PodNetwork::reference()?;
    let env = PodEnv::new()?;

    let containerd_mb = measure_containerd(&images, &net, &env, count).context("containerd")?;
    let (monitor_kb, server_mb) = built
        .and_then(|()| measure_capstan(&images, &net, &env, count))
        .context("Capstan's runtime could not hold the pods (containerd was measured above)")?;
    println!(
        "BENCH pod_density monitor_pss_kb={monitor_kb} server_rss_mb={server_mb:.1} containerd_total_mb={containerd_mb:.1}"
    );
    Ok(())
}
