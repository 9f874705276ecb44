//! kube-controller-manager's EndpointSlice controller, running inside the API test server: every Service with
//! a selector gets slices (one or more per address type) listing the pods it selects that have an IP, with
//! their readiness, node, zone and resolved ports, kept up to date as pods, Services and Nodes change.
//!
//! Submodules: [`desired`] (the endpoints a Service should have, pure), [`plan`] (the slice writes that get
//! there, pure) and [`controller`] (the loop applying them to the store).

pub mod controller;
pub mod desired;
pub mod plan;

#[cfg(test)]
mod tests;

pub use controller::Controller;
