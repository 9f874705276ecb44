//! Pod status: what was observed in the runtime, the kubelet's status computation, and the
//! store the local API reads.

mod compute;
mod observed;
mod store;

pub use compute::{is_sidecar, pod_status, restart_policy, will_restart, StatusInput};
pub use observed::{cri_time, ContainerHistory, ObservedContainer, RunState, Waiting};
pub use store::{ContainerRecord, Event, EventKind, EventListener, PodStore};
