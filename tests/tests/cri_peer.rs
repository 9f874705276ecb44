//! `capstan image` is a CRI client for any runtime: the same commands against containerd's
//! CRI plugin (the peer runtime) pull, list, inspect and remove.

use anyhow::Result;
use tests::binaries::capstan_bin;
use tests::containerd::Containerd;
use tests::image::{catalog, ManifestKind};
use tests::push::{image_ref, push_image};
use tests::registry::{Registry, RegistryOptions};

fn capstan(endpoint: &str, args: &[&str]) -> Result<String> {
    let out = std::process::Command::new(capstan_bin()?)
        .args(args)
        .env("CONTAINER_RUNTIME_ENDPOINT", endpoint)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "capstan {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn image_commands_drive_containerd_over_cri() -> Result<()> {
    let registry = Registry::start(RegistryOptions::plain())?;
    let image = catalog::busybox()?;
    push_image(
        &registry,
        "peer/busybox",
        "1.0",
        &image,
        ManifestKind::Oci,
        true,
    )?;
    let reference = image_ref(&registry, "peer/busybox", "1.0");
    let containerd = Containerd::start_cri(&[registry.host()])?;
    let endpoint = containerd.endpoint();

    let version = capstan(&endpoint, &["version", "--runtime-endpoint", &endpoint])?;
    assert!(
        version.contains("RuntimeName:       containerd"),
        "{version}"
    );

    let pulled = capstan(&endpoint, &["image", "pull", &reference])?;
    let id = image.config_descriptor(ManifestKind::Oci).digest;
    assert!(pulled.contains(&id), "{pulled}");
    let table = capstan(&endpoint, &["image", "ls"])?;
    assert!(
        table.contains(&format!("{}/peer/busybox", registry.host())) && table.contains(&id[7..20]),
        "{table}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&capstan(&endpoint, &["image", "inspect", &reference])?)?;
    assert_eq!(status["status"]["id"], id);

    capstan(&endpoint, &["image", "rm", &reference])?;
    assert!(!capstan(&endpoint, &["image", "ls", "-q"])?.contains(&id));
    Ok(())
}
