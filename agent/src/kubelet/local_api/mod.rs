//! The local API the `capstan pods/logs/exec` commands talk to: HTTP/1.1 with JSON bodies
//! on a unix socket (mode 0600), served over the kubelet's state through [`NodeState`].
//!
//! Routes (errors are `{"error": "..."}` with 400, 404 or 500):
//! - `GET /v1/pods` → [`PodList`] (all namespaces, plus manifest errors);
//!   `GET /v1/namespaces/{ns}/pods` → the same for one namespace.
//! - `GET /v1/pods?watch=true` (or the namespaced form) → newline-delimited [`WatchEvent`]
//!   JSON: the current pods as `ADDED`, then every change, one line each as it happens.
//! - `GET /v1/namespaces/{ns}/pods/{name}` → [`PodDetail`] (the pod and its recent events).
//! - `GET /v1/namespaces/{ns}/pods/{name}/log?container=&follow=&tailLines=&previous=&timestamps=&stream=`
//!   → the container's log as plain text (see [`LogQuery`]); with `follow` it streams until
//!   the container stops.
//! - `POST /v1/namespaces/{ns}/pods/{name}/exec` with [`ExecRequest`] → [`ExecResponse`]
//!   (`exitCode`, and `stdout`/`stderr` in base64 so binary output survives).
//!
//! `{name}` is a pod's name or, for static pods (named `<name>-<node>` like the kubelet
//! does), the manifest's name. Without `container`, the pod's only container is used (or
//! the `kubectl.kubernetes.io/default-container` annotation's); several are a 400 naming them.

pub mod client;
pub mod present;
pub mod server;
pub mod types;

pub use client::{Client, ClientError};
pub use server::{bind, find_pod, resolve_container, router, serve, ServeError};
pub use types::*;

#[cfg(test)]
mod tests;
