//! Pod start latency as kubelet sees it: RunPodSandbox + CreateContainer + StartContainer
//! until the container runs, on Capstan's built-in runtime (`capstan cri`) against
//! containerd + runc, alternating cycles in one run with the same client code and the same
//! CNI conflist (the reference bridge, host-local and portmap plugins).
//!
//! `CAPSTAN_BENCH_CYCLES` (default 50) sets the measured cycles per runtime.

use std::time::Duration;

use anyhow::{Context, Result};
use tests::capstan::{CapstanCri, CriConfig};
use tests::containerd::Containerd;
use tests::cri_driver::CriDriver;
use tests::pods::bench::{build_capstan_release, count_from_env, percentile_ms, tail};
use tests::pods::{PodEnv, PodImages, PodNetwork};

/// Cycles per runtime run before measuring (image and CNI caches, first bridge setup).
const WARM_UP: usize = 3;

fn main() -> Result<()> {
    tests::binaries::require_root()?;
    // A capstan that does not build fails only its own half: containerd is still measured.
    let built = build_capstan_release();
    let cycles = count_from_env("CAPSTAN_BENCH_CYCLES", 50);
    let images = PodImages::start()?;
    let net = PodNetwork::reference()?;
    let env = PodEnv::new()?;
    println!(
        "network {} ({}), image {}",
        net.name(),
        net.subnet(),
        images.busybox()
    );

    let containerd = Containerd::start_pods(&[images.registry().host()], &net, images.pause())?;
    let peer = CriDriver::connect(&containerd.socket())?;
    prepare(&peer, &env, &images).context("containerd")?;

    let capstan = built.and_then(|()| start_capstan(&images, &net, &env));
    let mut theirs = Vec::with_capacity(cycles);
    let mut ours = Vec::with_capacity(cycles);
    match &capstan {
        Ok((_, driver)) => {
            println!(
                "capstan watches containers by {:?}, containerd by {:?}",
                driver.watch(),
                peer.watch()
            );
            for _ in 0..cycles {
                ours.push(
                    driver
                        .cycle(&env, images.busybox())
                        .context("capstan cycle")?,
                );
                theirs.push(
                    peer.cycle(&env, images.busybox())
                        .context("containerd cycle")?,
                );
            }
        }
        Err(_) => {
            for _ in 0..cycles {
                theirs.push(
                    peer.cycle(&env, images.busybox())
                        .context("containerd cycle")?,
                );
            }
        }
    }
    report("containerd", &theirs);
    let (cri, _driver) = capstan
        .context("Capstan's runtime cannot run pods yet, so only containerd was measured")?;
    report("capstan", &ours);
    let (median, p99, peer_median) = (
        percentile_ms(&ours, 0.5),
        percentile_ms(&ours, 0.99),
        percentile_ms(&theirs, 0.5),
    );
    drop(cri);
    println!(
        "BENCH sandbox_start median_ms={median:.1} p99_ms={p99:.1} containerd_median_ms={peer_median:.1} ratio={:.2}",
        median / peer_median
    );
    Ok(())
}

/// `capstan cri` on the bench's network and a driver for it, warmed up.
fn start_capstan(
    images: &PodImages,
    net: &PodNetwork,
    env: &PodEnv,
) -> Result<(CapstanCri, CriDriver)> {
    let config = env.capstan_config(net, CriConfig::default().registry(images.registry()));
    let cri = CapstanCri::start(&config)?;
    let driver = CriDriver::connect(&cri.socket())?;
    prepare(&driver, env, images)
        .with_context(|| format!("--- capstan cri log (tail) ---\n{}", tail(&cri.log(), 30)))?;
    Ok((cri, driver))
}

/// Pull the images and run the warm-up cycles.
fn prepare(driver: &CriDriver, env: &PodEnv, images: &PodImages) -> Result<()> {
    driver.pull_image(images.busybox())?;
    driver.pull_image(images.pause())?;
    for _ in 0..WARM_UP {
        driver.cycle(env, images.busybox())?;
    }
    Ok(())
}

fn report(runtime: &str, cycles: &[Duration]) {
    println!(
        "{runtime}: {} cycles, median {:.1} ms, p99 {:.1} ms, min {:.1} ms, max {:.1} ms",
        cycles.len(),
        percentile_ms(cycles, 0.5),
        percentile_ms(cycles, 0.99),
        percentile_ms(cycles, 0.0),
        percentile_ms(cycles, 1.0)
    );
}
