//! Pull + unpack of a ~100 MB multi-layer image from a local registry into an empty store:
//! Capstan's `capstan image pull` against containerd's `ctr images pull` (which also unpacks
//! into its overlayfs snapshotter), alternating runs in one process on one registry.

use std::time::Instant;

use anyhow::Result;
use tests::capstan::{CapstanCri, CriConfig};
use tests::containerd::Containerd;
use tests::image::{catalog, ManifestKind};
use tests::push::{image_ref, push_image};
use tests::registry::{Registry, RegistryOptions};

const IMAGE_BYTES: u64 = 100 << 20;

fn main() -> Result<()> {
    build_capstan()?;
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let registry = Registry::start(RegistryOptions::plain())?;
    let image = catalog::big(IMAGE_BYTES)?;
    push_image(
        &registry,
        "bench/big",
        "latest",
        &image,
        ManifestKind::Oci,
        false,
    )?;
    let reference = image_ref(&registry, "bench/big", "latest");
    println!(
        "image: {reference}, {} layers, {:.1} MB compressed",
        image.layers.len(),
        image.total_layer_bytes() as f64 / 1e6
    );

    let mut capstan_ms = Vec::new();
    let mut containerd_ms = Vec::new();
    for run in 0..runs {
        let cri = CapstanCri::start(&CriConfig::default().registry(&registry))?;
        let started = Instant::now();
        cri.cli_ok(&["image", "pull", &reference])?;
        capstan_ms.push(started.elapsed().as_secs_f64() * 1e3);
        drop(cri);

        let containerd = Containerd::start()?;
        let started = Instant::now();
        containerd.ctr(&["-n", "bench", "images", "pull", "--plain-http", &reference])?;
        containerd_ms.push(started.elapsed().as_secs_f64() * 1e3);
        drop(containerd);
        println!(
            "run {run}: capstan {:.0} ms, containerd {:.0} ms",
            capstan_ms[run], containerd_ms[run]
        );
    }
    let capstan = median(&mut capstan_ms);
    let containerd = median(&mut containerd_ms);
    println!(
        "BENCH image_pull capstan_median_ms={capstan:.0} containerd_median_ms={containerd:.0} ratio={:.2}",
        capstan / containerd
    );
    Ok(())
}

/// The bench drives the `capstan` binary of this profile; cargo does not build another
/// package's binaries for a bench, so build it (a no-op when up to date).
fn build_capstan() -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = std::process::Command::new(cargo)
        .args(["build", "--release", "-p", "agent", "--bin", "capstan"])
        .status()?;
    anyhow::ensure!(status.success(), "building capstan failed");
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
