//! Ready-made images: busybox, a multi-layer whiteout/opaque image, a big image and platform decoys.

use std::process::Command;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::blob::{Compression, LayerBlob};
use super::cache;
use super::content::{self, SplitMix64};
use super::layer::{Entry, Layer};
use super::model::{Image, Platform};

/// Host busybox binary copied into images (Debian's busybox-static).
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// PATH set in generated image configs.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Version of the generators; bump to invalidate on-disk caches.
const GENERATOR_VERSION: u32 = 2;

static BUSYBOX: Mutex<Option<Image>> = Mutex::new(None);

/// A runnable linux busybox image (one gzip layer, host arch): /bin/busybox + applet symlinks, /etc/passwd, /tmp.
///
/// Config: `Cmd ["sh"]`, `Env [PATH=...]`, `WorkingDir /`. Built once per process, deterministic across runs.
pub fn busybox() -> Result<Image> {
    let mut cached = BUSYBOX.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(image) = cached.as_ref() {
        return Ok(image.clone());
    }
    let layer = busybox_layer()?.tar();
    let image = Image::new(
        json!({ "config": { "Env": [DEFAULT_PATH], "Cmd": ["sh"], "WorkingDir": "/" } }),
        vec![LayerBlob::from_tar(&layer, Compression::Gzip)?],
    )?;
    *cached = Some(image.clone());
    Ok(image)
}

/// The entries of busybox's rootfs layer.
pub fn busybox_layer() -> Result<Layer> {
    let binary = std::fs::read(HOST_BUSYBOX)
        .with_context(|| format!("reading {HOST_BUSYBOX} (apt-get install busybox-static)"))?;
    let out = Command::new(HOST_BUSYBOX)
        .arg("--list")
        .output()
        .context("busybox --list")?;
    if !out.status.success() {
        bail!(
            "busybox --list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut layer = Layer::default();
    for d in [
        "bin", "dev", "etc", "home", "proc", "sys", "usr", "usr/bin", "var",
    ] {
        layer.push(Entry::dir(d));
    }
    layer.push(Entry::dir("root").with_mode(0o700));
    layer.push(Entry::dir("tmp").with_mode(0o1777));
    layer.push(Entry::file_mode("bin/busybox", binary, 0o755));
    let mut applets: Vec<&str> = std::str::from_utf8(&out.stdout)?
        .lines()
        .map(str::trim)
        .collect();
    applets.sort_unstable();
    applets.dedup();
    for applet in applets
        .into_iter()
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
    {
        layer.push(Entry::symlink(&format!("bin/{applet}"), "busybox"));
    }
    layer.push(Entry::file(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    ));
    layer.push(Entry::file("etc/group", "root:x:0:\nnogroup:x:65534:\n"));
    Ok(layer)
}

/// Busybox plus three layers exercising overrides, whiteouts and opaque dirs (gzip, zstd, uncompressed).
///
/// Layer 1 (gzip): `data/changed.txt` "version 1", `data/deleted.txt`, `data/kept.txt`, `opaque/old-a`, `opaque/sub/old-c`.
/// Layer 2 (zstd): `data/changed.txt` "version 2", `opaque/` made opaque, `opaque/new-a`.
/// Layer 3 (none): whiteout of `data/deleted.txt`, new `data/added.txt`.
/// See [`multi_layer_expected`] for the resulting rootfs.
pub fn multi_layer() -> Result<Image> {
    let l1 = Layer::new(vec![
        Entry::dir("data"),
        Entry::file("data/changed.txt", "version 1\n"),
        Entry::file("data/deleted.txt", "delete me in layer 3\n"),
        Entry::file("data/kept.txt", "kept from layer 1\n"),
        Entry::dir("opaque"),
        Entry::file("opaque/old-a", "old a\n"),
        Entry::dir("opaque/sub"),
        Entry::file("opaque/sub/old-c", "old c\n"),
    ]);
    let l2 = Layer::new(vec![
        Entry::dir("data"),
        Entry::file("data/changed.txt", "version 2\n"),
        Entry::dir("opaque"),
        Entry::opaque("opaque"),
        Entry::file("opaque/new-a", "new a\n"),
    ]);
    let l3 = Layer::new(vec![
        Entry::dir("data"),
        Entry::whiteout("data/deleted.txt"),
        Entry::file("data/added.txt", "added in layer 3\n"),
    ]);
    busybox()?
        .with_layer(LayerBlob::from_tar(&l1.tar(), Compression::Gzip)?)?
        .with_layer(LayerBlob::from_tar(&l2.tar(), Compression::Zstd)?)?
        .with_layer(LayerBlob::from_tar(&l3.tar(), Compression::None)?)
}

/// Expected rootfs of [`multi_layer`]: `(path, Some(content))` must exist with that content, `(path, None)` must not exist.
pub fn multi_layer_expected() -> Vec<(&'static str, Option<&'static str>)> {
    vec![
        ("data/changed.txt", Some("version 2\n")),
        ("data/kept.txt", Some("kept from layer 1\n")),
        ("data/added.txt", Some("added in layer 3\n")),
        ("data/deleted.txt", None),
        ("data/.wh.deleted.txt", None),
        ("opaque/new-a", Some("new a\n")),
        ("opaque/old-a", None),
        ("opaque/sub", None),
        ("opaque/.wh..wh..opq", None),
    ]
}

/// Number of data layers `big` puts on top of busybox.
pub const BIG_LAYERS: usize = 8;

/// Busybox plus 8 gzip (level 6) layers totalling about `total_bytes` uncompressed: many small files and a few
/// large ones, part compressible text and part random (seeded, deterministic).
///
/// Blobs are cached under `<tmp>/capstan-testimages/<key>/`, so only the first call on a machine builds them.
pub fn big(total_bytes: u64) -> Result<Image> {
    let base = busybox()?;
    let key = format!(
        "big-v{GENERATOR_VERSION}-{total_bytes}-{}",
        &crate::registry::digest_hex(&base.layers[0].diff_id)[..12]
    );
    cache::cached_image(&key, || {
        let per_layer = (total_bytes / BIG_LAYERS as u64).max(4096);
        let layers: Vec<Result<LayerBlob>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..BIG_LAYERS)
                .collect::<Vec<_>>()
                .chunks(BIG_LAYERS.div_ceil(2))
                .map(|chunk| {
                    let chunk = chunk.to_vec();
                    s.spawn(move || {
                        chunk
                            .into_iter()
                            .map(|i| {
                                LayerBlob::from_tar_level(
                                    &big_layer(i, per_layer).tar(),
                                    Compression::Gzip,
                                    Some(6),
                                )
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("layer builder panicked"))
                .collect()
        });
        let mut image = base.clone();
        for layer in layers {
            image = image.with_layer(layer?)?;
        }
        Ok(image)
    })
}

/// Data layer `i` of `big`: ~40% in two large files, the rest in small files in 64-file directories.
fn big_layer(i: usize, budget: u64) -> Layer {
    let mut rng = SplitMix64::new(0xB16_1A7E ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let root = format!("opt/big/layer{i}");
    let mut layer = Layer::new(vec![
        Entry::dir("opt"),
        Entry::dir("opt/big"),
        Entry::dir(&root),
    ]);
    let large = budget / 5;
    layer.push(Entry::file(
        &format!("{root}/large-random.bin"),
        content::random_bytes(&mut rng, large as usize),
    ));
    layer.push(Entry::file(
        &format!("{root}/large-text.log"),
        content::text(&mut rng, large as usize),
    ));
    let mut remaining = budget.saturating_sub(2 * large);
    let mut n = 0usize;
    while remaining > 0 {
        if n & 63 == 0 {
            layer.push(Entry::dir(&format!("{root}/small/d{:03}", n / 64)));
        }
        let size = (256 + rng.below(32 * 1024 - 256)).min(remaining);
        let dir = format!("{root}/small/d{:03}", n / 64);
        let entry = if rng.below(10) < 7 {
            Entry::file(
                &format!("{dir}/f{n:05}.txt"),
                content::text(&mut rng, size as usize),
            )
        } else {
            Entry::file(
                &format!("{dir}/f{n:05}.bin"),
                content::random_bytes(&mut rng, size as usize),
            )
        };
        layer.push(entry);
        remaining -= size;
        n += 1;
    }
    if n > 0 {
        // Make sure the "small" dir itself exists before its children in a strict extractor.
        layer
            .entries
            .insert(3, Entry::dir(&format!("{root}/small")));
    }
    layer
}

/// A tiny image for `platform` whose only file, `/DECOY`, says it was picked by mistake (used in indexes).
pub fn decoy(platform: &Platform, real: &Platform) -> Result<Image> {
    let text = format!("DECOY {platform} image: a client on {real} selected the wrong manifest\n");
    let layer = Layer::new(vec![Entry::file_mode("DECOY", text, 0o755)]).tar();
    Image::new(
        json!({
            "architecture": platform.architecture,
            "os": platform.os,
            "config": { "Env": [DEFAULT_PATH], "Cmd": ["/DECOY"], "Labels": { "capstan.test/decoy": "true" } },
        }),
        vec![LayerBlob::from_tar(&layer, Compression::Gzip)?],
    )
}

/// `base` plus a tiny layer with a unique `/.capstan-unique` file, so its manifest, config and top layer are shared
/// with no other image (safe to corrupt in a shared registry).
pub fn unique(base: Image) -> Result<Image> {
    let marker = crate::names::unique_name("unique");
    let layer = Layer::new(vec![Entry::file(".capstan-unique", format!("{marker}\n"))]).tar();
    base.with_layer(LayerBlob::from_tar(&layer, Compression::Gzip)?)
}
