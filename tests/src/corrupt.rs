//! Making the real registry serve broken content by editing its on-disk storage.
//!
//! Blob storage is global and content-addressed: every repository (and every manifest) sharing a blob sees
//! the corruption. Give each corruption test its own [`Registry`], or make the image unique first with
//! [`crate::image::catalog::unique`].
//!
//! What `docker-registry` 2.8 (Distribution, filesystem driver, no cache) answers, verified by experiment:
//!
//! (a) **Manifest that is not JSON.** `PUT` of non-JSON manifest bytes is refused with 400 `MANIFEST_INVALID`.
//!     After [`corrupt_manifest`] overwrites the stored manifest with non-JSON bytes, `GET /manifests/<tag>` and
//!     `GET /manifests/<digest>` answer **500** `{"errors":[{"code":"UNKNOWN",...,"detail":{"Offset":N}}]}`: the
//!     registry parses manifests before serving them, so it never returns non-JSON with 200. JSON that is not a
//!     manifest (`{"hello":"world"}`) or has wrongly typed fields (`"layers":"x"`) also gives 500. A manifest that
//!     parses but is semantically broken (e.g. `{"schemaVersion":2,"mediaType":...,"layers":[]}` with no config)
//!     is served **200** with the stored bytes, the manifest's media type as Content-Type and the *original*
//!     digest in `Docker-Content-Digest`, so the body no longer matches the digest. To get a 200 response with a
//!     non-JSON body, put a [`crate::faults::FaultProxy`] in front of the registry and replace the response.
//! (b) **Manifest naming a missing blob.** The registry refuses to store such a manifest (400
//!     `MANIFEST_BLOB_UNKNOWN`), so push first and then [`make_blob_missing`] (API `DELETE`, which needs
//!     `delete_enabled`, else removal of the repository's layer link file) or [`remove_blob_data`] (every repo).
//!     The manifest is still served (200) and `GET /blobs/<digest>` answers **404**
//!     `{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry","detail":"sha256:..."}]}`.
//! (c) **Blob bytes not matching the digest.** After [`corrupt_blob`] (or [`flip_blob_byte`]),
//!     `GET /blobs/<digest>` answers **200** `application/octet-stream` with the new bytes, `Content-Length` of the
//!     new bytes and `Docker-Content-Digest: <requested digest>`; the registry does not verify on read.

use std::fs;

use anyhow::{Context, Result};

use crate::push;
use crate::registry::Registry;

/// Overwrites the stored bytes of blob `digest` (layer or config) with `new_bytes`; returns the old bytes.
pub fn corrupt_blob(reg: &Registry, digest: &str, new_bytes: &[u8]) -> Result<Vec<u8>> {
    let path = reg.blob_data_path(digest);
    let old = fs::read(&path)
        .with_context(|| format!("blob {digest} is not stored at {}", path.display()))?;
    fs::write(&path, new_bytes)?;
    Ok(old)
}

/// Inverts the byte in the middle of blob `digest`, keeping its size; returns the corrupted bytes.
pub fn flip_blob_byte(reg: &Registry, digest: &str) -> Result<Vec<u8>> {
    let path = reg.blob_data_path(digest);
    let mut bytes = fs::read(&path)
        .with_context(|| format!("blob {digest} is not stored at {}", path.display()))?;
    anyhow::ensure!(!bytes.is_empty(), "blob {digest} is empty");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&path, &bytes)?;
    Ok(bytes)
}

/// Overwrites the stored manifest `digest` (manifests are blobs too); see the module docs for what GET returns.
pub fn corrupt_manifest(reg: &Registry, digest: &str, new_bytes: &[u8]) -> Result<Vec<u8>> {
    corrupt_blob(reg, digest, new_bytes)
}

/// Makes blob `digest` unknown to `repo` only: API DELETE if the registry has `delete_enabled`, else removes the
/// repository's layer link file. Other repositories keep the blob.
pub fn make_blob_missing(reg: &Registry, repo: &str, digest: &str) -> Result<()> {
    if reg.options().delete_enabled {
        return push::delete_blob(reg, repo, digest);
    }
    let link = reg.layer_link_path(repo, digest);
    fs::remove_file(&link).with_context(|| format!("removing layer link {}", link.display()))
}

/// Deletes blob `digest`'s data file from storage: every repository then gets 404 `BLOB_UNKNOWN` for it.
pub fn remove_blob_data(reg: &Registry, digest: &str) -> Result<()> {
    let path = reg.blob_data_path(digest);
    fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))
}
