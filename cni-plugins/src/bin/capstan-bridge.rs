//! `capstan-bridge`: the CNI plugin attaching containers to a Linux bridge through veth pairs.

fn main() -> std::process::ExitCode {
    cni_plugins::skel::run(&cni_plugins::bridge::Bridge)
}
