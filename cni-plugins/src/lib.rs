//! Capstan's CNI plugins (executables under `src/bin/`) and the CNI specification types that
//! both the plugins and Capstan's runtime use, so the two sides share one definition.

pub mod error;
pub mod skel;
pub mod types;
pub mod version;
