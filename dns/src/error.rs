//! The crate's error type.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Errors of the DNS server and its node-local set-up.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// resolv.conf could not be read.
    #[error("reading {path}: {source}")]
    ResolvConf {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An `upstreams` entry is not `ip` or `ip:port`.
    #[error("upstream {0:?} is not an IP address or IP:port")]
    BadUpstream(String),
    /// Binding a listening socket failed.
    #[error("binding {proto} {addr}: {source}")]
    Bind {
        /// `udp`, `tcp` or `http`.
        proto: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The DNS server stopped with an error.
    #[error("DNS server: {0}")]
    Server(String),
    /// The health endpoint address is not `host:port`.
    #[error("health bind address {0:?} is not IP:port")]
    BadHealthAddress(String),
    /// A netlink request failed.
    #[error("netlink: {what}: {detail}")]
    Netlink {
        /// What was being done.
        what: String,
        /// The kernel's answer.
        detail: String,
    },
    /// `nft` failed.
    #[error("nft: {what}: {detail}")]
    Nft {
        /// What was being done.
        what: String,
        /// nft's output or the spawn error.
        detail: String,
    },
    /// A configured name (interface, table) is unusable.
    #[error("invalid {what} {value:?}")]
    InvalidName {
        /// Which setting.
        what: &'static str,
        /// The value.
        value: String,
    },
}
