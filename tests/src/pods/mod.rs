//! Running pods over CRI: a CNI network for runtimes ([`PodNetwork`]), the per-test state
//! kubelet would provide ([`PodEnv`]: logs, cgroup parent, config builders), the images
//! pods run ([`PodImages`]), a running node fixture ([`Node`]) and /proc helpers for footprint figures ([`procs`]).

pub mod bench;
mod env;
mod images;
mod network;
mod node;
pub mod procs;

pub use env::{container_config, monitor_pids, PodEnv, ENV_LABEL};
pub use images::{pause, PodImages, PAUSE_SECONDS};
pub use network::{PodNetwork, CNI_VERSION};
pub use node::Node;
