//! Layer blobs: compression, digests, diff IDs.

use std::io::{Read, Write};
use std::sync::Arc;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::model::{Descriptor, ManifestKind};

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip (level 6).
    Gzip,
    /// zstd (level 3).
    Zstd,
}

impl Compression {
    /// Compresses `tar` (gzip level 6, zstd level 3).
    pub fn compress(self, tar: &[u8]) -> Result<Vec<u8>> {
        self.compress_level(tar, None)
    }

    /// Compresses `tar` with an explicit level (`None` = default: gzip 6, zstd 3).
    pub fn compress_level(self, tar: &[u8], level: Option<u32>) -> Result<Vec<u8>> {
        Ok(match self {
            Compression::None => tar.to_vec(),
            Compression::Gzip => {
                let level = flate2::Compression::new(level.unwrap_or(6));
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::with_capacity(tar.len() / 2), level);
                enc.write_all(tar)?;
                enc.finish()?
            }
            Compression::Zstd => zstd::encode_all(tar, level.map_or(3, |l| l as i32))?,
        })
    }

    /// Decompresses a blob back into its tar stream.
    pub fn decompress(self, blob: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(blob.len() * 2);
        match self {
            Compression::None => out.extend_from_slice(blob),
            Compression::Gzip => {
                flate2::read::GzDecoder::new(blob)
                    .read_to_end(&mut out)
                    .context("gunzip")?;
            }
            Compression::Zstd => {
                zstd::stream::read::Decoder::new(blob)?
                    .read_to_end(&mut out)
                    .context("unzstd")?;
            }
        }
        Ok(out)
    }

    /// Media-type suffix: "", "+gzip" or "+zstd" (OCI); Docker uses ".gzip"/".zstd".
    pub fn oci_suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => "+gzip",
            Compression::Zstd => "+zstd",
        }
    }
}

/// A layer as stored in a registry: blob bytes plus what a manifest and config say about it.
#[derive(Clone)]
pub struct LayerBlob {
    /// The blob bytes (compressed tar), shared so images clone cheaply.
    pub data: Arc<[u8]>,
    /// Compression of `data`; chooses the media type.
    pub compression: Compression,
    /// Digest written in the manifest; normally `sha256(data)`.
    pub digest: String,
    /// Size written in the manifest; normally `data.len()`.
    pub size: u64,
    /// `sha256` of the uncompressed tar, written in the config's `rootfs.diff_ids`.
    pub diff_id: String,
    /// Overrides the media type written in the manifest (e.g. unknown or foreign types).
    pub media_type: Option<String>,
}

impl LayerBlob {
    /// Compresses `tar` and computes digest, size and diff ID.
    pub fn from_tar(tar: &[u8], compression: Compression) -> Result<LayerBlob> {
        Self::from_tar_level(tar, compression, None)
    }

    /// Like `from_tar` with an explicit compression level.
    pub fn from_tar_level(
        tar: &[u8],
        compression: Compression,
        level: Option<u32>,
    ) -> Result<LayerBlob> {
        let data = compression.compress_level(tar, level)?;
        Ok(Self::from_parts(data, compression, sha256_digest(tar)))
    }

    /// Wraps already-compressed bytes with a caller-supplied diff ID (digest and size are computed over `data`).
    pub fn from_parts(data: Vec<u8>, compression: Compression, diff_id: String) -> LayerBlob {
        LayerBlob {
            digest: sha256_digest(&data),
            size: data.len() as u64,
            data: data.into(),
            compression,
            diff_id,
            media_type: None,
        }
    }

    /// The descriptor a manifest of `kind` lists for this layer.
    pub fn descriptor(&self, kind: ManifestKind) -> Descriptor {
        Descriptor {
            media_type: self
                .media_type
                .clone()
                .unwrap_or_else(|| kind.layer_media_type(self.compression)),
            digest: self.digest.clone(),
            size: self.size,
            platform: None,
            annotations: None,
        }
    }

    /// The blob decompressed (fails for corrupt or truncated data).
    pub fn uncompressed(&self) -> Result<Vec<u8>> {
        self.compression.decompress(&self.data)
    }
}

impl std::fmt::Debug for LayerBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerBlob")
            .field("digest", &self.digest)
            .field("size", &self.size)
            .field("bytes", &self.data.len())
            .field("compression", &self.compression)
            .field("diff_id", &self.diff_id)
            .field("media_type", &self.media_type)
            .finish()
    }
}
