//! `capstan image import`: OCI image layouts and `docker save` archives.

use anyhow::Result;
use tests::archive;
use tests::capstan::{CapstanCri, CriConfig};
use tests::image::{catalog, Index, ManifestKind};

#[test]
fn oci_layout_archives_import_with_their_names() -> Result<()> {
    let cri = CapstanCri::start(&CriConfig::default())?;
    let image = catalog::multi_layer()?;
    let path = cri.scratch().join("image.tar");
    archive::write_oci_layout_tar(&image, "registry.example/team/app:1.2", &path)?;
    let out = cri.cli_ok(&["image", "import", &path.display().to_string()])?;
    assert!(out.contains("registry.example/team/app:1.2"), "{out}");
    let table = cri.cli_ok(&["image", "ls"])?;
    assert!(
        table.contains("registry.example/team/app") && table.contains("1.2"),
        "{table}"
    );
    assert_eq!(cri.store_entries("snapshots").len(), image.layers.len());

    // A multi-platform layout imports the host's image; importing again changes nothing.
    let index = Index::with_decoy(catalog::busybox()?)?;
    let path = cri.scratch().join("index.tar");
    archive::write_oci_index_layout_tar(&index, "registry.example/multi:latest", &path)?;
    cri.cli_ok(&["image", "import", &path.display().to_string()])?;
    cri.cli_ok(&["image", "import", &path.display().to_string()])?;
    let status: serde_json::Value = serde_json::from_str(&cri.cli_ok(&[
        "image",
        "inspect",
        "registry.example/multi:latest",
    ])?)?;
    assert_eq!(
        status["status"]["id"],
        catalog::busybox()?
            .config_descriptor(ManifestKind::Oci)
            .digest
    );
    assert_eq!(cri.cli_ok(&["image", "ls", "-q"])?.lines().count(), 2);
    Ok(())
}

#[test]
fn docker_save_archives_import_and_normalise_names() -> Result<()> {
    let cri = CapstanCri::start(&CriConfig::default())?;
    let image = catalog::busybox()?;
    let path = cri.scratch().join("saved.tar");
    archive::write_docker_save_tar(&image, &["busybox:saved"], &path)?;
    cri.cli_ok(&["image", "import", &path.display().to_string()])?;
    let status: serde_json::Value = serde_json::from_str(&cri.cli_ok(&[
        "image",
        "inspect",
        "docker.io/library/busybox:saved",
    ])?)?;
    assert_eq!(
        status["status"]["id"],
        image.config_descriptor(ManifestKind::Oci).digest
    );
    assert_eq!(status["info"]["imageSpec"]["config"]["Cmd"][0], "sh");
    Ok(())
}

#[test]
fn broken_archives_are_clear_errors() -> Result<()> {
    let cri = CapstanCri::start(&CriConfig::default())?;
    let path = cri.scratch().join("junk.tar");
    std::fs::write(&path, b"this is not a tar archive at all")?;
    let err = cri.cli_err(&["image", "import", &path.display().to_string()])?;
    assert!(err.contains("junk.tar"), "{err}");

    // A layout whose layer blob was altered: the digest check names it.
    let image = catalog::busybox()?;
    let dir = tests::cleanup::TempRoot::new("layout")?;
    archive::write_oci_layout_dir(&image, "x/y:z", dir.path())?;
    let layer = dir.join("blobs/sha256").join(&image.layers[0].digest[7..]);
    let mut bytes = std::fs::read(&layer)?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&layer, bytes)?;
    let tar_path = cri.scratch().join("altered.tar");
    let status = std::process::Command::new("tar")
        .arg("-C")
        .arg(dir.path())
        .arg("-cf")
        .arg(&tar_path)
        .arg(".")
        .status()?;
    assert!(status.success());
    let err = cri.cli_err(&["image", "import", &tar_path.display().to_string()])?;
    assert!(err.contains(&image.layers[0].digest), "{err}");
    assert!(cri.cli_ok(&["image", "ls", "-q"])?.trim().is_empty());
    assert!(
        cri.scratch_leftovers().is_empty(),
        "{:?}",
        cri.scratch_leftovers()
    );
    Ok(())
}
