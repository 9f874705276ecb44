//! `capstan-ipam`: Capstan's host-local-compatible IPAM plugin.

use std::process::ExitCode;

use cni_plugins::{ipam::Ipam, skel};

fn main() -> ExitCode {
    skel::run(&Ipam)
}
