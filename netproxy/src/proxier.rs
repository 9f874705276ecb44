//! The Proxier: keeps the per-Service plan cache, the desired and the programmed models of
//! both tables, and turns a [`ClusterState`] into one incremental `nft -f` transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::config::{NodePortAddresses, ProxyConfig};
use crate::error::ProxyError;
use crate::localaddr::local_addresses;
use crate::metrics::ProxyMetrics;
use crate::model::{
    ClusterState, IpFamily, NodeContext, Rejected, ServiceClass, ServiceInfo, ServiceKey, SliceInfo,
};
use crate::nft::{parse_table, NftBackend};
use crate::plan::{plan_service, Coll, Element, PlanContext, ServicePlan};
use crate::table::{copy_touched, diff_script, skeleton, Chain, TableModel, Touched};

/// Label naming the Service an EndpointSlice belongs to.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// EndpointSlice annotation with the time of the change that triggered it.
const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// A UDP flow target whose conntrack entries may point at a gone endpoint (or at a cached
/// reject from when the service had none).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StaleUdp {
    /// The service address.
    pub vip: IpAddr,
    /// The service port.
    pub port: u16,
    /// The removed endpoint; `None` = every entry for `vip:port` (service got endpoints).
    pub endpoint: Option<IpAddr>,
}

/// What one sync did.
#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    /// Whether the kernel tables were re-read and repaired.
    pub full: bool,
    /// Services re-planned.
    pub changed_services: usize,
    /// Whether a transaction was applied (false when nothing differed).
    pub applied: bool,
    /// UDP conntrack entries to clear.
    pub stale_udp: Vec<StaleUdp>,
    /// Ready local endpoints of every externalTrafficPolicy Local Service with a
    /// healthCheckNodePort (all of them, not only the changed ones).
    pub local_endpoints: BTreeMap<ServiceKey, usize>,
    /// Objects newly skipped as invalid in this sync.
    pub rejected: Vec<Rejected>,
}

/// A Service's plans for IPv4 and IPv6.
type Plans = [Arc<ServicePlan>; 2];

/// One Service's cached plans and the exact objects they were made from.
struct CacheEntry {
    service: Arc<Service>,
    slices: Vec<Arc<EndpointSlice>>,
    plans: [Arc<ServicePlan>; 2],
}

impl CacheEntry {
    fn matches(&self, service: &Arc<Service>, slices: &[Arc<EndpointSlice>]) -> bool {
        Arc::ptr_eq(&self.service, service)
            && self.slices.len() == slices.len()
            && self
                .slices
                .iter()
                .zip(slices)
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }
}

/// The pseudo-owner of node-wide elements (the nodeport addresses).
fn node_owner() -> ServiceKey {
    (String::new(), String::new())
}

/// Owns the plan cache, both tables' models and the nft backend.
pub struct Proxier {
    table: String,
    proxy_name: Option<String>,
    node: NodeContext,
    nodeport_addresses: NodePortAddresses,
    contexts: [PlanContext; 2],
    backend: Box<dyn NftBackend>,
    metrics: ProxyMetrics,
    cache: HashMap<ServiceKey, CacheEntry>,
    desired: [TableModel; 2],
    owners: [HashMap<(Coll, String), ServiceKey>; 2],
    programmed: [TableModel; 2],
    needs_full: bool,
    sync_period: Duration,
    min_sync_period: Duration,
}

fn index(family: IpFamily) -> usize {
    match family {
        IpFamily::V4 => 0,
        IpFamily::V6 => 1,
    }
}

impl Proxier {
    /// A proxier for `node` programming `config.table_name` through `backend`.
    pub fn new(
        config: &ProxyConfig,
        node: NodeContext,
        backend: Box<dyn NftBackend>,
        metrics: ProxyMetrics,
    ) -> Result<Self, ProxyError> {
        config.validate()?;
        let cidrs = config.cluster_cidrs()?;
        let nodeport_addresses = config.node_port_addresses()?;
        let mark = config.nftables.masquerade_mark();
        let context = |family| PlanContext {
            family,
            cluster_cidrs: cidrs
                .iter()
                .copied()
                .filter(|c| IpFamily::of(&c.addr()) == family)
                .collect(),
            masquerade_all: config.nftables.masquerade_all,
            zone: node.zone.clone(),
            nodeports: false,
        };
        let mut proxier = Self {
            table: config.table_name.clone(),
            proxy_name: config.service_proxy_name.clone(),
            contexts: [context(IpFamily::V4), context(IpFamily::V6)],
            node,
            nodeport_addresses,
            backend,
            metrics,
            cache: HashMap::new(),
            desired: Default::default(),
            owners: Default::default(),
            programmed: Default::default(),
            needs_full: true,
            sync_period: config.nftables.sync_period.0,
            min_sync_period: config.nftables.min_sync_period.0,
        };
        for family in IpFamily::ALL {
            proxier.desired[index(family)].chains = skeleton(family, mark);
        }
        proxier.refresh_nodeport_ips(&mut [Touched::default(), Touched::default()]);
        Ok(proxier)
    }

    /// Interval of full syncs (`nftables.syncPeriod`).
    pub fn sync_period(&self) -> Duration {
        self.sync_period
    }

    /// Shortest interval between syncs (`nftables.minSyncPeriod`).
    pub fn min_sync_period(&self) -> Duration {
        self.min_sync_period
    }

    /// Adopt what is in the kernel (agent restart): read both tables back, no flush. The next
    /// sync then changes only what differs from the cluster state.
    pub fn adopt(&mut self) -> Result<(), ProxyError> {
        for family in IpFamily::ALL {
            self.programmed[index(family)] = self.read_table(family)?;
        }
        Ok(())
    }

    /// Remove both tables (`capstan proxy --cleanup`); absent tables are fine.
    pub fn cleanup(&mut self) -> Result<(), ProxyError> {
        let mut script = String::new();
        for family in IpFamily::ALL {
            if self.backend.list_table(family, &self.table)?.is_some() {
                script.push_str(&format!("delete table {} {}\n", family.nft(), self.table));
            }
            self.programmed[index(family)] = TableModel::default();
        }
        self.needs_full = true;
        if script.is_empty() {
            return Ok(());
        }
        self.backend.apply(&script)
    }

    fn read_table(&mut self, family: IpFamily) -> Result<TableModel, ProxyError> {
        match self.backend.list_table(family, &self.table)? {
            Some(json) => parse_table(&json),
            None => Ok(TableModel::default()),
        }
    }

    /// Recompute the nodeport addresses (interfaces may have changed).
    fn refresh_nodeport_ips(&mut self, touched: &mut [Touched; 2]) {
        let local = match &self.nodeport_addresses {
            NodePortAddresses::Primary => Vec::new(),
            NodePortAddresses::Cidrs(_) => local_addresses(),
        };
        let ips = self.nodeport_addresses.select(&self.node.ips, &local);
        for family in IpFamily::ALL {
            let i = index(family);
            let wanted: BTreeSet<String> = ips
                .iter()
                .filter(|ip| IpFamily::of(ip) == family)
                .map(ToString::to_string)
                .collect();
            self.contexts[i].nodeports = !wanted.is_empty();
            let desired = &mut self.desired[i];
            let current: Vec<String> = desired
                .elements
                .keys()
                .filter(|(c, _)| *c == Coll::NodeportIps)
                .map(|(_, k)| k.clone())
                .collect();
            for key in current.into_iter().filter(|k| !wanted.contains(k)) {
                desired.elements.remove(&(Coll::NodeportIps, key.clone()));
                self.owners[i].remove(&(Coll::NodeportIps, key.clone()));
                touched[i].elements.insert((Coll::NodeportIps, key));
            }
            for key in wanted {
                let k = (Coll::NodeportIps, key);
                if desired.elements.insert(k.clone(), String::new()).is_none() {
                    self.owners[i].insert(k.clone(), node_owner());
                    touched[i].elements.insert(k);
                }
            }
        }
    }

    /// Plan one Service from its objects: plans for both families and what was rejected.
    fn plan(
        &self,
        service: &Service,
        slices: &[Arc<EndpointSlice>],
        rejected: &mut Vec<Rejected>,
    ) -> [Arc<ServicePlan>; 2] {
        let meta = &service.metadata;
        let reject = |kind, ns: &Option<String>, name: &Option<String>, reason: String| Rejected {
            kind,
            namespace: ns.clone().unwrap_or_default(),
            name: name.clone().unwrap_or_default(),
            reason,
        };
        let info = match ServiceInfo::classify(service, self.proxy_name.as_deref()) {
            Ok(ServiceClass::Proxied(info)) => *info,
            Ok(ServiceClass::Ignored) => return Default::default(),
            Err(reason) => {
                rejected.push(reject("Service", &meta.namespace, &meta.name, reason));
                return Default::default();
            }
        };
        let mut parsed: Vec<SliceInfo> = Vec::new();
        for slice in slices {
            match SliceInfo::parse(slice, &self.node.name) {
                Ok(Some(s)) => parsed.push(s),
                Ok(None) => {}
                Err(reason) => rejected.push(reject(
                    "EndpointSlice",
                    &slice.metadata.namespace,
                    &slice.metadata.name,
                    reason,
                )),
            }
        }
        let refs: Vec<&SliceInfo> = parsed.iter().collect();
        [
            Arc::new(plan_service(&self.contexts[0], &info, &refs)),
            Arc::new(plan_service(&self.contexts[1], &info, &refs)),
        ]
    }

    /// Swap `key`'s contribution to the desired models from `old` to `new`, recording the
    /// names touched. An element another Service already owns is refused (reported).
    fn replace(
        &mut self,
        key: &ServiceKey,
        old: &[Arc<ServicePlan>; 2],
        new: &[Arc<ServicePlan>; 2],
        touched: &mut [Touched; 2],
        rejected: &mut Vec<Rejected>,
    ) {
        for i in 0..2 {
            let (desired, owners, t) = (&mut self.desired[i], &mut self.owners[i], &mut touched[i]);
            for (name, _) in &old[i].chains {
                desired.chains.remove(name);
                t.chains.insert(name.clone());
            }
            for e in &old[i].elements {
                let k = (e.coll, e.key.clone());
                if owners.get(&k) == Some(key) {
                    owners.remove(&k);
                    desired.elements.remove(&k);
                    t.elements.insert(k);
                }
            }
            for (name, _) in &old[i].affinity_sets {
                desired.affinity.remove(name);
                t.affinity.insert(name.clone());
            }
            for (name, rules) in &new[i].chains {
                desired
                    .chains
                    .insert(name.clone(), Chain::new(rules.clone()));
                t.chains.insert(name.clone());
            }
            for Element {
                coll,
                key: text,
                value,
            } in &new[i].elements
            {
                let k = (*coll, text.clone());
                match owners.get(&k) {
                    Some(owner) if owner != key => rejected.push(Rejected {
                        kind: "Service",
                        namespace: key.0.clone(),
                        name: key.1.clone(),
                        reason: format!(
                            "{} {text} is already used by {}/{}",
                            coll.name(),
                            owner.0,
                            owner.1
                        ),
                    }),
                    _ => {
                        owners.insert(k.clone(), key.clone());
                        desired.elements.insert(k.clone(), value.clone());
                        t.elements.insert(k);
                    }
                }
            }
            for (name, timeout) in &new[i].affinity_sets {
                desired.affinity.insert(name.clone(), *timeout);
                t.affinity.insert(name.clone());
            }
        }
    }

    /// Plan and apply; `full` re-reads both tables from the kernel and repairs any drift.
    pub fn sync(&mut self, state: &ClusterState, full: bool) -> Result<SyncReport, ProxyError> {
        let started = Instant::now();
        let result = self.sync_inner(state, full);
        self.metrics
            .sync_finished(started.elapsed(), result.is_ok());
        result
    }

    fn sync_inner(&mut self, state: &ClusterState, full: bool) -> Result<SyncReport, ProxyError> {
        let full = full || self.needs_full;
        let mut report = SyncReport {
            full,
            ..Default::default()
        };
        let mut touched = [Touched::default(), Touched::default()];
        if full {
            self.refresh_nodeport_ips(&mut touched);
        }
        let mut by_service: HashMap<ServiceKey, Vec<Arc<EndpointSlice>>> = HashMap::new();
        for slice in &state.slices {
            let meta = &slice.metadata;
            if let Some(name) = meta.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) {
                let key = (meta.namespace.clone().unwrap_or_default(), name.clone());
                by_service.entry(key).or_default().push(slice.clone());
            }
        }
        let mut seen: HashSet<ServiceKey> = HashSet::with_capacity(state.services.len());
        let mut changes: Vec<(ServiceKey, Plans, Plans)> = Vec::new();
        let (mut service_changes, mut endpoint_changes) = (0u64, 0u64);
        let mut new_slices: Vec<Arc<EndpointSlice>> = Vec::new();
        for service in &state.services {
            let key = (
                service.metadata.namespace.clone().unwrap_or_default(),
                service.metadata.name.clone().unwrap_or_default(),
            );
            if !seen.insert(key.clone()) {
                continue;
            }
            let mut slices = by_service.remove(&key).unwrap_or_default();
            slices.sort_by_key(|s| Arc::as_ptr(s) as usize);
            let old = match self.cache.get(&key) {
                Some(entry) if entry.matches(service, &slices) => continue,
                Some(entry) => {
                    if !Arc::ptr_eq(&entry.service, service) {
                        service_changes += 1;
                    }
                    let before: HashSet<*const EndpointSlice> =
                        entry.slices.iter().map(Arc::as_ptr).collect();
                    let fresh: Vec<Arc<EndpointSlice>> = slices
                        .iter()
                        .filter(|s| !before.contains(&Arc::as_ptr(s)))
                        .cloned()
                        .collect();
                    endpoint_changes +=
                        u64::from(!fresh.is_empty() || before.len() != slices.len());
                    new_slices.extend(fresh);
                    entry.plans.clone()
                }
                None => {
                    service_changes += 1;
                    new_slices.extend(slices.iter().cloned());
                    Default::default()
                }
            };
            let plans = self.plan(service, &slices, &mut report.rejected);
            self.replace(&key, &old, &plans, &mut touched, &mut report.rejected);
            self.cache.insert(
                key.clone(),
                CacheEntry {
                    service: service.clone(),
                    slices,
                    plans: plans.clone(),
                },
            );
            changes.push((key, old, plans));
        }
        let gone: Vec<ServiceKey> = self
            .cache
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(entry) = self.cache.remove(&key) {
                service_changes += 1;
                let empty: [Arc<ServicePlan>; 2] = Default::default();
                self.replace(
                    &key,
                    &entry.plans,
                    &empty,
                    &mut touched,
                    &mut report.rejected,
                );
                changes.push((key, entry.plans, empty));
            }
        }
        report.changed_services = changes.len();

        // A failure leaves the models unknown: the next sync re-reads the kernel.
        self.needs_full = true;
        let script = self.render(full, &mut touched)?;
        if let Err(err) = self.apply(&script) {
            if full {
                return Err(err);
            }
            // The programmed model drifted from the kernel (someone edited the table):
            // re-read it and try once more against what is really there.
            tracing::warn!(error = %err, "incremental nftables sync failed; retrying as a full sync");
            report.full = true;
            let script = self.render(true, &mut touched)?;
            self.apply(&script)?;
        }
        report.applied = !script.is_empty();
        for ((programmed, desired), t) in
            self.programmed.iter_mut().zip(&self.desired).zip(&touched)
        {
            copy_touched(programmed, desired, t);
        }
        self.needs_full = false;

        for (_, old, new) in &changes {
            for (before, after) in old.iter().zip(new) {
                stale_udp(before, after, &mut report.stale_udp);
            }
        }
        report.stale_udp.sort();
        report.stale_udp.dedup();
        self.report_state(&mut report, &new_slices, service_changes, endpoint_changes);
        Ok(report)
    }

    fn apply(&mut self, script: &str) -> Result<(), ProxyError> {
        if script.is_empty() {
            return Ok(());
        }
        self.backend.apply(script)
    }

    /// The script for both families (full: against what the kernel holds now).
    fn render(&mut self, full: bool, touched: &mut [Touched; 2]) -> Result<String, ProxyError> {
        let mut script = String::new();
        for family in IpFamily::ALL {
            let i = index(family);
            if full {
                self.programmed[i] = self.read_table(family)?;
                touched[i] = Touched::all(&self.programmed[i], &self.desired[i]);
            }
            script.push_str(&diff_script(
                family,
                &self.table,
                &self.programmed[i],
                &self.desired[i],
                &touched[i],
                full,
            ));
        }
        Ok(script)
    }

    /// Fill the node-wide parts of the report and the gauges.
    fn report_state(
        &self,
        report: &mut SyncReport,
        new_slices: &[Arc<EndpointSlice>],
        service_changes: u64,
        endpoint_changes: u64,
    ) {
        let (mut no_local_internal, mut no_local_external) = (0i64, 0i64);
        for (key, entry) in &self.cache {
            let [v4, v6] = &entry.plans;
            if let Some(n) = v4.local_endpoints.or(v6.local_endpoints) {
                let total = v4.local_endpoints.unwrap_or(0) + v6.local_endpoints.unwrap_or(0);
                report.local_endpoints.insert(key.clone(), total.max(n));
            }
            no_local_internal += i64::from(v4.no_local_internal || v6.no_local_internal);
            no_local_external += i64::from(v4.no_local_external || v6.no_local_external);
        }
        self.metrics
            .no_local_endpoints("internal", no_local_internal);
        self.metrics
            .no_local_endpoints("external", no_local_external);
        self.metrics.service_changes(service_changes);
        self.metrics.endpoint_changes(endpoint_changes);
        let now = jiff::Timestamp::now();
        for slice in new_slices {
            let trigger = slice
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(TRIGGER_TIME_ANNOTATION))
                .and_then(|t| t.parse::<jiff::Timestamp>().ok());
            if let Some(latency) =
                trigger.and_then(|t| Duration::try_from(now.duration_since(t)).ok())
            {
                self.metrics.network_programming(latency);
            }
        }
    }
}

/// UDP conntrack entries made stale by going from `old` to `new`.
fn stale_udp(old: &ServicePlan, new: &ServicePlan, out: &mut Vec<StaleUdp>) {
    for port in &old.udp {
        let after = new.udp.iter().find(|p| p.port == port.port);
        for ep in &port.endpoints {
            if after.is_none_or(|a| !a.endpoints.contains(ep)) {
                for vip in &port.vips {
                    out.push(StaleUdp {
                        vip: *vip,
                        port: port.port,
                        endpoint: Some(*ep),
                    });
                }
            }
        }
    }
    for port in &new.udp {
        let before = old.udp.iter().find(|p| p.port == port.port);
        if !port.endpoints.is_empty() && before.is_none_or(|b| b.endpoints.is_empty()) {
            for vip in &port.vips {
                out.push(StaleUdp {
                    vip: *vip,
                    port: port.port,
                    endpoint: None,
                });
            }
        }
    }
}

#[cfg(test)]
#[path = "proxier_tests.rs"]
mod tests;
