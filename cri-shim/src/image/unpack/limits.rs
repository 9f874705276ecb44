//! Bounds that stop tar bombs.

/// Bounds that stop tar bombs; configurable by the user.
#[derive(Debug, Clone)]
pub struct UnpackLimits {
    /// Total uncompressed bytes read from the decompressor for this layer, headers included.
    pub max_bytes: u64,
    /// Tar entries in this layer.
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        Self {
            max_bytes: 64 << 30,
            max_entries: 2_000_000,
        }
    }
}

/// Tar metadata of one entry (headers, GNU long names, PAX records) that the tar reader may
/// buffer in memory; fixed, since no real layer comes near it.
pub(crate) const MAX_METADATA_BYTES: u64 = 16 << 20;
