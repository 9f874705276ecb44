//! What the kubelet observed of a pod's containers in the runtime, per container name.

use jiff::Timestamp;

/// A container's run state as CRI reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Exited.
    Exited,
    /// The runtime does not know.
    Unknown,
}

/// One container instance (one restart) in the runtime.
#[derive(Debug, Clone)]
pub struct ObservedContainer {
    /// CRI container ID.
    pub id: String,
    /// Run state.
    pub state: RunState,
    /// Exit code once exited.
    pub exit_code: i32,
    /// The runtime's reason (Completed, Error, OOMKilled, ...).
    pub reason: String,
    /// The termination message (or the runtime's message).
    pub message: String,
    /// When it was created.
    pub created_at: Option<Timestamp>,
    /// When it started.
    pub started_at: Option<Timestamp>,
    /// When it exited.
    pub finished_at: Option<Timestamp>,
    /// Which restart this is (0 for the first run).
    pub restart_count: u32,
    /// The image as the spec names it.
    pub image: String,
    /// The image's resolved ID/digest.
    pub image_ref: String,
    /// The spec hash it was created from (changed spec → replace).
    pub spec_hash: String,
}

impl ObservedContainer {
    /// Exited with code 0.
    pub fn succeeded(&self) -> bool {
        self.state == RunState::Exited && self.exit_code == 0
    }

    /// Exited with a non-zero code.
    pub fn failed(&self) -> bool {
        self.state == RunState::Exited && self.exit_code != 0
    }
}

/// The latest instance of a container and the one before it (lastState).
#[derive(Debug, Clone, Default)]
pub struct ContainerHistory {
    /// The newest instance.
    pub current: Option<ObservedContainer>,
    /// The instance before it.
    pub previous: Option<ObservedContainer>,
}

/// Why a container is not running, as the kubelet reports it in `state.waiting`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// CrashLoopBackOff, ErrImagePull, ImagePullBackOff, CreateContainerError, ...
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
}

impl Waiting {
    /// A waiting reason with its message.
    pub fn new(reason: &str, message: impl Into<String>) -> Self {
        Self {
            reason: reason.to_owned(),
            message: message.into(),
        }
    }
}

/// Convert CRI nanoseconds since the epoch (0: unset).
pub fn cri_time(nanos: i64) -> Option<Timestamp> {
    if nanos <= 0 {
        return None;
    }
    Timestamp::from_nanosecond(i128::from(nanos)).ok()
}
