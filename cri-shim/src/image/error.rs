//! Image service errors; each names the image, digest or file it is about.

use std::io;

use crate::image::unpack::UnpackError;

/// Why an image operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The reference cannot be parsed.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No such image in the store.
    #[error("image {0:?} not found")]
    NotFound(String),
    /// The registry refused or failed a request.
    #[error("pulling {reference}: registry {registry}: {message}")]
    Registry {
        /// Image being pulled.
        reference: String,
        /// Registry (or mirror) host asked.
        registry: String,
        /// The registry client's error.
        message: String,
    },
    /// A manifest, index or config is malformed or unsupported.
    #[error("{what} {digest} is invalid: {reason}")]
    InvalidContent {
        /// "manifest", "image index", "image config", ...
        what: &'static str,
        /// Its digest or reference.
        digest: String,
        /// What is wrong.
        reason: String,
    },
    /// Content does not hash to the digest that names it.
    #[error("digest mismatch: content named {expected} hashes to {actual}")]
    DigestMismatch {
        /// The digest content was requested by.
        expected: String,
        /// What it actually hashed to.
        actual: String,
    },
    /// Content length differs from its descriptor.
    #[error("size mismatch for {digest}: descriptor says {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The blob's digest.
        digest: String,
        /// Size from the descriptor.
        expected: u64,
        /// Bytes actually received (so far).
        actual: u64,
    },
    /// A layer could not be unpacked.
    #[error("unpacking layer {digest}: {source}")]
    Unpack {
        /// The layer blob's digest.
        digest: String,
        /// Why.
        #[source]
        source: UnpackError,
    },
    /// An image archive for import is malformed.
    #[error("importing {path}: {reason}")]
    Import {
        /// The archive.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A local filesystem operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl ImageError {
    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<ImageError> for tonic::Status {
    fn from(e: ImageError) -> Self {
        let message = e.to_string();
        match e {
            ImageError::InvalidReference { .. } => tonic::Status::invalid_argument(message),
            ImageError::NotFound(_) => tonic::Status::not_found(message),
            _ => tonic::Status::unknown(message),
        }
    }
}
