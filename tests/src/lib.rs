//! Capstan's test harness: blocking helpers (no tokio runtime needed) for unique names, cleanup guards,
//! a real OCI registry, in-memory OCI images, pushing, image archives and locating built binaries.

pub mod cleanup;
pub mod http;
pub mod names;
pub mod registry;
