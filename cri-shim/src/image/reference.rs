//! Image references: parsing and the docker-style normalisation (`busybox` →
//! `docker.io/library/busybox:latest`).

use oci_client::Reference;

use crate::image::digest::Digest;
use crate::image::error::ImageError;

/// A parsed, normalised image reference.
#[derive(Debug, Clone)]
pub struct ImageName {
    inner: Reference,
}

impl ImageName {
    /// Parse a reference as a user or pod spec wrote it.
    pub fn parse(text: &str) -> Result<Self, ImageError> {
        let invalid = |reason: String| ImageError::InvalidReference {
            reference: text.chars().take(300).collect(),
            reason,
        };
        if text.is_empty() {
            return Err(invalid("empty".into()));
        }
        let inner: Reference = text.parse().map_err(|e| invalid(format!("{e}")))?;
        if let Some(digest) = inner.digest() {
            Digest::parse(digest).map_err(|e| invalid(e.to_string()))?;
        }
        Ok(Self { inner })
    }

    /// The registry client's view of the reference.
    pub fn reference(&self) -> &Reference {
        &self.inner
    }

    /// Registry host as written (`docker.io`, `127.0.0.1:5000`), the key for its settings.
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// `registry/repository`.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.inner.registry(), self.inner.repository())
    }

    /// `registry/repository:tag` when the reference names a tag (the default `latest` when it
    /// names neither tag nor digest).
    pub fn tagged(&self) -> Option<String> {
        match (self.inner.tag(), self.inner.digest()) {
            (Some(tag), _) => Some(format!("{}:{tag}", self.repository())),
            (None, None) => Some(format!("{}:latest", self.repository())),
            (None, Some(_)) => None,
        }
    }

    /// The digest the reference pins, if any.
    pub fn digest(&self) -> Option<Digest> {
        self.inner.digest().and_then(|d| Digest::parse(d).ok())
    }

    /// `registry/repository@digest` for a manifest digest.
    pub fn with_digest(&self, digest: &Digest) -> String {
        format!("{}@{digest}", self.repository())
    }

    /// The reference as the store and error messages name it.
    pub fn whole(&self) -> String {
        self.inner.whole()
    }
}

/// The name a user's string refers to in the store: normalised if it parses as a reference,
/// verbatim otherwise (an image ID or ID prefix).
pub fn lookup_name(text: &str) -> String {
    if text.starts_with("sha256:")
        || (text.len() >= 12 && text.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return text.to_owned();
    }
    ImageName::parse(text)
        .map(|n| n.whole())
        .unwrap_or_else(|_| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_normalise_like_docker() {
        let name = ImageName::parse("busybox").unwrap();
        assert_eq!(name.whole(), "docker.io/library/busybox:latest");
        assert_eq!(name.tagged().unwrap(), "docker.io/library/busybox:latest");
        let name = ImageName::parse("127.0.0.1:5000/demo/busybox:1.36").unwrap();
        assert_eq!(name.registry(), "127.0.0.1:5000");
        assert_eq!(name.tagged().unwrap(), "127.0.0.1:5000/demo/busybox:1.36");
        assert_eq!(lookup_name("busybox:1"), "docker.io/library/busybox:1");
    }

    #[test]
    fn digest_references_have_no_tag() {
        let digest = format!("sha256:{}", "b".repeat(64));
        let name = ImageName::parse(&format!("quay.io/x/y@{digest}")).unwrap();
        assert_eq!(name.tagged(), None);
        assert_eq!(name.digest().unwrap().to_string(), digest);
    }

    #[test]
    fn malformed_references_are_refused() {
        for bad in ["", "library/BusyBox", "a b", "x@sha256:short", "x:tag:tag"] {
            assert!(ImageName::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
