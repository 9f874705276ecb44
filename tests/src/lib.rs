//! Capstan's test harness: blocking helpers (no tokio runtime needed) for unique names, cleanup guards, a real
//! OCI registry, in-memory OCI images, pushing, registry corruption and fault injection, image archives and
//! locating built binaries.

pub mod archive;
pub mod binaries;
pub mod capstan;
pub mod cleanup;
pub mod containerd;
pub mod corrupt;
pub mod faults;
pub mod http;
pub mod image;
pub mod names;
pub mod push;
pub mod registry;

pub use cleanup::{Cleanup, TempRoot};
pub use image::{Compression, Entry, Image, Index, Layer, ManifestKind};
pub use names::{unique_name, unique_short};
pub use registry::{Registry, RegistryOptions};
