//! The store under concurrency, removal and crashes.

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Result;
use k8s_cri::v1::{ImageFsInfoRequest, ImageSpec, PullImageRequest};
use sha2::{Digest as _, Sha256};
use tests::capstan::{CapstanCri, CriConfig};
use tests::image::{catalog, ManifestKind};
use tests::push::{image_ref, push_image};
use tests::registry::{Registry, RegistryOptions};

fn pull_request(reference: &str) -> PullImageRequest {
    PullImageRequest {
        image: Some(ImageSpec {
            image: reference.to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn concurrent_pulls_of_one_image_fetch_each_layer_once() -> Result<()> {
    let registry = Registry::start(RegistryOptions::plain())?;
    let image = catalog::multi_layer()?;
    push_image(
        &registry,
        "shared/image",
        "latest",
        &image,
        ManifestKind::Oci,
        false,
    )?;
    let reference = image_ref(&registry, "shared/image", "latest");
    let cri = CapstanCri::start(&CriConfig::default().registry(&registry))?;

    let ids = tokio::runtime::Runtime::new()?.block_on(async {
        let mut a = cri.images().await?;
        let mut b = cri.images().await?;
        let (ra, rb) = tokio::join!(
            a.pull_image(pull_request(&reference)),
            b.pull_image(pull_request(&reference))
        );
        anyhow::Ok((ra?.into_inner().image_ref, rb?.into_inner().image_ref))
    })?;
    assert_eq!(ids.0, ids.1);
    for layer in &image.layers {
        assert_eq!(
            registry.blob_get_count(&layer.digest)?,
            1,
            "layer {} fetched twice",
            layer.digest
        );
    }
    assert_eq!(cri.store_entries("snapshots").len(), image.layers.len());
    Ok(())
}

fn image_fs_bytes(cri: &CapstanCri) -> Result<(u64, u64)> {
    tokio::runtime::Runtime::new()?.block_on(async {
        let info = cri
            .images()
            .await?
            .image_fs_info(ImageFsInfoRequest {})
            .await?
            .into_inner();
        let fs = &info.image_filesystems[0];
        anyhow::Ok((
            fs.used_bytes.as_ref().map_or(0, |v| v.value),
            fs.inodes_used.as_ref().map_or(0, |v| v.value),
        ))
    })
}

#[test]
fn removing_an_image_frees_only_what_no_other_image_uses() -> Result<()> {
    let registry = Registry::start(RegistryOptions::plain())?;
    let base = catalog::busybox()?;
    let derived = catalog::multi_layer()?; // busybox's layer plus three of its own
    assert_eq!(derived.layers[0].diff_id, base.layers[0].diff_id);
    push_image(&registry, "base", "latest", &base, ManifestKind::Oci, false)?;
    push_image(
        &registry,
        "derived",
        "latest",
        &derived,
        ManifestKind::Oci,
        false,
    )?;
    let cri = CapstanCri::start(&CriConfig::default().registry(&registry))?;
    assert_eq!(image_fs_bytes(&cri)?, (0, 0));

    cri.cli_ok(&["image", "pull", &image_ref(&registry, "base", "latest")])?;
    let (base_bytes, base_inodes) = image_fs_bytes(&cri)?;
    assert!(
        base_bytes > 1_000_000 && base_inodes > 100,
        "{base_bytes} bytes, {base_inodes} inodes"
    );
    cri.cli_ok(&["image", "pull", &image_ref(&registry, "derived", "latest")])?;
    assert_eq!(cri.store_entries("snapshots").len(), derived.layers.len());
    let (both_bytes, _) = image_fs_bytes(&cri)?;
    assert!(both_bytes > base_bytes);

    cri.cli_ok(&["image", "rm", &image_ref(&registry, "derived", "latest")])?;
    assert_eq!(
        cri.store_entries("snapshots"),
        vec![base.layers[0].diff_id[7..].to_string()]
    );
    assert_eq!(
        cri.store_entries("blobs/sha256").len(),
        3,
        "manifest, config and one layer remain"
    );
    assert_eq!(image_fs_bytes(&cri)?.0, base_bytes);
    assert!(cri
        .store_entries("blobs/sha256")
        .contains(&base.layers[0].digest[7..].to_string()));

    cri.cli_ok(&["image", "rm", &image_ref(&registry, "base", "latest")])?;
    for dir in ["snapshots", "blobs/sha256", "images"] {
        assert!(
            cri.store_entries(dir).is_empty(),
            "{dir} not empty: {:?}",
            cri.store_entries(dir)
        );
    }
    assert_eq!(image_fs_bytes(&cri)?, (0, 0));
    // CRI: removing an image that is not there succeeds.
    cri.cli_ok(&["image", "rm", &image_ref(&registry, "base", "latest")])?;
    Ok(())
}

/// Every blob's content matches its name, every record's blobs and snapshots exist.
fn assert_store_consistent(cri: &CapstanCri) -> Result<()> {
    let root = cri.image_root();
    for name in cri.store_entries("blobs/sha256") {
        let bytes = fs::read(root.join("blobs/sha256").join(&name))?;
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            name,
            "blob content does not match its name"
        );
    }
    for name in cri.store_entries("snapshots") {
        assert!(
            root.join("snapshots")
                .join(&name)
                .join("usage.json")
                .is_file(),
            "snapshot {name} half-made"
        );
    }
    for name in cri.store_entries("images") {
        let record: serde_json::Value =
            serde_json::from_slice(&fs::read(root.join("images").join(&name))?)?;
        for layer in record["layers"].as_array().into_iter().flatten() {
            let digest = layer["digest"].as_str().unwrap_or_default();
            let diff_id = layer["diff_id"].as_str().unwrap_or_default();
            assert!(
                root.join("blobs/sha256").join(&digest[7..]).is_file(),
                "record names missing blob {digest}"
            );
            assert!(root
                .join("snapshots")
                .join(&diff_id[7..])
                .join("usage.json")
                .is_file());
        }
    }
    Ok(())
}

#[test]
fn kill_9_during_pulls_leaves_nothing_half_visible_and_the_next_pull_finishes() -> Result<()> {
    let registry = Registry::start(RegistryOptions::plain())?;
    let image = catalog::big(24 << 20)?;
    push_image(&registry, "big", "latest", &image, ManifestKind::Oci, false)?;
    let reference = image_ref(&registry, "big", "latest");
    let mut cri = CapstanCri::start(
        &CriConfig::default()
            .registry(&registry)
            .line("maxConcurrentDownloads: 2"),
    )?;

    for delay_ms in [30, 120, 300, 700] {
        let mut pull = Command::new(tests::binaries::capstan_bin()?)
            .args([
                "image",
                "pull",
                &reference,
                "--runtime-endpoint",
                &cri.endpoint(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(delay_ms));
        cri.kill();
        let _ = pull.wait();
        cri.restart()?;

        assert!(
            cri.scratch_leftovers().is_empty(),
            "scratch left after restart (delay {delay_ms} ms): {:?}\n{}",
            cri.scratch_leftovers(),
            cri.log()
        );
        let listed = cri.cli_ok(&["image", "ls", "-q"])?;
        // Either the pull completed before the kill, or the image is not visible at all.
        if !listed.trim().is_empty() {
            assert_eq!(
                listed.trim(),
                image.config_descriptor(ManifestKind::Oci).digest
            );
        }
        assert_store_consistent(&cri)?;
        if !listed.trim().is_empty() {
            cri.cli_ok(&["image", "rm", &reference])?;
        }
    }
    cri.cli_ok(&["image", "pull", &reference])?;
    assert_store_consistent(&cri)?;
    assert_eq!(cri.store_entries("snapshots").len(), image.layers.len());
    Ok(())
}
