//! Pulling through `capstan cri` from a real registry: manifests and indexes of both
//! flavours, every layer compression, and the unpacked layers checked through a real
//! overlayfs mount.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};
use serde_json::Value;
use tests::capstan::{CapstanCri, CriConfig};
use tests::cleanup::TempRoot;
use tests::image::{catalog, Image, ManifestKind};
use tests::push::{image_ref, push_image};
use tests::registry::{Registry, RegistryOptions};

fn setup() -> Result<(Registry, CapstanCri)> {
    let registry = Registry::start(RegistryOptions::plain())?;
    let cri = CapstanCri::start(&CriConfig::default().registry(&registry))?;
    Ok((registry, cri))
}

fn config_digest(image: &Image) -> String {
    image.config_descriptor(ManifestKind::Oci).digest
}

fn inspect(cri: &CapstanCri, reference: &str) -> Result<Value> {
    Ok(serde_json::from_str(
        &cri.cli_ok(&["image", "inspect", reference])?,
    )?)
}

#[test]
fn oci_index_pull_picks_the_host_platform_and_lists_like_crictl() -> Result<()> {
    let (registry, cri) = setup()?;
    let image = catalog::busybox()?;
    let index_digest = push_image(
        &registry,
        "demo/busybox",
        "1.0",
        &image,
        ManifestKind::Oci,
        true,
    )?;
    let reference = image_ref(&registry, "demo/busybox", "1.0");

    let out = cri.cli_ok(&["image", "pull", &reference])?;
    assert_eq!(
        out.trim(),
        format!("Image is up to date for {}", config_digest(&image))
    );

    let table = cri.cli_ok(&["image", "ls"])?;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(cells[0], format!("{}/demo/busybox", registry.host()));
    assert_eq!(cells[1], "1.0");
    assert_eq!(cells[2], &config_digest(&image)["sha256:".len()..][..13]);

    let status = inspect(&cri, &reference)?;
    assert_eq!(status["status"]["id"], config_digest(&image));
    assert_eq!(
        status["status"]["repo_digests"][0],
        format!("{}/demo/busybox@{index_digest}", registry.host())
    );
    assert_eq!(status["info"]["imageSpec"]["config"]["Cmd"][0], "sh");

    // ListImages filters by reference, short name or ID.
    assert_eq!(
        cri.cli_ok(&["image", "ls", "-q", &reference])?.trim(),
        config_digest(&image)
    );
    assert_eq!(
        cri.cli_ok(&["image", "ls", "-q", &config_digest(&image)])?
            .trim(),
        config_digest(&image)
    );
    assert!(cri
        .cli_ok(&["image", "ls", "-q", "busybox"])?
        .trim()
        .is_empty());

    // By digest, and by image ID: the same image, nothing fetched twice.
    let by_digest = format!("{}/demo/busybox@{index_digest}", registry.host());
    cri.cli_ok(&["image", "pull", &by_digest])?;
    assert_eq!(cri.cli_ok(&["image", "ls", "-q"])?.lines().count(), 1);
    assert_eq!(
        inspect(&cri, &config_digest(&image)[7..19])?["status"]["id"],
        config_digest(&image)
    );
    for layer in &image.layers {
        assert_eq!(
            registry.blob_get_count(&layer.digest)?,
            1,
            "layer {} fetched again",
            layer.digest
        );
    }
    Ok(())
}

#[test]
fn docker_manifest_list_and_plain_manifests_pull() -> Result<()> {
    let (registry, cri) = setup()?;
    let image = catalog::multi_layer()?;
    push_image(
        &registry,
        "docker/list",
        "v2",
        &image,
        ManifestKind::Docker,
        true,
    )?;
    push_image(
        &registry,
        "docker/plain",
        "v2",
        &image,
        ManifestKind::Docker,
        false,
    )?;
    push_image(
        &registry,
        "oci/plain",
        "v1",
        &image,
        ManifestKind::Oci,
        false,
    )?;
    for (repo, tag) in [
        ("docker/list", "v2"),
        ("docker/plain", "v2"),
        ("oci/plain", "v1"),
    ] {
        let out = cri.cli_ok(&["image", "pull", &image_ref(&registry, repo, tag)])?;
        assert!(out.contains(&config_digest(&image)), "{repo}: {out}");
    }
    // One image with three names.
    let status = inspect(&cri, &image_ref(&registry, "docker/list", "v2"))?;
    assert_eq!(
        status["status"]["repo_tags"].as_array().map(Vec::len),
        Some(3),
        "{status}"
    );
    Ok(())
}

#[test]
fn missing_images_and_bad_references_are_clear_errors() -> Result<()> {
    let (registry, cri) = setup()?;
    let err = cri.cli_err(&["image", "pull", &image_ref(&registry, "no/such", "tag")])?;
    assert!(
        err.contains("no/such") && err.to_lowercase().contains("unknown"),
        "{err}"
    );
    let err = cri.cli_err(&["image", "pull", "Not A Reference"])?;
    assert!(err.contains("invalid image reference"), "{err}");
    let err = cri.cli_err(&["image", "inspect", "absent:latest"])?;
    assert!(err.contains("not found"), "{err}");
    assert!(cri.scratch_leftovers().is_empty());
    Ok(())
}

/// Mount the image's snapshots as overlayfs lowerdirs (top first) and return the mount.
struct OverlayView {
    dir: TempRoot,
}

impl OverlayView {
    fn mount(cri: &CapstanCri, status: &Value) -> Result<Self> {
        let layers = status["info"]["layers"]
            .as_array()
            .context("no layers in verbose status")?;
        let lowers: Vec<String> = layers
            .iter()
            .rev()
            .map(|l| {
                let diff_id = l["diff_id"].as_str().unwrap_or_default();
                cri.image_root()
                    .join("snapshots")
                    .join(diff_id.trim_start_matches("sha256:"))
                    .join("fs")
                    .display()
                    .to_string()
            })
            .collect();
        let dir = TempRoot::new("overlay")?;
        let ok = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!("ro,lowerdir={}", lowers.join(":")))
            .arg(dir.path())
            .status()?
            .success();
        anyhow::ensure!(ok, "overlay mount failed");
        Ok(Self { dir })
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
}

impl Drop for OverlayView {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn layers_stack_in_overlayfs_with_whiteouts_and_opaque_dirs() -> Result<()> {
    let (registry, cri) = setup()?;
    let image = catalog::multi_layer()?;
    let compressions: Vec<String> = image
        .layers
        .iter()
        .map(|l| format!("{:?}", l.compression))
        .collect();
    for c in ["Gzip", "Zstd", "None"] {
        assert!(
            compressions.iter().any(|x| x == c),
            "multi_layer lacks a {c} layer"
        );
    }
    push_image(
        &registry,
        "multi/layer",
        "latest",
        &image,
        ManifestKind::Oci,
        false,
    )?;
    let reference = image_ref(&registry, "multi/layer", "latest");
    cri.cli_ok(&["image", "pull", &reference])?;

    let view = OverlayView::mount(&cri, &inspect(&cri, &reference)?)?;
    for (path, expected) in catalog::multi_layer_expected() {
        match expected {
            Some(content) => {
                assert_eq!(std::fs::read_to_string(view.path(path))?, content, "{path}")
            }
            None => assert!(
                std::fs::symlink_metadata(view.path(path)).is_err(),
                "{path} should be hidden"
            ),
        }
    }
    assert!(view.path("bin/busybox").is_file());
    let out = Command::new("chroot")
        .arg(view.dir.path())
        .args(["/bin/busybox", "echo", "hi"])
        .output()?;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hi");
    Ok(())
}
