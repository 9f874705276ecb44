//! The kubelet part of the agent: pod sources, per-pod workers over CRI, volumes, probes,
//! pod status and the local API the `capstan pods/logs/exec` commands talk to.

pub mod admission;
pub mod api_objects;
pub mod bootstrap;
pub mod cluster;
pub mod config;
pub mod convert;
pub mod events;
pub mod local_api;
pub mod logs;
pub mod node;
pub mod node_state;
pub mod node_status;
pub mod probe;
pub mod runtime;
pub mod source;
pub mod status;
pub mod volumes;
pub mod worker;
