//! Malicious images: busybox plus one hostile layer each (path traversal, devices, tar bombs, truncation).

use std::path::Path;

use anyhow::Result;

use super::blob::{sha256_digest, Compression, LayerBlob};
use super::catalog::busybox;
use super::content::{self, SplitMix64};
use super::layer::{raw_file_header, Entry, Layer};
use super::model::Image;
use crate::names::unique_name;

/// Path of the entry written by [`absolute`].
pub const ABSOLUTE_PATH: &str = "/abs-file";

/// Size declared by [`tar_bomb_declared_size`]'s header: 1 TiB.
pub const DECLARED_BOMB_SIZE: u64 = 1 << 40;

/// Busybox plus `layer` (gzip).
pub fn on_busybox(layer: &Layer) -> Result<Image> {
    busybox()?.with_layer(LayerBlob::from_tar(&layer.tar(), Compression::Gzip)?)
}

/// Entry `../../escaped-<unique>`; returns the image and the file name (`escaped-<unique>`) to look for outside.
pub fn dotdot() -> Result<(Image, String)> {
    let name = unique_name("escaped");
    let layer = Layer::new(vec![Entry::file(
        &format!("../../{name}"),
        "escaped via ..\n",
    )]);
    Ok((on_busybox(&layer)?, name))
}

/// Entry with the absolute path `/abs-file`.
pub fn absolute() -> Result<Image> {
    on_busybox(&Layer::new(vec![Entry::file(
        ABSOLUTE_PATH,
        "absolute path entry\n",
    )]))
}

/// Symlink `evil -> <outside_dir>` followed by a regular file `evil/pwned` that would land in `outside_dir`.
pub fn symlink_escape(outside_dir: &Path) -> Result<Image> {
    let target = outside_dir.to_string_lossy();
    on_busybox(&Layer::new(vec![
        Entry::symlink("evil", &target),
        Entry::file("evil/pwned", "written through a symlink\n"),
    ]))
}

/// Hard links `hl -> ../../../etc/passwd` and `hl2 -> /etc/shadow` (targets outside the layer).
pub fn hardlink_escape() -> Result<Image> {
    on_busybox(&Layer::new(vec![
        Entry::hardlink("hl", "../../../etc/passwd"),
        Entry::hardlink("hl2", "/etc/shadow"),
    ]))
}

/// Device nodes: char 1:3 `dev-null` and block 8:0 `sda`.
pub fn device_nodes() -> Result<Image> {
    on_busybox(&Layer::new(vec![
        Entry::char_device("dev-null", 1, 3),
        Entry::block_device("sda", 8, 0),
    ]))
}

/// A setuid-root file `/bin/suid` with mode 04755.
pub fn setuid() -> Result<Image> {
    on_busybox(&Layer::new(vec![
        Entry::dir("bin"),
        Entry::file_mode("bin/suid", "#!/bin/sh\nid -u\n", 0o4755),
    ]))
}

/// `n` empty files `bomb/NNNNNNN` (a layer with a huge entry count).
pub fn tar_bomb_entries(n: usize) -> Result<Image> {
    let mut layer = Layer::new(vec![Entry::dir("bomb")]);
    layer
        .entries
        .extend((0..n).map(|i| Entry::file(&format!("bomb/{i:07}"), Vec::new())));
    on_busybox(&layer)
}

/// One header declaring a 1 TiB file (`bomb-1tib`), followed by only 4 KiB of data and the end-of-archive blocks.
pub fn tar_bomb_declared_size() -> Result<Image> {
    let header = raw_file_header(b"bomb-1tib", DECLARED_BOMB_SIZE, 0o644);
    on_busybox(&Layer::new(vec![Entry::raw(header, vec![b'B'; 4096])]))
}

/// A valid gzip layer cut in half; the manifest's digest and size describe the truncated bytes, so only
/// decompression (or the diff ID check) can notice. The diff ID is that of the full tar.
pub fn truncated() -> Result<Image> {
    let mut rng = SplitMix64::new(0x7256_CA7E);
    let mut payload = content::text(&mut rng, 256 * 1024);
    payload.extend(content::random_bytes(&mut rng, 256 * 1024));
    let tar = Layer::new(vec![Entry::file("payload.bin", payload)]).tar();
    let full = Compression::Gzip.compress(&tar)?;
    let cut = full[..full.len() / 2].to_vec();
    busybox()?.with_layer(LayerBlob::from_parts(
        cut,
        Compression::Gzip,
        sha256_digest(&tar),
    ))
}
