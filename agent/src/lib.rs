//! The Capstan node agent as a library: the kubelet part, the shared API informers and the
//! metrics registry, used by the `capstan` binary.

pub mod informer;
pub mod kubelet;
pub mod metrics;
pub mod node_services;
pub mod service_stores;
