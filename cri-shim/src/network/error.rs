//! What can go wrong while networking a pod, with the file, plugin or attachment involved.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A failure of a CNI operation.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The configuration directory holds no candidate file.
    #[error("no CNI network configuration (*.conflist, *.conf, *.json) in {}", dir.display())]
    NoConfig {
        /// The configuration directory.
        dir: PathBuf,
    },
    /// Every candidate file was rejected.
    #[error("no usable CNI network configuration in {}: {}", dir.display(), Rejected(rejected))]
    NoValidConfig {
        /// The configuration directory.
        dir: PathBuf,
        /// Each rejected file with the reason.
        rejected: Vec<(PathBuf, String)>,
    },
    /// The configuration directory could not be read.
    #[error("reading CNI configuration directory {}: {source}", dir.display())]
    ConfDir {
        /// The configuration directory.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A network configuration (a file, or one held in the cache) is invalid.
    #[error("invalid CNI network configuration {}: {reason}", file.display())]
    InvalidConfig {
        /// Where the configuration came from.
        file: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// No plugin directory holds the plugin.
    #[error("CNI plugin {plugin:?} not found in {}", dirs_list(dirs))]
    PluginNotFound {
        /// The plugin type.
        plugin: String,
        /// The directories searched.
        dirs: Vec<PathBuf>,
    },
    /// The attachment cannot be expressed to plugins (bad IDs or names).
    #[error("invalid CNI attachment: {0}")]
    InvalidAttachment(String),
    /// A plugin reported a CNI error result.
    #[error(
        "CNI plugin {plugin} failed {command}: error {code}: {msg}{}",
        details_suffix(details)
    )]
    Plugin {
        /// The plugin type.
        plugin: String,
        /// The CNI command.
        command: &'static str,
        /// The spec's error code.
        code: u32,
        /// The plugin's message.
        msg: String,
        /// The plugin's details.
        details: String,
    },
    /// A plugin failed without printing an error result.
    #[error("CNI plugin {plugin} failed {command} ({status}) without an error result; stderr: {stderr:?}")]
    PluginCrashed {
        /// The plugin type.
        plugin: String,
        /// The CNI command.
        command: &'static str,
        /// How it exited.
        status: String,
        /// What it printed on stderr (truncated).
        stderr: String,
    },
    /// A plugin succeeded but printed something that is not a valid result.
    #[error("CNI plugin {plugin} printed an invalid {command} result: {reason}")]
    BadOutput {
        /// The plugin type.
        plugin: String,
        /// The CNI command.
        command: &'static str,
        /// What is wrong with the output.
        reason: String,
    },
    /// A plugin could not be started or talked to.
    #[error("running CNI plugin {}: {source}", path.display())]
    Exec {
        /// The plugin executable.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A plugin did not finish in time (it was killed).
    #[error("CNI plugin {plugin} did not finish {command} within {timeout:?}")]
    Timeout {
        /// The plugin type.
        plugin: String,
        /// The CNI command.
        command: &'static str,
        /// The limit.
        timeout: Duration,
    },
    /// The network's CNI version lacks the command.
    #[error("{command} is not defined for CNI version {version} (network {network:?})")]
    Unsupported {
        /// The CNI command.
        command: &'static str,
        /// The network's CNI version.
        version: String,
        /// The network name.
        network: String,
    },
    /// CHECK of an attachment the cache does not know.
    #[error("no cached CNI attachment for container {container_id} interface {ifname}")]
    NotAttached {
        /// The container ID.
        container_id: String,
        /// The interface name.
        ifname: String,
    },
    /// The result cache could not be read or written.
    #[error("CNI result cache {}: {reason}", path.display())]
    Cache {
        /// The cache file or directory.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// Several independent steps failed (GC, DEL through a chain).
    #[error("{}", Several(.0))]
    Several(Vec<NetworkError>),
}

impl NetworkError {
    /// The CNI error code a plugin reported, if this is a plugin's error result.
    pub fn cni_code(&self) -> Option<u32> {
        match self {
            Self::Plugin { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// One error from many: `None` when there are none, the error itself when there is one.
    pub(crate) fn combine(mut errors: Vec<NetworkError>) -> Option<NetworkError> {
        match errors.len() {
            0 => None,
            1 => errors.pop(),
            _ => Some(Self::Several(errors)),
        }
    }
}

fn dirs_list(dirs: &[PathBuf]) -> String {
    let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    if names.is_empty() {
        "(no plugin directories configured)".to_owned()
    } else {
        names.join(", ")
    }
}

fn details_suffix(details: &str) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!(" ({details})")
    }
}

struct Rejected<'a>(&'a [(PathBuf, String)]);

impl fmt::Display for Rejected<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (file, reason)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {reason}", file.display())?;
        }
        Ok(())
    }
}

struct Several<'a>(&'a [NetworkError]);

impl fmt::Display for Several<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} CNI errors: ", self.0.len())?;
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}
