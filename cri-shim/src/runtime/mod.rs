//! The RuntimeService state: sandbox and container stores backed by disk, and their operations.
