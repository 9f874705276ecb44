//! Hostile and broken images and registries, each against the real registry: every one is
//! refused with an error naming what is wrong (or contained, where the issue says to keep
//! it), nothing is written outside the snapshot directory, and the store stays consistent.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Result;
use tests::capstan::{CapstanCri, CriConfig};
use tests::cleanup::TempRoot;
use tests::corrupt;
use tests::faults::FaultProxy;
use tests::image::{catalog, hostile, Image, ManifestKind};
use tests::push::{image_ref, push_image};
use tests::registry::{Registry, RegistryOptions};

struct Case {
    registry: Registry,
    cri: CapstanCri,
    image: Image,
    reference: String,
}

impl Case {
    fn new(image: Image) -> Result<Self> {
        Self::with_config(image, CriConfig::default())
    }

    fn with_config(image: Image, config: CriConfig) -> Result<Self> {
        let registry = Registry::start(RegistryOptions::plain())?;
        push_image(
            &registry,
            "hostile/image",
            "latest",
            &image,
            ManifestKind::Oci,
            false,
        )?;
        let cri = CapstanCri::start(&config.registry(&registry))?;
        let reference = image_ref(&registry, "hostile/image", "latest");
        Ok(Self {
            registry,
            cri,
            image,
            reference,
        })
    }

    fn pull_err(&self) -> Result<String> {
        self.cri.cli_err(&["image", "pull", &self.reference])
    }

    /// Digest of the image's top (hostile) layer blob.
    fn top_digest(&self) -> String {
        self.image
            .layers
            .last()
            .map(|l| l.digest.clone())
            .unwrap_or_default()
    }

    /// The snapshot directory of the image's top layer.
    fn top_snapshot(&self) -> PathBuf {
        let top = self
            .image
            .layers
            .last()
            .map(|l| l.diff_id[7..].to_owned())
            .unwrap_or_default();
        self.cri.image_root().join("snapshots").join(top).join("fs")
    }

    /// After a refused pull: no image listed, no scratch left, no snapshot of the bad layer.
    fn assert_nothing_stored(&self) -> Result<()> {
        assert!(
            self.cri.cli_ok(&["image", "ls", "-q"])?.trim().is_empty(),
            "a refused image is listed"
        );
        assert!(
            self.cri.scratch_leftovers().is_empty(),
            "scratch left: {:?}",
            self.cri.scratch_leftovers()
        );
        assert!(
            !self.top_snapshot().exists(),
            "the refused layer left a snapshot"
        );
        assert!(self.cri.store_entries("images").is_empty());
        Ok(())
    }
}

/// Files named `name` anywhere under `dir`.
fn find(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_name() == name {
                found.push(path.clone());
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            }
        }
    }
    found
}

#[test]
fn dot_dot_entries_are_refused_and_write_nothing_outside() -> Result<()> {
    let (image, name) = hostile::dotdot()?;
    let case = Case::new(image)?;
    let err = case.pull_err()?;
    assert!(err.contains("escapes") && err.contains(&name), "{err}");
    assert!(find(&case.cri.scratch(), &name).is_empty());
    assert!(!Path::new("/").join(&name).exists() && !std::env::temp_dir().join(&name).exists());
    case.assert_nothing_stored()
}

#[test]
fn absolute_paths_land_inside_the_snapshot() -> Result<()> {
    let before = Path::new(hostile::ABSOLUTE_PATH).exists();
    let case = Case::new(hostile::absolute()?)?;
    case.cri.cli_ok(&["image", "pull", &case.reference])?;
    assert!(case
        .top_snapshot()
        .join(hostile::ABSOLUTE_PATH.trim_start_matches('/'))
        .is_file());
    assert_eq!(
        Path::new(hostile::ABSOLUTE_PATH).exists(),
        before,
        "wrote to the host's /"
    );
    Ok(())
}

#[test]
fn writing_through_a_symlink_to_outside_is_refused() -> Result<()> {
    let outside = TempRoot::new("outside")?;
    let case = Case::new(hostile::symlink_escape(outside.path())?)?;
    let err = case.pull_err()?;
    assert!(
        err.contains("symlink") && err.contains("evil/pwned"),
        "{err}"
    );
    assert_eq!(
        fs::read_dir(outside.path())?.count(),
        0,
        "something was written outside"
    );
    case.assert_nothing_stored()
}

#[test]
fn hard_links_to_outside_the_layer_are_refused() -> Result<()> {
    let links_before = fs::metadata("/etc/passwd")?.nlink();
    let case = Case::new(hostile::hardlink_escape()?)?;
    let err = case.pull_err()?;
    assert!(err.contains("hl"), "{err}");
    assert_eq!(
        fs::metadata("/etc/passwd")?.nlink(),
        links_before,
        "a host file gained a link"
    );
    case.assert_nothing_stored()
}

#[test]
fn device_nodes_are_skipped_unless_enabled() -> Result<()> {
    let case = Case::new(hostile::device_nodes()?)?;
    case.cri.cli_ok(&["image", "pull", &case.reference])?;
    assert!(
        !case.top_snapshot().join("dev-null").exists() && !case.top_snapshot().join("sda").exists()
    );

    let case = Case::with_config(
        hostile::device_nodes()?,
        CriConfig::default().line("createDeviceNodes: true"),
    )?;
    case.cri.cli_ok(&["image", "pull", &case.reference])?;
    let null = fs::symlink_metadata(case.top_snapshot().join("dev-null"))?;
    assert!(null.file_type().is_char_device() && null.rdev() == libc_makedev(1, 3));
    assert!(fs::symlink_metadata(case.top_snapshot().join("sda"))?
        .file_type()
        .is_block_device());
    Ok(())
}

fn libc_makedev(major: u64, minor: u64) -> u64 {
    (major << 8) | minor
}

#[test]
fn setuid_bits_are_kept_inside_the_snapshot() -> Result<()> {
    let case = Case::new(hostile::setuid()?)?;
    case.cri.cli_ok(&["image", "pull", &case.reference])?;
    let meta = fs::metadata(case.top_snapshot().join("bin/suid"))?;
    assert_eq!(meta.permissions().mode() & 0o7777, 0o4755);
    assert_eq!(meta.uid(), 0);
    Ok(())
}

#[test]
fn tar_bombs_hit_the_configured_limits() -> Result<()> {
    let case = Case::with_config(
        hostile::tar_bomb_entries(5000)?,
        CriConfig::default().line("unpackLimits:\n  maxLayerEntries: 1000"),
    )?;
    let err = case.pull_err()?;
    assert!(err.contains("max_entries") && err.contains("1000"), "{err}");
    case.assert_nothing_stored()?;

    let case = Case::new(hostile::tar_bomb_declared_size()?)?;
    let err = case.pull_err()?;
    assert!(err.contains("bomb-1tib"), "{err}");
    case.assert_nothing_stored()
}

#[test]
fn a_truncated_layer_is_refused() -> Result<()> {
    let case = Case::new(hostile::truncated()?)?;
    let err = case.pull_err()?;
    assert!(err.contains("truncated or corrupt"), "{err}");
    assert!(err.contains(&case.top_digest()), "{err}");
    case.assert_nothing_stored()
}

#[test]
fn a_blob_whose_bytes_do_not_match_its_digest_is_refused() -> Result<()> {
    let case = Case::new(catalog::multi_layer()?)?;
    let top = case.top_digest();
    corrupt::flip_blob_byte(&case.registry, &top)?;
    let err = case.pull_err()?;
    assert!(
        err.contains(&top) && err.to_lowercase().contains("digest"),
        "{err}"
    );
    case.assert_nothing_stored()?;
    assert!(!case
        .cri
        .store_entries("blobs/sha256")
        .contains(&top[7..].to_string()));

    let config = case.image.config_descriptor(ManifestKind::Oci).digest;
    corrupt::corrupt_blob(&case.registry, &config, b"{\"not\":\"the config\"}")?;
    let err = case.pull_err()?;
    assert!(err.contains(&config), "{err}");
    Ok(())
}

#[test]
fn a_manifest_naming_a_missing_blob_is_refused() -> Result<()> {
    let case = Case::new(catalog::multi_layer()?)?;
    let top = case.top_digest();
    corrupt::make_blob_missing(&case.registry, "hostile/image", &top)?;
    let err = case.pull_err()?;
    assert!(err.contains(&top), "{err}");
    case.assert_nothing_stored()
}

#[test]
fn a_manifest_that_is_not_json_is_refused() -> Result<()> {
    // The registry itself refuses to serve a corrupted manifest (500): that must be a clear error.
    let case = Case::new(catalog::busybox()?)?;
    let digest = case.image.manifest_digest(ManifestKind::Oci);
    corrupt::corrupt_manifest(&case.registry, &digest, b"<html>not a manifest</html>")?;
    let err = case.pull_err()?;
    assert!(err.contains("hostile/image"), "{err}");
    case.assert_nothing_stored()?;

    // Served with 200 (through a proxy, as a broken mirror or middlebox would): a parse error.
    let registry = Registry::start(RegistryOptions::plain())?;
    push_image(
        &registry,
        "hostile/image",
        "latest",
        &catalog::busybox()?,
        ManifestKind::Oci,
        false,
    )?;
    let proxy = FaultProxy::start(&registry)?;
    proxy.serve_manifest(
        "hostile/image",
        "latest",
        "application/vnd.oci.image.manifest.v1+json",
        b"<html>not a manifest</html>".to_vec(),
    );
    let cri = CapstanCri::start(&CriConfig::default().insecure(&proxy.host()))?;
    let err = cri.cli_err(&[
        "image",
        "pull",
        &format!("{}/hostile/image:latest", proxy.host()),
    ])?;
    assert!(
        err.contains("not valid JSON") && err.contains("manifest"),
        "{err}"
    );
    assert!(cri.scratch_leftovers().is_empty());
    Ok(())
}

#[test]
fn a_blob_longer_than_its_descriptor_is_refused() -> Result<()> {
    let case = Case::new(catalog::multi_layer()?)?;
    let top = case.top_digest();
    let mut longer = fs::read(case.registry.blob_data_path(&top))?;
    longer.extend_from_slice(&[0u8; 4096]);
    corrupt::corrupt_blob(&case.registry, &top, &longer)?;
    let err = case.pull_err()?;
    assert!(err.contains("size mismatch") && err.contains(&top), "{err}");
    case.assert_nothing_stored()
}

#[test]
fn a_connection_dropped_mid_layer_fails_cleanly_and_the_next_pull_succeeds() -> Result<()> {
    let registry = Registry::start(RegistryOptions::plain())?;
    let image = catalog::busybox()?;
    push_image(
        &registry,
        "flaky/busybox",
        "latest",
        &image,
        ManifestKind::Oci,
        false,
    )?;
    let proxy = FaultProxy::start(&registry)?;
    let layer = &image.layers[0].digest;
    proxy.inject(
        Some("GET"),
        &format!("/v2/flaky/busybox/blobs/{layer}"),
        tests::faults::Fault::TruncateBody(100_000),
        Some(1),
    );
    let cri = CapstanCri::start(&CriConfig::default().insecure(&proxy.host()))?;
    let reference = format!("{}/flaky/busybox:latest", proxy.host());
    let err = cri.cli_err(&["image", "pull", &reference])?;
    assert!(err.contains(layer.as_str()), "{err}");
    assert!(cri.cli_ok(&["image", "ls", "-q"])?.trim().is_empty());
    assert!(
        cri.scratch_leftovers().is_empty(),
        "{:?}",
        cri.scratch_leftovers()
    );
    assert!(cri.store_entries("snapshots").is_empty());

    cri.cli_ok(&["image", "pull", &reference])?;
    assert_eq!(cri.store_entries("snapshots").len(), 1);
    Ok(())
}
