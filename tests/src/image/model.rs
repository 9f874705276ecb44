//! Images, indexes, descriptors and platforms, serialised as OCI or Docker schema-2 JSON.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::blob::{sha256_digest, Compression, LayerBlob};

/// Media type strings.
pub mod media {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// OCI uncompressed layer (append `+gzip` / `+zstd`).
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    /// Docker schema-2 manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker uncompressed layer (append `.gzip` / `.zstd`).
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
}

/// Which manifest flavour to emit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ManifestKind {
    /// OCI image manifest / OCI index.
    Oci,
    /// Docker schema-2 manifest / Docker manifest list.
    Docker,
}

impl ManifestKind {
    /// Media type of a single-image manifest of this kind.
    pub fn manifest_media_type(self) -> &'static str {
        match self {
            ManifestKind::Oci => media::OCI_MANIFEST,
            ManifestKind::Docker => media::DOCKER_MANIFEST,
        }
    }

    /// Media type of an index / manifest list of this kind.
    pub fn index_media_type(self) -> &'static str {
        match self {
            ManifestKind::Oci => media::OCI_INDEX,
            ManifestKind::Docker => media::DOCKER_MANIFEST_LIST,
        }
    }

    /// Media type of the image config.
    pub fn config_media_type(self) -> &'static str {
        match self {
            ManifestKind::Oci => media::OCI_CONFIG,
            ManifestKind::Docker => media::DOCKER_CONFIG,
        }
    }

    /// Media type of a layer with the given compression.
    pub fn layer_media_type(self, c: Compression) -> String {
        match self {
            ManifestKind::Oci => format!("{}{}", media::OCI_LAYER, c.oci_suffix()),
            ManifestKind::Docker => match c {
                Compression::None => media::DOCKER_LAYER.to_string(),
                Compression::Gzip => format!("{}.gzip", media::DOCKER_LAYER),
                Compression::Zstd => format!("{}.zstd", media::DOCKER_LAYER),
            },
        }
    }
}

/// An OS/architecture pair as written in configs and index entries.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    /// GOARCH-style architecture (`amd64`, `arm64`).
    pub architecture: String,
    /// GOOS-style OS (`linux`).
    pub os: String,
    /// Optional variant (`v8`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// `linux/<arch>`.
    pub fn linux(arch: &str) -> Platform {
        Platform {
            architecture: arch.to_string(),
            os: "linux".to_string(),
            variant: None,
        }
    }

    /// The platform of this machine (`linux/amd64` on x86_64, `linux/arm64` on aarch64).
    pub fn host() -> Platform {
        Platform::linux(match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            other => other,
        })
    }

    /// A platform that is not the host's (`linux/arm64`, or `linux/amd64` on arm64 hosts).
    pub fn other() -> Platform {
        if Platform::host().architecture == "arm64" {
            Platform::linux("amd64")
        } else {
            Platform::linux("arm64")
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// An OCI content descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Platform (index entries only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Descriptor {
    /// A descriptor of `data` with the given media type.
    pub fn of(media_type: &str, data: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest: sha256_digest(data),
            size: data.len() as u64,
            platform: None,
            annotations: None,
        }
    }
}

/// Creation time written into generated configs.
pub const CREATED: &str = "2023-11-14T22:13:20Z";

/// A single-platform image: exact config bytes plus layer blobs.
#[derive(Clone, Debug)]
pub struct Image {
    /// The config blob, byte-exact (edit freely to test bad configs).
    pub config_json: Vec<u8>,
    /// Layers, bottom first.
    pub layers: Vec<LayerBlob>,
    /// Platform written into index entries.
    pub platform: Platform,
    /// Manifest annotations (OCI manifests only).
    pub annotations: BTreeMap<String, String>,
}

impl Image {
    /// Builds an image from a config object: fills `rootfs.diff_ids` and history from `layers`, and defaults
    /// `architecture`/`os` (host), `created`.
    pub fn new(config: Value, layers: Vec<LayerBlob>) -> Result<Image> {
        if !config.is_object() {
            bail!("image config must be a JSON object");
        }
        let mut image = Image {
            config_json: Vec::new(),
            layers,
            platform: Platform::host(),
            annotations: BTreeMap::new(),
        };
        image.sync_config(config)?;
        Ok(image)
    }

    /// The config parsed as JSON.
    pub fn config(&self) -> Result<Value> {
        serde_json::from_slice(&self.config_json).context("image config is not JSON")
    }

    /// Returns the image with `layer` appended on top (config diff IDs and history updated).
    pub fn with_layer(mut self, layer: LayerBlob) -> Result<Image> {
        let config = self.config()?;
        self.layers.push(layer);
        self.sync_config(config)?;
        Ok(self)
    }

    /// Rewrites `config_json` from `config`, making rootfs/history match `layers` and `platform` match it.
    pub fn sync_config(&mut self, mut config: Value) -> Result<()> {
        let obj = config
            .as_object_mut()
            .context("image config must be a JSON object")?;
        let host = Platform::host();
        obj.entry("architecture")
            .or_insert_with(|| json!(host.architecture));
        obj.entry("os").or_insert_with(|| json!(host.os));
        obj.entry("created").or_insert_with(|| json!(CREATED));
        obj.insert(
            "rootfs".into(),
            json!({ "type": "layers", "diff_ids": self.layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>() }),
        );
        let mut history: Vec<Value> = obj
            .get("history")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        history.truncate(self.layers.len());
        while history.len() < self.layers.len() {
            history.push(json!({ "created": CREATED, "created_by": format!("capstan-tests layer {}", history.len()) }));
        }
        obj.insert("history".into(), Value::Array(history));
        self.platform = Platform {
            architecture: obj["architecture"].as_str().unwrap_or_default().to_string(),
            os: obj["os"].as_str().unwrap_or_default().to_string(),
            variant: obj
                .get("variant")
                .and_then(Value::as_str)
                .map(str::to_string),
        };
        self.config_json = serde_json::to_vec(&config)?;
        Ok(())
    }

    /// Descriptor of the config blob.
    pub fn config_descriptor(&self, kind: ManifestKind) -> Descriptor {
        Descriptor::of(kind.config_media_type(), &self.config_json)
    }

    /// Descriptors of the layers as written in a manifest of `kind`.
    pub fn layer_descriptors(&self, kind: ManifestKind) -> Vec<Descriptor> {
        self.layers
            .iter()
            .map(|l| Descriptor {
                media_type: l
                    .media_type
                    .clone()
                    .unwrap_or_else(|| kind.layer_media_type(l.compression)),
                digest: l.digest.clone(),
                size: l.size,
                platform: None,
                annotations: None,
            })
            .collect()
    }

    /// The manifest bytes (compact JSON).
    pub fn manifest_json(&self, kind: ManifestKind) -> Vec<u8> {
        let mut m = json!({
            "schemaVersion": 2,
            "mediaType": kind.manifest_media_type(),
            "config": self.config_descriptor(kind),
            "layers": self.layer_descriptors(kind),
        });
        if kind == ManifestKind::Oci && !self.annotations.is_empty() {
            m["annotations"] = json!(self.annotations);
        }
        serde_json::to_vec(&m).expect("manifest serialises")
    }

    /// Descriptor of the manifest, with this image's platform (as used in an index).
    pub fn manifest_descriptor(&self, kind: ManifestKind) -> Descriptor {
        let mut d = Descriptor::of(kind.manifest_media_type(), &self.manifest_json(kind));
        d.platform = Some(self.platform.clone());
        d
    }

    /// Digest of the manifest of `kind`.
    pub fn manifest_digest(&self, kind: ManifestKind) -> String {
        sha256_digest(&self.manifest_json(kind))
    }

    /// Every blob the manifest references: config first, then layers, as `(digest, bytes)`.
    pub fn blobs(&self) -> Vec<(String, &[u8])> {
        let mut out = vec![(
            sha256_digest(&self.config_json),
            self.config_json.as_slice(),
        )];
        out.extend(self.layers.iter().map(|l| (l.digest.clone(), &l.data[..])));
        out
    }

    /// Sum of the layer blob sizes.
    pub fn total_layer_bytes(&self) -> u64 {
        self.layers.iter().map(|l| l.data.len() as u64).sum()
    }
}

/// A multi-platform image: an OCI index or Docker manifest list over several images.
#[derive(Clone, Debug)]
pub struct Index {
    /// The per-platform images, in index order.
    pub images: Vec<Image>,
    /// Index annotations (OCI only).
    pub annotations: BTreeMap<String, String>,
}

impl Index {
    /// An index over `images`.
    pub fn new(images: Vec<Image>) -> Index {
        Index {
            images,
            annotations: BTreeMap::new(),
        }
    }

    /// `[decoy for another platform, image]`: the decoy comes first so "take the first entry" is caught.
    pub fn with_decoy(image: Image) -> Result<Index> {
        let decoy = super::catalog::decoy(&Platform::other(), &image.platform)?;
        Ok(Index::new(vec![decoy, image]))
    }

    /// The index / manifest list bytes (compact JSON).
    pub fn manifest_json(&self, kind: ManifestKind) -> Vec<u8> {
        let mut m = json!({
            "schemaVersion": 2,
            "mediaType": kind.index_media_type(),
            "manifests": self.images.iter().map(|i| i.manifest_descriptor(kind)).collect::<Vec<_>>(),
        });
        if kind == ManifestKind::Oci && !self.annotations.is_empty() {
            m["annotations"] = json!(self.annotations);
        }
        serde_json::to_vec(&m).expect("index serialises")
    }

    /// Digest of the index of `kind`.
    pub fn digest(&self, kind: ManifestKind) -> String {
        sha256_digest(&self.manifest_json(kind))
    }

    /// Descriptor of the index (no platform).
    pub fn descriptor(&self, kind: ManifestKind) -> Descriptor {
        Descriptor::of(kind.index_media_type(), &self.manifest_json(kind))
    }

    /// The image for `platform`, if any.
    pub fn image_for(&self, platform: &Platform) -> Option<&Image> {
        self.images.iter().find(|i| &i.platform == platform)
    }
}
