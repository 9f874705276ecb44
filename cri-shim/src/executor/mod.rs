//! The built-in OCI executor: turns a bundle's runtime spec into a running process.
