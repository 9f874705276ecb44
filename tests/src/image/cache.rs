//! On-disk cache of generated images under `<tmp>/capstan-testimages/<key>/`.

use std::fs;
use std::io;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::blob::{sha256_digest, Compression, LayerBlob};
use super::model::Image;
use crate::cleanup::remove_tree;
use crate::names::unique_name;

/// Directory holding all cached images.
pub fn cache_root() -> PathBuf {
    std::env::temp_dir().join("capstan-testimages")
}

#[derive(Serialize, Deserialize)]
struct Meta {
    layers: Vec<LayerMeta>,
    annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct LayerMeta {
    file: String,
    digest: String,
    diff_id: String,
    compression: String,
}

/// Loads image `key` from the cache (verifying every digest), or builds it with `build` and stores it atomically.
///
/// An exclusive `flock` on `<key>.lock` makes concurrent callers (threads or processes) wait for one build.
pub fn cached_image(key: &str, build: impl FnOnce() -> Result<Image>) -> Result<Image> {
    fs::create_dir_all(cache_root())?;
    let _lock = lock(key)?;
    let dir = cache_root().join(key);
    if dir.is_dir() {
        match load(&dir) {
            Ok(image) => return Ok(image),
            Err(e) => {
                eprintln!("image cache {} unusable, rebuilding: {e:#}", dir.display());
                let _ = remove_tree(&dir);
            }
        }
    }
    let image = build()?;
    if let Err(e) = store(&dir, &image) {
        eprintln!("could not cache image {key}: {e:#}");
    }
    Ok(image)
}

/// Takes an exclusive lock on `<cache_root>/<key>.lock`, released when the file is dropped.
fn lock(key: &str) -> Result<fs::File> {
    use std::os::fd::AsRawFd;
    let path = cache_root().join(format!("{key}.lock"));
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    loop {
        // SAFETY: flock(2) on a file descriptor we own; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(file);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err).with_context(|| format!("locking {}", path.display()));
        }
    }
}

fn load(dir: &std::path::Path) -> Result<Image> {
    let meta: Meta =
        serde_json::from_slice(&fs::read(dir.join("meta.json"))?).context("meta.json")?;
    let mut layers = Vec::new();
    for l in meta.layers {
        let data = fs::read(dir.join(&l.file))?;
        let compression = match l.compression.as_str() {
            "none" => Compression::None,
            "gzip" => Compression::Gzip,
            "zstd" => Compression::Zstd,
            other => bail!("unknown compression {other}"),
        };
        let blob = LayerBlob::from_parts(data, compression, l.diff_id);
        if blob.digest != l.digest {
            bail!(
                "{} has digest {}, expected {}",
                l.file,
                blob.digest,
                l.digest
            );
        }
        layers.push(blob);
    }
    let config_json = fs::read(dir.join("config.json"))?;
    let mut image = Image::new(serde_json::from_slice(&config_json)?, layers)?;
    if sha256_digest(&image.config_json) != sha256_digest(&config_json) {
        // Keep the stored bytes exactly.
        image.config_json = config_json;
    }
    image.annotations = meta.annotations;
    Ok(image)
}

fn store(dir: &std::path::Path, image: &Image) -> Result<()> {
    let tmp = cache_root().join(format!(".tmp-{}", unique_name("img")));
    fs::create_dir_all(&tmp)?;
    let result = (|| -> Result<()> {
        let mut layers = Vec::new();
        for (i, l) in image.layers.iter().enumerate() {
            let file = format!("layer-{i}.blob");
            fs::write(tmp.join(&file), &l.data[..])?;
            let compression = match l.compression {
                Compression::None => "none",
                Compression::Gzip => "gzip",
                Compression::Zstd => "zstd",
            };
            layers.push(LayerMeta {
                file,
                digest: l.digest.clone(),
                diff_id: l.diff_id.clone(),
                compression: compression.into(),
            });
        }
        fs::write(tmp.join("config.json"), &image.config_json)?;
        let meta = Meta {
            layers,
            annotations: image.annotations.clone(),
        };
        fs::write(tmp.join("meta.json"), serde_json::to_vec_pretty(&meta)?)?;
        match fs::rename(&tmp, dir) {
            Ok(()) => Ok(()),
            // Another process won the race: its copy is equivalent.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::AlreadyExists | io::ErrorKind::DirectoryNotEmpty
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    })();
    let _ = remove_tree(&tmp);
    result
}
