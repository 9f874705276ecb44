//! Image archives for `capstan image import`: OCI image layouts (tar or directory) and `docker save` tars.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use crate::image::{media, sha256_digest, Descriptor, Image, Index, ManifestKind};
use crate::registry::digest_hex;

/// Annotation naming an image in an OCI layout's index.json.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Files of an OCI layout: `(relative path, bytes)`.
type Files<'a> = Vec<(String, std::borrow::Cow<'a, [u8]>)>;

/// Writes `image` (OCI manifest) as an OCI image layout tar whose index.json names it `ref_name`.
pub fn write_oci_layout_tar(image: &Image, ref_name: &str, out: &Path) -> Result<()> {
    write_tar(
        out,
        &oci_layout_files(
            &[image],
            image.manifest_descriptor(ManifestKind::Oci),
            ref_name,
            None,
        ),
    )
}

/// Writes `index` as an OCI image layout tar: index.json → nested OCI index (named `ref_name`) → manifests.
pub fn write_oci_index_layout_tar(index: &Index, ref_name: &str, out: &Path) -> Result<()> {
    let imgs: Vec<&Image> = index.images.iter().collect();
    let bytes = index.manifest_json(ManifestKind::Oci);
    write_tar(
        out,
        &oci_layout_files(
            &imgs,
            index.descriptor(ManifestKind::Oci),
            ref_name,
            Some(bytes),
        ),
    )
}

/// Writes `image` as an unpacked OCI image layout directory (e.g. for `skopeo copy oci:DIR`).
pub fn write_oci_layout_dir(image: &Image, ref_name: &str, dir: &Path) -> Result<()> {
    let files = oci_layout_files(
        &[image],
        image.manifest_descriptor(ManifestKind::Oci),
        ref_name,
        None,
    );
    for (rel, bytes) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The files of an OCI layout whose index.json holds `top` (annotated `ref_name`); `top_bytes` is an extra
/// top-level blob (a nested index).
fn oci_layout_files<'a>(
    images: &[&'a Image],
    top: Descriptor,
    ref_name: &str,
    top_bytes: Option<Vec<u8>>,
) -> Files<'a> {
    let mut top = top;
    top.platform = None;
    top.annotations = Some(BTreeMap::from([(
        REF_NAME_ANNOTATION.to_string(),
        ref_name.to_string(),
    )]));
    let index = json!({ "schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": [top] });
    let mut files: Files<'a> = vec![
        (
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec().into(),
        ),
        (
            "index.json".into(),
            serde_json::to_vec(&index).expect("index serialises").into(),
        ),
    ];
    let mut seen = BTreeSet::new();
    let mut blob = |files: &mut Files<'a>, digest: String, bytes: std::borrow::Cow<'a, [u8]>| {
        if seen.insert(digest.clone()) {
            files.push((format!("blobs/sha256/{}", digest_hex(&digest)), bytes));
        }
    };
    if let Some(bytes) = top_bytes {
        blob(&mut files, sha256_digest(&bytes), bytes.into());
    }
    for image in images {
        let manifest = image.manifest_json(ManifestKind::Oci);
        blob(&mut files, sha256_digest(&manifest), manifest.into());
        blob(
            &mut files,
            sha256_digest(&image.config_json),
            image.config_json.as_slice().into(),
        );
        for layer in &image.layers {
            blob(&mut files, layer.digest.clone(), (&layer.data[..]).into());
        }
    }
    files
}

/// Writes `image` as a `docker save` tar: manifest.json (Config/RepoTags/Layers), `<config hex>.json`,
/// uncompressed `<diff_id hex>/layer.tar` per layer, and a legacy `repositories` file.
pub fn write_docker_save_tar(image: &Image, repo_tags: &[&str], out: &Path) -> Result<()> {
    let config_name = format!("{}.json", digest_hex(&sha256_digest(&image.config_json)));
    let mut files: Files<'_> = Vec::new();
    let mut layer_paths = Vec::new();
    let mut seen = BTreeSet::new();
    for layer in &image.layers {
        let dir = digest_hex(&layer.diff_id).to_string();
        let path = format!("{dir}/layer.tar");
        if seen.insert(dir.clone()) {
            let tar = layer
                .uncompressed()
                .with_context(|| format!("decompressing layer {}", layer.digest))?;
            files.push((format!("{dir}/VERSION"), b"1.0".to_vec().into()));
            files.push((path.clone(), tar.into()));
        }
        layer_paths.push(path);
    }
    let manifest = json!([{ "Config": config_name, "RepoTags": repo_tags, "Layers": layer_paths }]);
    let mut repositories = serde_json::Map::new();
    if let Some(top) = image.layers.last() {
        for rt in repo_tags {
            if let Some((repo, tag)) = rt.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
                let entry = repositories
                    .entry(repo.to_string())
                    .or_insert_with(|| json!({}));
                entry[tag] = json!(digest_hex(&top.diff_id));
            }
        }
    }
    files.push((config_name, image.config_json.as_slice().into()));
    files.push((
        "manifest.json".into(),
        serde_json::to_vec(&manifest)?.into(),
    ));
    files.push((
        "repositories".into(),
        serde_json::to_vec(&repositories)?.into(),
    ));
    write_tar(out, &files)
}

/// Writes `files` into a tar at `out` (directories implied by paths are added first).
fn write_tar(out: &Path, files: &Files<'_>) -> Result<()> {
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut builder = tar::Builder::new(BufWriter::new(file));
    let mut dirs = BTreeSet::new();
    for (rel, _) in files {
        let mut p = Path::new(rel).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_path_buf());
            p = d.parent();
        }
    }
    for d in &dirs {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_mtime(crate::image::layer::MTIME);
        h.set_size(0);
        builder.append_data(&mut h, d, std::io::empty())?;
    }
    for (rel, bytes) in files {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_mtime(crate::image::layer::MTIME);
        h.set_size(bytes.len() as u64);
        builder.append_data(&mut h, rel, &bytes[..])?;
    }
    builder.into_inner()?.flush()?;
    Ok(())
}
