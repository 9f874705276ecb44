//! Capstan's test harness: blocking helpers (no tokio runtime needed) for unique names, cleanup guards, a real
//! OCI registry, in-memory OCI images, pushing, registry corruption and fault injection, image archives and
//! locating built binaries.
//!
//! Modules: [`names`], [`cleanup`], [`registry`], [`image`] (with [`image::catalog`] and [`image::hostile`]),
//! [`push`], [`corrupt`], [`faults`], [`archive`], [`binaries`], [`http`]; pods over CRI: [`pods`] (network,
//! per-test state, images) and [`cri_driver`] (a blocking kubelet-like client).
//!
//! ```no_run
//! use tests::image::{catalog, ManifestKind};
//! use tests::registry::{Registry, RegistryOptions};
//!
//! fn pull_test() -> anyhow::Result<()> {
//!     let reg = Registry::start(RegistryOptions::plain().tls(true).basic_auth("user", "pass"))?;
//!     let image = catalog::busybox()?;
//!     let digest = tests::push::push_image(&reg, "demo/busybox", "latest", &image, ManifestKind::Oci, true)?;
//!     let reference = tests::push::image_ref(&reg, "demo/busybox", "latest");
//!     // ... run `capstan` (tests::binaries::capstan_bin()) against `reference`, trusting reg.ca_cert_path() ...
//!     assert_eq!(reg.blob_get_count(&image.layers[0].digest)?, 1);
//!     let _ = digest;
//!     Ok(())
//! }
//! ```
//!
//! Set `CAPSTAN_TEST_KEEP=1` to keep temp dirs (registry storage and logs) after a test for debugging.

#![warn(missing_docs)]

pub mod agent;
pub mod apiserver;
pub mod archive;
pub mod binaries;
pub mod capstan;
pub mod cleanup;
pub mod cluster;
pub mod cni;
pub mod containerd;
pub mod corrupt;
pub mod cri_driver;
pub mod faults;
pub mod http;
pub mod image;
pub mod names;
pub mod netns;
pub mod podnet;
pub mod pods;
pub mod push;
pub mod registry;
pub mod token_service;

pub use cleanup::{Cleanup, TempRoot};
pub use image::{Compression, Entry, Image, Index, Layer, ManifestKind};
pub use names::{unique_name, unique_short};
pub use registry::{Registry, RegistryOptions};
