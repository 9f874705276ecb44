//! The RuntimeService state: sandbox and container stores backed by disk, and their operations.

pub mod cgroups;
pub mod error;
pub mod files;
pub mod rootfs;
pub mod store;
