//! A running `capstan cri` with pods on a reference-plugin network, the busybox and pause
//! images pulled: the fixture CRI pod and container suites start from.

use anyhow::Result;

use super::{PodEnv, PodImages, PodNetwork};
use crate::binaries::require_root;
use crate::capstan::{CapstanCri, CriConfig};
use crate::cri_driver::CriDriver;

/// `runtime:` line mapping the `runc` handler to the host's runc.
const RUNC_HANDLER: &str = "runtimeHandlers:\n  runc:\n    path: /usr/bin/runc";

/// A running `capstan cri` with pods on a reference-plugin network.
pub struct Node {
    /// Registry serving the pod images.
    pub images: PodImages,
    /// The pods' CNI network.
    pub net: PodNetwork,
    /// Logs, cgroup parent and run root of this node's pods.
    pub env: PodEnv,
    /// The runtime under test.
    pub cri: CapstanCri,
}

impl Node {
    /// Start `capstan cri` (built-in executor, and runc as handler `runc`) and pull busybox.
    pub fn start() -> Result<Self> {
        Self::start_with(&[])
    }

    /// [`Self::start`] with extra `runtime:` config lines.
    pub fn start_with(lines: &[&str]) -> Result<Self> {
        require_root()?;
        let images = PodImages::start()?;
        let net = PodNetwork::reference()?;
        let env = PodEnv::new()?;
        let config = lines.iter().fold(
            env.capstan_config(&net, CriConfig::default().registry(images.registry()))
                .line(RUNC_HANDLER),
            |config, line| config.line(line),
        );
        let cri = CapstanCri::start(&config)?;
        let node = Self {
            images,
            net,
            env,
            cri,
        };
        node.driver(None)?.pull_image(node.images.busybox())?;
        Ok(node)
    }

    /// A CRI client running sandboxes with `handler` (`None`: the built-in executor).
    pub fn driver(&self, handler: Option<&str>) -> Result<CriDriver> {
        let driver = CriDriver::connect(&self.cri.socket())?;
        Ok(match handler {
            Some(h) => driver.with_runtime_handler(h),
            None => driver,
        })
    }
}
