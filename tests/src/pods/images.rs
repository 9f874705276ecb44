//! The images pods run, served by a loopback registry over plain HTTP: busybox for
//! containers and a busybox-based pause image for runtimes that need a sandbox image.

use anyhow::Result;
use serde_json::json;

use crate::image::catalog::{self, DEFAULT_PATH};
use crate::image::{Image, ManifestKind};
use crate::push::{image_ref, push_image};
use crate::registry::{Registry, RegistryOptions};

/// Seconds the pause process sleeps: the largest `sleep` accepts as a 32-bit count,
/// about 68 years. Runtimes stop sandboxes with SIGKILL, so it needs no signal handling.
pub const PAUSE_SECONDS: &str = "2147483647";

/// A pause image: busybox's layer with `sleep` forever as its entrypoint.
pub fn pause() -> Result<Image> {
    let mut image = catalog::busybox()?;
    image.sync_config(json!({
        "config": {
            "Entrypoint": ["/bin/busybox", "sleep", PAUSE_SECONDS],
            "Env": [DEFAULT_PATH],
            "WorkingDir": "/",
        }
    }))?;
    Ok(image)
}

/// A plain-HTTP loopback registry holding the busybox and pause images.
pub struct PodImages {
    registry: Registry,
    busybox: String,
    pause: String,
}

impl PodImages {
    /// Start the registry and push both images.
    pub fn start() -> Result<Self> {
        let registry = Registry::start(RegistryOptions::plain())?;
        push_image(
            &registry,
            "capstan-test/busybox",
            "1",
            &catalog::busybox()?,
            ManifestKind::Oci,
            false,
        )?;
        push_image(
            &registry,
            "capstan-test/pause",
            "1",
            &pause()?,
            ManifestKind::Oci,
            false,
        )?;
        Ok(Self {
            busybox: image_ref(&registry, "capstan-test/busybox", "1"),
            pause: image_ref(&registry, "capstan-test/pause", "1"),
            registry,
        })
    }

    /// The registry (for runtime settings: plain HTTP to [`Registry::host`]).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Reference of the busybox image.
    pub fn busybox(&self) -> &str {
        &self.busybox
    }

    /// Reference of the pause image.
    pub fn pause(&self) -> &str {
        &self.pause
    }
}
