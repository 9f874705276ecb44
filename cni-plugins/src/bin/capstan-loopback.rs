//! `capstan-loopback`: the CNI loopback plugin.

use std::process::ExitCode;

fn main() -> ExitCode {
    cni_plugins::skel::run(&cni_plugins::loopback::Loopback)
}
