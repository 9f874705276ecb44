//! The Capstan node agent as a library: the kubelet part, used by the `capstan` binary.

pub mod kubelet;
