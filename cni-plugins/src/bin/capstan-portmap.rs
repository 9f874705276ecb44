//! `capstan-portmap`: the CNI plugin forwarding host ports to containers with nftables.

use std::process::ExitCode;

fn main() -> ExitCode {
    cni_plugins::skel::run(&cni_plugins::portmap::Portmap)
}
