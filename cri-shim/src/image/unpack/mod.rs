//! TEMPORARY API STUB (helper-1 replaces this file with the real unpacker).
#![allow(missing_docs, unused)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression { None, Gzip, Zstd }
impl Compression {
    pub fn from_media_type(media_type: &str) -> Result<Self, UnpackError> { todo!() }
    pub fn sniff(prefix: &[u8]) -> Self { todo!() }
}
#[derive(Debug, Clone)]
pub struct UnpackLimits { pub max_bytes: u64, pub max_entries: u64 }
impl Default for UnpackLimits { fn default() -> Self { todo!() } }
#[derive(Debug, Clone, Default)]
pub struct UnpackOptions { pub limits: UnpackLimits, pub create_device_nodes: bool }
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerStats { pub diff_id: String, pub bytes: u64, pub inodes: u64, pub entries: u64 }
pub fn apply_layer<R: std::io::Read>(blob: R, compression: Compression, dest: &std::path::Path, options: &UnpackOptions) -> Result<LayerStats, UnpackError> { todo!() }
#[derive(Debug, thiserror::Error)]
pub enum UnpackError { #[error("x")] X }
