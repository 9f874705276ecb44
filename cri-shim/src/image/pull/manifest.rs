//! Manifests and indexes as registries serve them (OCI and Docker schema 2), with the
//! platform choice for indexes.

use serde::Deserialize;

use crate::image::digest::Digest;
use crate::image::error::ImageError;

/// Media types accepted when asking for a manifest.
pub const ACCEPTED: &[&str] = &[OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Largest manifest or index accepted, against hostile registries.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// A content descriptor.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    #[serde(default)]
    pub media_type: String,
    /// Its digest (validated by `digest()`).
    pub digest: String,
    /// Its size in bytes.
    pub size: i64,
    /// Alternate download locations (foreign layers).
    #[serde(default)]
    pub urls: Option<Vec<String>>,
    /// Platform, for index entries.
    #[serde(default)]
    pub platform: Option<Platform>,
}

impl Descriptor {
    /// The validated digest.
    pub fn digest(&self) -> Result<Digest, ImageError> {
        Digest::parse(&self.digest).map_err(|e| invalid("descriptor", &self.digest, e.to_string()))
    }

    /// The size, refusing negative values.
    pub fn size(&self) -> Result<u64, ImageError> {
        u64::try_from(self.size).map_err(|_| {
            invalid(
                "descriptor",
                &self.digest,
                format!("negative size {}", self.size),
            )
        })
    }
}

/// An index entry's platform.
#[derive(Debug, Clone, Deserialize)]
pub struct Platform {
    /// e.g. `amd64`.
    pub architecture: String,
    /// e.g. `linux`.
    pub os: String,
}

/// What a manifest fetch returned.
#[derive(Debug)]
pub enum Fetched {
    /// A multi-platform index or manifest list.
    Index(Vec<Descriptor>),
    /// A single-platform image manifest.
    Image(ImageManifest),
}

/// A single-platform image manifest.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageManifest {
    /// The image config.
    pub config: Descriptor,
    /// Layers, lowest first.
    pub layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    schema_version: Option<i64>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// Parse a manifest or index, whichever it is.
pub fn parse(bytes: &[u8], digest: &Digest) -> Result<Fetched, ImageError> {
    let fail = |reason: String| invalid("manifest", &digest.to_string(), reason);
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(fail(format!(
            "{} bytes exceeds the {MAX_MANIFEST_BYTES} byte limit",
            bytes.len()
        )));
    }
    let probe: Probe =
        serde_json::from_slice(bytes).map_err(|e| fail(format!("not valid JSON: {e}")))?;
    if probe.schema_version != Some(2) {
        return Err(fail(format!(
            "schemaVersion {:?} is not supported (only schema 2 / OCI)",
            probe.schema_version
        )));
    }
    match (
        probe.media_type.as_deref(),
        probe.manifests,
        probe.config,
        probe.layers,
    ) {
        (Some(OCI_INDEX | DOCKER_LIST) | None, Some(manifests), None, None) => {
            Ok(Fetched::Index(manifests))
        }
        (Some(OCI_MANIFEST | DOCKER_MANIFEST) | None, None, Some(config), Some(layers)) => {
            if !matches!(config.media_type.as_str(), OCI_CONFIG | DOCKER_CONFIG) {
                return Err(fail(format!(
                    "config media type {:?} is not an image config",
                    config.media_type
                )));
            }
            Ok(Fetched::Image(ImageManifest { config, layers }))
        }
        (media_type, ..) => Err(fail(format!(
            "unsupported manifest (mediaType {media_type:?})"
        ))),
    }
}

/// Pick this machine's entry (linux and the host architecture) from an index.
pub fn select_host_platform<'a>(
    entries: &'a [Descriptor],
    index_digest: &Digest,
) -> Result<&'a Descriptor, ImageError> {
    select_platform(entries, "linux", host_arch(), index_digest)
}

/// Pick the entry for `os/arch` from an index.
fn select_platform<'a>(
    entries: &'a [Descriptor],
    os: &str,
    arch: &str,
    index_digest: &Digest,
) -> Result<&'a Descriptor, ImageError> {
    entries
        .iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == os && p.architecture == arch)
        })
        .ok_or_else(|| {
            let offered: Vec<String> = entries
                .iter()
                .filter_map(|d| {
                    d.platform
                        .as_ref()
                        .map(|p| format!("{}/{}", p.os, p.architecture))
                })
                .collect();
            invalid(
                "image index",
                &index_digest.to_string(),
                format!("no {os}/{arch} image; it offers {offered:?}"),
            )
        })
}

/// The architecture name OCI uses for this machine.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn invalid(what: &'static str, digest: &str, reason: String) -> ImageError {
    ImageError::InvalidContent {
        what,
        digest: digest.chars().take(100).collect(),
        reason,
    }
}

/// The subset of an image config the store needs.
#[derive(Debug, Deserialize)]
pub struct ConfigProbe {
    /// Layer diff IDs.
    pub rootfs: RootFs,
}

/// `rootfs` of an image config.
#[derive(Debug, Deserialize)]
pub struct RootFs {
    /// Uncompressed layer digests, lowest first.
    pub diff_ids: Vec<String>,
}

/// Diff IDs from an image config, checked against the manifest's layer count.
pub fn diff_ids(
    config: &[u8],
    config_digest: &Digest,
    layer_count: usize,
) -> Result<Vec<Digest>, ImageError> {
    let fail = |reason: String| invalid("image config", &config_digest.to_string(), reason);
    let probe: ConfigProbe = serde_json::from_slice(config)
        .map_err(|e| fail(format!("not a valid image config: {e}")))?;
    if probe.rootfs.diff_ids.len() != layer_count {
        return Err(fail(format!(
            "lists {} diff_ids for {layer_count} layers",
            probe.rootfs.diff_ids.len()
        )));
    }
    probe
        .rootfs
        .diff_ids
        .iter()
        .map(|d| Digest::parse(d).map_err(|e| fail(e.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> Digest {
        Digest::of(b"x")
    }

    #[test]
    fn garbage_and_schema1_are_refused_with_the_digest() {
        let err = parse(b"<html>", &d()).unwrap_err().to_string();
        assert!(
            err.contains(&d().to_string()) && err.contains("JSON"),
            "{err}"
        );
        assert!(parse(br#"{"schemaVersion":1,"fsLayers":[]}"#, &d()).is_err());
    }

    #[test]
    fn index_platform_selection() {
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
            {{"mediaType":"{OCI_MANIFEST}","digest":"{a}","size":1,"platform":{{"os":"linux","architecture":"arm64"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{b}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
            a = Digest::of(b"a"),
            b = Digest::of(b"b")
        );
        let Fetched::Index(entries) = parse(index.as_bytes(), &d()).unwrap() else {
            panic!("not an index")
        };
        assert_eq!(
            select_platform(&entries, "linux", "amd64", &d())
                .unwrap()
                .digest()
                .unwrap(),
            Digest::of(b"b")
        );
        let err = select_platform(&entries, "linux", "s390x", &d())
            .unwrap_err()
            .to_string();
        assert!(err.contains("linux/arm64"), "{err}");
    }

    #[test]
    fn config_must_match_layer_count() {
        let config = format!(
            r#"{{"rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
            Digest::of(b"l")
        );
        assert_eq!(
            diff_ids(config.as_bytes(), &d(), 1).unwrap(),
            vec![Digest::of(b"l")]
        );
        assert!(diff_ids(config.as_bytes(), &d(), 2).is_err());
    }
}
