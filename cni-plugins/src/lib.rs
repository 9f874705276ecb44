//! Capstan's CNI plugins (executables under `src/bin/`) and the CNI specification types that
//! both the plugins and Capstan's runtime use, so the two sides share one definition.

pub mod bridge;
pub mod delegate;
pub mod error;
pub mod ipam;
pub mod loopback;
pub mod netlink;
pub mod netns;
pub mod portmap;
pub mod skel;
pub mod types;
pub mod version;
