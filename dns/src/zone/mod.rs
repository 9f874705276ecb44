//! The cluster zone: Kubernetes objects → an immutable, lowercase-keyed record index, and
//! pure lookups answering records, NODATA or NXDOMAIN. No I/O here.

mod build;
mod names;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, HINFO, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::config::PodRecords;
pub use names::{dashed, key_of, reverse};

/// Version of the Kubernetes DNS-Based Service Discovery spec served at `dns-version.<zone>`.
const SPEC_VERSION: &str = "1.1.0";

/// The API objects the zone is built from (shared with the watch stores).
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    /// All Services.
    pub services: Vec<Arc<Service>>,
    /// All EndpointSlices.
    pub slices: Vec<Arc<EndpointSlice>>,
    /// All Pods (used for `pods: verified`).
    pub pods: Vec<Arc<Pod>>,
}

/// One record of a name, in compact form; turned into wire records per answer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Rec {
    Addr(IpAddr),
    Srv { port: u16, target: Arc<str> },
    Ptr(Arc<str>),
    Cname(Arc<str>),
    Txt(Arc<str>),
}

/// The outcome of a zone lookup.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// NOERROR with these answer and additional records.
    Found {
        /// Answer section.
        answers: Vec<Record>,
        /// Additional section (addresses of SRV targets).
        additionals: Vec<Record>,
    },
    /// The name exists but has no records of the type (NOERROR, SOA in authority).
    NoData,
    /// The name does not exist in the zone (NXDOMAIN, SOA in authority).
    NxDomain,
    /// Not the cluster zone and not a reverse name we hold: forward it.
    NotOurs,
}

/// Settings of the zone that are not objects.
#[derive(Debug, Clone)]
pub struct ZoneSettings {
    /// Zone apex, e.g. `cluster.local` (no trailing dot, any case).
    pub domain: String,
    /// TTL of every record, and the SOA minimum.
    pub ttl: u32,
    /// Pod record mode.
    pub pods: PodRecords,
}

/// An immutable index of the cluster zone.
#[derive(Debug)]
pub struct ZoneIndex {
    zone: Box<str>,
    apex: Name,
    ttl: u32,
    pods: PodRecords,
    serial: u32,
    nodes: HashMap<Box<str>, Box<[Rec]>>,
    namespaces: HashMap<Box<str>, ()>,
}

impl ZoneIndex {
    /// Builds the index from a snapshot of the cluster; `serial` becomes the SOA serial.
    pub fn build(state: &ClusterState, settings: &ZoneSettings, serial: u32) -> Self {
        let zone = settings
            .domain
            .trim_end_matches('.')
            .to_ascii_lowercase()
            .into_boxed_str();
        let mut builder = build::Builder::new(&zone, state.services.len() * 3 + state.slices.len());
        let slices = build::slices_by_service(&state.slices);
        for svc in &state.services {
            let key = (
                svc.metadata.namespace.as_deref().unwrap_or_default(),
                svc.metadata.name.as_deref().unwrap_or_default(),
            );
            builder.service(svc, slices.get(&key).map_or(&[], Vec::as_slice));
        }
        if settings.pods != PodRecords::Disabled {
            for pod in &state.pods {
                builder.pod(pod, settings.pods);
            }
        }
        let build::Builder {
            mut records,
            namespaces,
            ..
        } = builder;
        records
            .entry(format!("dns-version.{zone}").into_boxed_str())
            .or_default()
            .push(Rec::Txt(Arc::from(SPEC_VERSION)));
        records
            .entry(format!("svc.{zone}").into_boxed_str())
            .or_default();
        if settings.pods != PodRecords::Disabled {
            records
                .entry(format!("pod.{zone}").into_boxed_str())
                .or_default();
        }
        add_empty_non_terminals(&mut records, &zone);
        let nodes = records
            .into_iter()
            .map(|(k, mut v)| {
                v.sort_unstable();
                v.dedup();
                (k, v.into_boxed_slice())
            })
            .collect();
        let apex = Name::from_ascii(format!("{zone}.")).unwrap_or_else(|_| Name::root());
        Self {
            zone,
            apex,
            ttl: settings.ttl,
            pods: settings.pods,
            serial,
            nodes,
            namespaces,
        }
    }

    /// Number of names held (including empty non-terminals).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the index holds no names.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The zone's SOA record, for the authority section of negative answers.
    pub fn soa(&self) -> Record {
        soa_record(&self.apex, self.ttl, self.serial)
    }

    /// Answers `qname`/`qtype` from the index (case-insensitively).
    pub fn lookup(&self, qname: &Name, qtype: RecordType) -> Lookup {
        let Some(key) = key_of(qname) else {
            return if self.apex.zone_of(qname) {
                Lookup::NxDomain
            } else {
                Lookup::NotOurs
            };
        };
        if !in_zone(&key, &self.zone) {
            return match self.nodes.get(key.as_str()) {
                Some(recs) if names::is_reverse(&key) => self.select(qname, qtype, recs),
                _ => Lookup::NotOurs,
            };
        }
        if key.len() == self.zone.len() {
            return match qtype {
                RecordType::SOA => Lookup::Found {
                    answers: vec![self.soa()],
                    additionals: Vec::new(),
                },
                RecordType::ANY => any_answer(qname, self.ttl),
                _ => Lookup::NoData,
            };
        }
        if let Some(recs) = self.nodes.get(key.as_str()) {
            return self.select(qname, qtype, recs);
        }
        if self.pods == PodRecords::Insecure {
            if let Some(found) = self.insecure_pod(qname, qtype, &key) {
                return found;
            }
        }
        Lookup::NxDomain
    }

    /// `a-b-c-d.<ns>.pod.<zone>` answered from the name alone (pods: insecure).
    fn insecure_pod(&self, qname: &Name, qtype: RecordType, key: &str) -> Option<Lookup> {
        let prefix = key.strip_suffix(&*self.zone)?.strip_suffix(".pod.")?;
        let Some((ip_label, ns)) = prefix.split_once('.') else {
            // `<ns>.pod.<zone>`: an empty non-terminal for namespaces we know.
            return self
                .namespaces
                .contains_key(prefix)
                .then_some(Lookup::NoData);
        };
        if ns.contains('.') {
            return None;
        }
        let ip = names::undash(ip_label)?;
        Some(self.select(qname, qtype, &[Rec::Addr(ip)]))
    }

    /// The records of one name matching `qtype`.
    fn select(&self, qname: &Name, qtype: RecordType, recs: &[Rec]) -> Lookup {
        let ttl = self.ttl;
        if qtype == RecordType::ANY {
            return any_answer(qname, ttl);
        }
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        // A CNAME owns its name: every type is answered with it (RFC 1034 §3.6.2).
        if let Some(Rec::Cname(target)) = recs.iter().find(|r| matches!(r, Rec::Cname(_))) {
            if let Ok(target) = Name::from_ascii(format!("{target}.")) {
                answers.push(Record::from_rdata(
                    qname.clone(),
                    ttl,
                    RData::CNAME(CNAME(target)),
                ));
            }
            return found(answers, additionals);
        }
        let srv_count = recs.iter().filter(|r| matches!(r, Rec::Srv { .. })).count();
        let weight = u16::try_from(100 / srv_count.max(1)).unwrap_or(1).max(1);
        for rec in recs {
            let rdata = match (rec, qtype) {
                (Rec::Addr(IpAddr::V4(ip)), RecordType::A) => RData::A(A(*ip)),
                (Rec::Addr(IpAddr::V6(ip)), RecordType::AAAA) => RData::AAAA(AAAA(*ip)),
                (Rec::Ptr(target), RecordType::PTR) => match Name::from_ascii(format!("{target}."))
                {
                    Ok(n) => RData::PTR(PTR(n)),
                    Err(_) => continue,
                },
                (Rec::Txt(text), RecordType::TXT) => RData::TXT(TXT::new(vec![text.to_string()])),
                (Rec::Srv { port, target }, RecordType::SRV) => {
                    let Ok(target_name) = Name::from_ascii(format!("{target}.")) else {
                        continue;
                    };
                    self.target_addresses(&target_name, target, &mut additionals);
                    RData::SRV(SRV::new(0, weight, *port, target_name))
                }
                _ => continue,
            };
            answers.push(Record::from_rdata(qname.clone(), ttl, rdata));
        }
        found(answers, additionals)
    }

    /// Appends the A/AAAA records of an SRV target to the additional section.
    fn target_addresses(&self, name: &Name, key: &str, out: &mut Vec<Record>) {
        for rec in self.nodes.get(key).into_iter().flat_map(|r| r.iter()) {
            let rdata = match rec {
                Rec::Addr(IpAddr::V4(ip)) => RData::A(A(*ip)),
                Rec::Addr(IpAddr::V6(ip)) => RData::AAAA(AAAA(*ip)),
                _ => continue,
            };
            out.push(Record::from_rdata(name.clone(), self.ttl, rdata));
        }
    }
}

/// Whether `key` is the zone apex or below it.
fn in_zone(key: &str, zone: &str) -> bool {
    key.strip_suffix(zone)
        .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
}

fn found(answers: Vec<Record>, additionals: Vec<Record>) -> Lookup {
    if answers.is_empty() {
        Lookup::NoData
    } else {
        Lookup::Found {
            answers,
            additionals,
        }
    }
}

/// RFC 8482 minimal answer to ANY: one synthesized HINFO record.
pub fn any_answer(qname: &Name, ttl: u32) -> Lookup {
    let hinfo = HINFO::new("RFC8482".to_owned(), String::new());
    Lookup::Found {
        answers: vec![Record::from_rdata(qname.clone(), ttl, RData::HINFO(hinfo))],
        additionals: Vec::new(),
    }
}

/// The SOA of the cluster zone, shaped like CoreDNS's (`ns.dns.<zone>`, `hostmaster.<zone>`).
fn soa_record(apex: &Name, ttl: u32, serial: u32) -> Record {
    let label = |l: &str| Name::from_ascii(l).and_then(|n| n.append_domain(apex));
    let mname = label("ns.dns").unwrap_or_else(|_| apex.clone());
    let rname = label("hostmaster").unwrap_or_else(|_| apex.clone());
    let soa = SOA::new(mname, rname, serial, 7200, 1800, 86400, ttl);
    Record::from_rdata(apex.clone(), ttl, RData::SOA(soa))
}

/// Inserts every missing ancestor of the zone's names between the name and the apex, so
/// that `<ns>.svc.<zone>` and `_tcp.<svc>...` answer NODATA rather than NXDOMAIN.
fn add_empty_non_terminals(records: &mut HashMap<Box<str>, Vec<Rec>>, zone: &str) {
    let keys: Vec<Box<str>> = records
        .keys()
        .filter(|k| in_zone(k, zone))
        .cloned()
        .collect();
    for key in keys {
        let mut current = names::parent(&key);
        while let Some(ancestor) = current {
            if ancestor.len() <= zone.len() || records.contains_key(ancestor) {
                break;
            }
            records.insert(ancestor.into(), Vec::new());
            current = names::parent(ancestor);
        }
    }
}

#[cfg(test)]
mod tests;
