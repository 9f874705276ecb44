//! The node Lease (`kube-node-lease/<node>`, the kubelet's node lease controller): created
//! owned by the Node, renewed every quarter of its duration with a little jitter, retried
//! with back-off when the API fails.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::api::{Api, PostParams};

use crate::kubelet::bootstrap::ApiClient;
use crate::kubelet::cluster::Retry;

/// The namespace node leases live in.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// Attempts per renewal before waiting for the next interval (the kubelet's maxUpdateRetries).
const MAX_ATTEMPTS: usize = 5;

/// Jitter of the renew interval (the kubelet's JitterUntil factor).
const JITTER: f64 = 0.04;

/// Who the lease belongs to.
#[derive(Debug, Clone)]
pub struct LeaseOwner {
    /// The node's name (the lease's name and holder).
    pub node: String,
    /// The Node's UID, for the owner reference.
    pub node_uid: String,
    /// `leaseDurationSeconds`.
    pub duration_seconds: i32,
}

impl LeaseOwner {
    /// How often the lease is renewed: a quarter of its duration.
    pub fn renew_interval(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.duration_seconds).unwrap_or(40) * 250)
    }

    /// `lease` (or a new one) held by this node, renewed at `now`.
    pub fn renewed(&self, lease: Option<Lease>, now: jiff::Timestamp) -> Lease {
        let mut lease = lease.unwrap_or_else(|| Lease {
            metadata: ObjectMeta {
                name: Some(self.node.clone()),
                namespace: Some(LEASE_NAMESPACE.to_owned()),
                owner_references: Some(vec![OwnerReference {
                    api_version: "v1".to_owned(),
                    kind: "Node".to_owned(),
                    name: self.node.clone(),
                    uid: self.node_uid.clone(),
                    ..OwnerReference::default()
                }]),
                ..ObjectMeta::default()
            },
            spec: None,
        });
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = Some(self.node.clone());
        spec.lease_duration_seconds = Some(self.duration_seconds);
        spec.renew_time = Some(MicroTime(now));
        lease
    }
}

/// Renews the lease forever; `trouble` is raised whenever a request fails.
pub async fn run(client: ApiClient, owner: LeaseOwner, trouble: &AtomicBool) {
    let mut latest: Option<Lease> = None;
    loop {
        let mut retry = Retry::new(Duration::from_millis(200), Duration::from_secs(7));
        for attempt in 1..=MAX_ATTEMPTS {
            let api: Api<Lease> = Api::namespaced(client.current(), LEASE_NAMESPACE);
            match renew_once(&api, &owner, latest.take()).await {
                Ok(lease) => {
                    latest = Some(lease);
                    break;
                }
                Err(error) => {
                    trouble.store(true, Ordering::Relaxed);
                    tracing::warn!(%error, attempt, node = %owner.node, "renewing the node lease failed");
                    if attempt < MAX_ATTEMPTS {
                        tokio::time::sleep(retry.next_delay()).await;
                    }
                }
            }
        }
        tokio::time::sleep(jittered(owner.renew_interval())).await;
    }
}

/// Update the last known lease; without one (first time, or after a failure), read it and
/// create it when missing.
async fn renew_once(
    api: &Api<Lease>,
    owner: &LeaseOwner,
    latest: Option<Lease>,
) -> Result<Lease, kube::Error> {
    let params = PostParams::default();
    let current = match latest {
        Some(lease) => Some(lease),
        None => api.get_opt(&owner.node).await?,
    };
    let now = jiff::Timestamp::now();
    match current {
        Some(lease) => {
            api.replace(&owner.node, &params, &owner.renewed(Some(lease), now))
                .await
        }
        None => api.create(&params, &owner.renewed(None, now)).await,
    }
}

/// `base` stretched by up to 4 %.
fn jittered(base: Duration) -> Duration {
    base.mul_f64(1.0 + rand::random_range(0.0..JITTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> LeaseOwner {
        LeaseOwner {
            node: "n1".to_owned(),
            node_uid: "uid-1".to_owned(),
            duration_seconds: 40,
        }
    }

    #[test]
    fn a_new_lease_is_held_by_the_node_and_owned_by_it() {
        let now = jiff::Timestamp::from_second(1000).unwrap();
        let lease = owner().renewed(None, now);
        assert_eq!(lease.metadata.namespace.as_deref(), Some("kube-node-lease"));
        assert_eq!(lease.metadata.name.as_deref(), Some("n1"));
        let reference = &lease.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (
                reference.kind.as_str(),
                reference.name.as_str(),
                reference.uid.as_str()
            ),
            ("Node", "n1", "uid-1")
        );
        let spec = lease.spec.as_ref().unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("n1"));
        assert_eq!(spec.lease_duration_seconds, Some(40));
        assert_eq!(spec.renew_time, Some(MicroTime(now)));
        let later = jiff::Timestamp::from_second(1010).unwrap();
        let renewed = owner().renewed(Some(lease.clone()), later);
        assert_eq!(renewed.metadata, lease.metadata);
        assert_eq!(renewed.spec.unwrap().renew_time, Some(MicroTime(later)));
    }

    #[test]
    fn renewal_is_every_quarter_of_the_duration_with_small_jitter() {
        assert_eq!(owner().renew_interval(), Duration::from_secs(10));
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(10));
            assert!(
                d >= Duration::from_secs(10) && d <= Duration::from_millis(10_400),
                "{d:?}"
            );
        }
    }

    fn gaps(seen: &[super::super::fake_api::Seen]) -> Vec<Duration> {
        seen.windows(2).map(|w| w[1].at - w[0].at).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn the_lease_is_created_then_renewed_every_ten_seconds() {
        let api = super::super::fake_api::FakeApi::default();
        let trouble = AtomicBool::new(false);
        let started = tokio::time::Instant::now();
        let _ = tokio::time::timeout(
            Duration::from_secs(35),
            run(api.client(), owner(), &trouble),
        )
        .await;
        let seen = api.seen();
        let methods: Vec<&str> = seen.iter().map(|s| s.method.as_str()).collect();
        assert_eq!(methods, ["GET", "POST", "PUT", "PUT", "PUT"], "{seen:?}");
        assert!(seen[0].at - started < Duration::from_millis(10));
        for gap in &gaps(&seen)[1..] {
            assert!(
                *gap >= Duration::from_secs(10) && *gap <= Duration::from_millis(10_400),
                "{gap:?}"
            );
        }
        assert!(!trouble.load(Ordering::Relaxed));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_retried_with_back_off_then_the_lease_is_read_again() {
        let api = super::super::fake_api::FakeApi::default();
        let trouble = AtomicBool::new(false);
        let started = tokio::time::Instant::now();
        // Up from the start, down from 5 s to 25 s.
        let client = api.client();
        let renewing = run(client, owner(), &trouble);
        let outage = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            api.fail_until(started + Duration::from_secs(25));
            std::future::pending::<()>().await
        };
        let _ = tokio::time::timeout(Duration::from_secs(40), async {
            tokio::join!(renewing, outage)
        })
        .await;
        assert!(trouble.load(Ordering::Relaxed));
        let seen = api.seen();
        let failed: Vec<_> = seen.iter().filter(|s| s.failed).cloned().collect();
        // The renewal at ~10 s tries five times with doubling delays, gives up until the next
        // interval (~24 s), and is still retrying when the server comes back at 25 s.
        assert!(failed.len() > 5 && failed.len() < 10, "{seen:?}");
        let gap = failed[5].at - failed[4].at;
        assert!(
            gap >= Duration::from_secs(10),
            "waited for the next interval: {gap:?}"
        );
        let first_round = gaps(&failed[..5]);
        for (gap, base) in first_round.iter().zip([200u64, 400, 800, 1600]) {
            let (low, high) = (base * 8 / 10, base * 12 / 10);
            assert!(
                (low..=high).contains(&(gap.as_millis() as u64)),
                "{first_round:?}"
            );
        }
        // After the outage the lease is read again, then renewed.
        let after: Vec<&str> = seen
            .iter()
            .filter(|s| !s.failed && s.at > started + Duration::from_secs(25))
            .map(|s| s.method.as_str())
            .collect();
        assert_eq!(after.first().copied(), Some("GET"), "{seen:?}");
        assert_eq!(after.get(1).copied(), Some("PUT"), "{seen:?}");
        let back = seen
            .iter()
            .find(|s| !s.failed && s.at > started + Duration::from_secs(25));
        let delay = back.map(|s| s.at - (started + Duration::from_secs(25)));
        assert!(
            delay.is_some_and(|d| d < Duration::from_secs(4)),
            "{delay:?}"
        );
    }
}
