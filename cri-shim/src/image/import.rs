//! `capstan image import`: images from an OCI image-layout archive or a `docker save`
//! archive, for nodes without registry access. Every blob is verified and unpacked exactly
//! as a pull would.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::image::digest::{Digest, Hasher};
use crate::image::error::ImageError;
use crate::image::pull::manifest::{self, Descriptor, Fetched};
use crate::image::pull::verify;
use crate::image::reference::ImageName;
use crate::image::store::{ImageRecord, ImageStore, LayerRecord, Usage};
use crate::image::unpack::{self, Compression, UnpackOptions};

const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// Import every image in the archive at `path`.
pub async fn import_archive(
    store: Arc<ImageStore>,
    options: UnpackOptions,
    path: PathBuf,
) -> Result<Vec<ImageRecord>, ImageError> {
    tokio::task::spawn_blocking(move || Importer::new(&store, &options, &path)?.run())
        .await
        .map_err(|e| ImageError::io("import task", io::Error::other(e)))?
}

struct Importer<'a> {
    store: &'a ImageStore,
    options: &'a UnpackOptions,
    archive: &'a Path,
    dir: tempfile::TempDir,
}

impl<'a> Importer<'a> {
    fn new(
        store: &'a ImageStore,
        options: &'a UnpackOptions,
        archive: &'a Path,
    ) -> Result<Self, ImageError> {
        let dir = tempfile::Builder::new()
            .prefix("import-")
            .tempdir_in(store.root().join("tmp"))
            .map_err(|e| ImageError::io("creating import scratch dir", e))?;
        Ok(Self {
            store,
            options,
            archive,
            dir,
        })
    }

    fn run(self) -> Result<Vec<ImageRecord>, ImageError> {
        self.extract()?;
        let records = if self.dir.path().join("index.json").is_file()
            && self.dir.path().join("oci-layout").is_file()
        {
            self.import_oci_layout()?
        } else if self.dir.path().join("manifest.json").is_file() {
            self.import_docker_save()?
        } else {
            return Err(self.fail("neither an OCI image layout (oci-layout + index.json) nor a docker save archive (manifest.json)".into()));
        };
        if records.is_empty() {
            return Err(self.fail("the archive holds no images".into()));
        }
        let mut stored = Vec::new();
        for record in records {
            stored.push(
                self.store
                    .records()
                    .upsert(record)
                    .map_err(|e| ImageError::io("recording imported image", e))?,
            );
        }
        Ok(stored)
    }

    fn fail(&self, reason: String) -> ImageError {
        ImageError::Import {
            path: self.archive.display().to_string(),
            reason,
        }
    }

    /// Unpack the archive's regular files into scratch; nothing else is created, and no
    /// name may climb out of it.
    fn extract(&self) -> Result<(), ImageError> {
        let file = File::open(self.archive)
            .map_err(|e| ImageError::io(format!("opening {}", self.archive.display()), e))?;
        let mut archive = tar::Archive::new(file);
        let entries = archive
            .entries()
            .map_err(|e| self.fail(format!("not a tar archive: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| self.fail(format!("reading archive: {e}")))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = entry
                .path()
                .map_err(|e| self.fail(format!("bad entry name: {e}")))?
                .into_owned();
            let relative = safe_relative(&name).ok_or_else(|| {
                self.fail(format!("entry {} escapes the archive", name.display()))
            })?;
            let target = self.dir.path().join(relative);
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(|e| ImageError::io("extracting archive", e))?;
            }
            let mut out =
                File::create(&target).map_err(|e| ImageError::io("extracting archive", e))?;
            io::copy(&mut entry, &mut out)
                .map_err(|e| self.fail(format!("reading {}: {e}", name.display())))?;
        }
        Ok(())
    }

    fn read_json<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Result<T, ImageError> {
        let bytes = fs::read(self.dir.path().join(name))
            .map_err(|e| self.fail(format!("reading {name}: {e}")))?;
        serde_json::from_slice(&bytes).map_err(|e| self.fail(format!("{name} is not valid: {e}")))
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.path().join("blobs/sha256").join(digest.hex())
    }

    /// A small blob of the layout, verified against its descriptor.
    fn layout_blob(&self, descriptor: &Descriptor) -> Result<(Digest, Vec<u8>), ImageError> {
        let digest = descriptor.digest()?;
        let bytes = fs::read(self.blob_path(&digest))
            .map_err(|_| self.fail(format!("blob {digest} is missing")))?;
        if bytes.len() > manifest::MAX_MANIFEST_BYTES * 4 {
            return Err(self.fail(format!("blob {digest} is too large for metadata")));
        }
        verify(&digest, descriptor.size()?, &bytes)?;
        Ok((digest, bytes))
    }

    fn import_oci_layout(&self) -> Result<Vec<ImageRecord>, ImageError> {
        #[derive(Deserialize)]
        struct Index {
            manifests: Vec<AnnotatedDescriptor>,
        }
        #[derive(Deserialize)]
        struct AnnotatedDescriptor {
            #[serde(flatten)]
            descriptor: Descriptor,
            #[serde(default)]
            annotations: std::collections::BTreeMap<String, String>,
        }
        let index: Index = self.read_json("index.json")?;
        let mut records = Vec::new();
        for entry in index.manifests {
            let name = entry
                .annotations
                .get(CONTAINERD_NAME)
                .or_else(|| entry.annotations.get(REF_NAME))
                .and_then(|n| {
                    ImageName::parse(n)
                        .ok()
                        .filter(|_| n.contains('/') || n.contains(':'))
                        .map(|_| n.clone())
                });
            let (top_digest, bytes) = self.layout_blob(&entry.descriptor)?;
            let (manifest_digest, manifest_bytes) = match manifest::parse(&bytes, &top_digest)? {
                Fetched::Image(_) => (top_digest.clone(), bytes),
                Fetched::Index(entries) => {
                    let chosen = manifest::select_host_platform(&entries, &top_digest)?;
                    self.layout_blob(chosen)?
                }
            };
            let Fetched::Image(image) = manifest::parse(&manifest_bytes, &manifest_digest)? else {
                return Err(self.fail(format!("{manifest_digest}: nested index")));
            };
            let (config_digest, config_bytes) = self.layout_blob(&image.config)?;
            let diff_ids = manifest::diff_ids(&config_bytes, &config_digest, image.layers.len())?;
            let mut layers = Vec::new();
            for (descriptor, diff_id) in image.layers.iter().zip(diff_ids) {
                let layer = LayerRecord {
                    digest: descriptor.digest()?,
                    media_type: descriptor.media_type.clone(),
                    size: descriptor.size()?,
                    diff_id,
                };
                self.store_layer(&self.blob_path(&layer.digest), &layer)?;
                layers.push(layer);
            }
            self.store.blobs.put(&manifest_digest, &manifest_bytes)?;
            self.store.blobs.put(&config_digest, &config_bytes)?;
            let name = name.map(|n| ImageName::parse(&n)).transpose()?;
            records.push(ImageRecord {
                id: config_digest,
                repo_tags: name
                    .as_ref()
                    .and_then(ImageName::tagged)
                    .into_iter()
                    .collect(),
                repo_digests: name
                    .as_ref()
                    .map(|n| n.with_digest(&top_digest))
                    .into_iter()
                    .collect(),
                manifest: manifest_digest,
                manifest_size: manifest_bytes.len() as u64,
                config_size: config_bytes.len() as u64,
                layers,
                pinned: false,
            });
        }
        Ok(records)
    }

    fn import_docker_save(&self) -> Result<Vec<ImageRecord>, ImageError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
            layers: Vec<String>,
        }
        let entries: Vec<Entry> = self.read_json("manifest.json")?;
        let mut records = Vec::new();
        for entry in entries {
            let config_bytes = self.member(&entry.config)?;
            let config_digest = Digest::of(&config_bytes);
            let diff_ids = manifest::diff_ids(&config_bytes, &config_digest, entry.layers.len())?;
            let mut layers = Vec::new();
            for (member, diff_id) in entry.layers.iter().zip(diff_ids) {
                let path = self.member_path(member)?;
                let (digest, size, media_type) = describe_file(&path)?;
                let layer = LayerRecord {
                    digest,
                    media_type: media_type.into(),
                    size,
                    diff_id,
                };
                self.store_layer(&path, &layer)?;
                layers.push(layer);
            }
            let manifest_bytes = synthesize_manifest(&config_digest, config_bytes.len(), &layers);
            let manifest_digest = Digest::of(&manifest_bytes);
            self.store.blobs.put(&manifest_digest, &manifest_bytes)?;
            self.store.blobs.put(&config_digest, &config_bytes)?;
            let mut repo_tags = Vec::new();
            for tag in entry.repo_tags.unwrap_or_default() {
                repo_tags.extend(ImageName::parse(&tag)?.tagged());
            }
            records.push(ImageRecord {
                id: config_digest,
                repo_tags,
                repo_digests: Vec::new(),
                manifest: manifest_digest,
                manifest_size: manifest_bytes.len() as u64,
                config_size: config_bytes.len() as u64,
                layers,
                pinned: false,
            });
        }
        Ok(records)
    }

    fn member_path(&self, name: &str) -> Result<PathBuf, ImageError> {
        let relative = safe_relative(Path::new(name))
            .ok_or_else(|| self.fail(format!("member {name:?} escapes the archive")))?;
        let path = self.dir.path().join(relative);
        if !path.is_file() {
            return Err(self.fail(format!("member {name:?} is missing")));
        }
        Ok(path)
    }

    fn member(&self, name: &str) -> Result<Vec<u8>, ImageError> {
        fs::read(self.member_path(name)?).map_err(|e| self.fail(format!("reading {name}: {e}")))
    }

    /// Copy a layer file into the blob store (verified) and unpack it if no snapshot exists.
    fn store_layer(&self, path: &Path, layer: &LayerRecord) -> Result<(), ImageError> {
        if !self.store.blobs.contains(&layer.digest) {
            let mut file = File::open(path)
                .map_err(|_| self.fail(format!("layer {} is missing", layer.digest)))?;
            let mut writer = self.store.blobs.writer(layer.digest.clone(), layer.size)?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = file
                    .read(&mut buf)
                    .map_err(|e| ImageError::io("reading layer", e))?;
                if n == 0 {
                    break;
                }
                writer.write(&buf[..n])?;
            }
            writer.commit()?;
        }
        if self.store.snapshots.contains(&layer.diff_id) {
            return Ok(());
        }
        let compression = Compression::from_media_type(&layer.media_type).map_err(|source| {
            ImageError::Unpack {
                digest: layer.digest.to_string(),
                source,
            }
        })?;
        let prepared = self
            .store
            .snapshots
            .prepare()
            .map_err(|e| ImageError::io("preparing snapshot", e))?;
        let blob = File::open(self.store.blobs.path(&layer.digest))
            .map_err(|e| ImageError::io("opening layer blob", e))?;
        let stats = unpack::apply_layer(blob, compression, &prepared.fs_path(), self.options)
            .map_err(|source| ImageError::Unpack {
                digest: layer.digest.to_string(),
                source,
            })?;
        if stats.diff_id != layer.diff_id.to_string() {
            return Err(ImageError::DigestMismatch {
                expected: layer.diff_id.to_string(),
                actual: stats.diff_id,
            });
        }
        let usage = Usage {
            bytes: stats.bytes,
            inodes: stats.inodes,
        };
        self.store
            .snapshots
            .commit(prepared, &layer.diff_id, usage)
            .map_err(|e| ImageError::io(format!("committing snapshot {}", layer.diff_id), e))
    }
}

/// A relative path with no `..`, or `None`.
fn safe_relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Digest, size and media type (from its magic bytes) of a layer file.
fn describe_file(path: &Path) -> Result<(Digest, u64, &'static str), ImageError> {
    let mut file =
        File::open(path).map_err(|e| ImageError::io(format!("opening {}", path.display()), e))?;
    let mut hasher = Hasher::default();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    let mut prefix = Vec::new();
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| ImageError::io("reading layer", e))?;
        if n == 0 {
            break;
        }
        if prefix.len() < 4 {
            prefix.extend_from_slice(&buf[..n.min(4)]);
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    let media_type = match Compression::sniff(&prefix) {
        Compression::Gzip => OCI_LAYER_GZIP,
        Compression::Zstd => OCI_LAYER_ZSTD,
        Compression::None => OCI_LAYER_TAR,
    };
    Ok((hasher.finish(), size, media_type))
}

/// An OCI manifest for an image that arrived without one (`docker save`).
fn synthesize_manifest(config: &Digest, config_size: usize, layers: &[LayerRecord]) -> Vec<u8> {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| serde_json::json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size}))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size},
        "layers": layers,
    }))
    .unwrap_or_default()
}
