//! The API test server: an in-memory stand-in for kube-apiserver over HTTPS, faithful where
//! the agent and `kubectl` depend on it. Test infrastructure, not product.

pub mod patch;
pub mod resources;
pub mod security;
pub mod selector;
pub mod status;
pub mod store;
