//! In-memory OCI/Docker image model: layers, blobs, configs, manifests and indexes.
//!
//! Submodules: [`layer`] (tar entries), [`blob`] (compression and digests), [`catalog`] (ready-made images),
//! [`hostile`] (malicious layers) and [`cache`] (on-disk cache for big images).

pub mod blob;
pub mod cache;
pub mod catalog;
pub mod content;
pub mod hostile;
pub mod layer;
pub mod model;

pub use blob::{sha256_digest, Compression, LayerBlob};
pub use layer::{Entry, Layer, Meta};
pub use model::{media, Descriptor, Image, Index, ManifestKind, Platform};
