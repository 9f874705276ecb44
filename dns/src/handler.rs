//! The hickory request handler: the cluster zone from the current index, everything else
//! through the forwarder, and the protocol edge cases (multiple questions, ANY, opcodes).

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwapOption;
use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::forward::Forwarder;
use crate::metrics::{ServerMetrics, Transport, ZoneKind};
use crate::zone::{any_answer, Lookup, ZoneIndex};

/// The UDP payload size we answer with at most (DNS flag day 2020).
const MAX_PAYLOAD: u16 = 1232;
/// TTL of the RFC 8482 answer to ANY outside the cluster zone.
const ANY_TTL: u32 = 3600;

/// What a query resolved to, before encoding.
struct Outcome {
    rcode: ResponseCode,
    authoritative: bool,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
    zone: ZoneKind,
}

impl Outcome {
    fn error(rcode: ResponseCode, zone: ZoneKind) -> Self {
        Self {
            rcode,
            authoritative: false,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
            zone,
        }
    }
}

/// Answers DNS requests for one server.
pub struct Handler {
    zone: Arc<ArcSwapOption<ZoneIndex>>,
    apex: Name,
    forwarder: Forwarder,
    metrics: ServerMetrics,
}

impl Handler {
    /// A handler answering `cluster_domain` from `zone` (None = not synced yet) and
    /// forwarding the rest.
    pub(crate) fn new(
        zone: Arc<ArcSwapOption<ZoneIndex>>,
        cluster_domain: &str,
        forwarder: Forwarder,
        metrics: ServerMetrics,
    ) -> Self {
        let apex = Name::from_ascii(format!("{}.", cluster_domain.trim_end_matches('.')))
            .map(|n| n.to_lowercase())
            .unwrap_or_else(|_| Name::root());
        Self {
            zone,
            apex,
            forwarder,
            metrics,
        }
    }

    /// Resolves the single question of a well-formed query.
    async fn resolve(&self, request: &Request) -> Outcome {
        let queries = request.queries.queries();
        let [query] = queries else {
            // RFC 9619: exactly one question; zero or several is a format error.
            return Outcome::error(ResponseCode::FormErr, ZoneKind::Root);
        };
        let question = query.original();
        let name = question.name();
        let qtype = question.query_type();
        let ours = self.apex.zone_of(name);
        let zone_kind = if ours {
            ZoneKind::Cluster
        } else {
            ZoneKind::Root
        };
        if request.metadata.op_code != OpCode::Query {
            return Outcome::error(ResponseCode::NotImp, zone_kind);
        }
        if question.query_class() != DNSClass::IN
            || matches!(qtype, RecordType::AXFR | RecordType::IXFR)
        {
            return Outcome::error(ResponseCode::NotImp, zone_kind);
        }
        let index = self.zone.load();
        let lookup = match index.as_deref() {
            Some(index) => index.lookup(name, qtype),
            // Not synced yet: an empty zone would wrongly deny names that exist.
            None if ours => return Outcome::error(ResponseCode::ServFail, zone_kind),
            None => Lookup::NotOurs,
        };
        match lookup {
            Lookup::NotOurs if qtype == RecordType::ANY => {
                self.found(any_answer(name, ANY_TTL), ZoneKind::Root)
            }
            Lookup::NotOurs => self.forward(question).await,
            Lookup::Found { .. } => self.found(lookup, ZoneKind::Cluster),
            Lookup::NoData | Lookup::NxDomain => {
                let soa = index.as_deref().map(ZoneIndex::soa);
                Outcome {
                    rcode: if lookup == Lookup::NxDomain {
                        ResponseCode::NXDomain
                    } else {
                        ResponseCode::NoError
                    },
                    authoritative: true,
                    answers: Vec::new(),
                    authorities: soa.into_iter().collect(),
                    additionals: Vec::new(),
                    zone: ZoneKind::Cluster,
                }
            }
        }
    }

    fn found(&self, lookup: Lookup, zone: ZoneKind) -> Outcome {
        let (answers, additionals) = match lookup {
            Lookup::Found {
                answers,
                additionals,
            } => (answers, additionals),
            _ => (Vec::new(), Vec::new()),
        };
        Outcome {
            rcode: ResponseCode::NoError,
            authoritative: zone == ZoneKind::Cluster,
            answers,
            authorities: Vec::new(),
            additionals,
            zone,
        }
    }

    async fn forward(&self, question: &hickory_proto::op::Query) -> Outcome {
        match self.forwarder.resolve(question).await {
            Some(answer) => Outcome {
                rcode: answer.entry.rcode,
                authoritative: false,
                answers: answer.records(&answer.entry.answers),
                authorities: answer.records(&answer.entry.authorities),
                additionals: answer.records(&answer.entry.additionals),
                zone: ZoneKind::Root,
            },
            None => Outcome::error(ResponseCode::ServFail, ZoneKind::Root),
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let started = Instant::now();
        let outcome = self.resolve(request).await;
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = outcome.rcode;
        metadata.authoritative = outcome.authoritative;
        metadata.recursion_available = true;
        // Answer with EDNS when asked with it, sized to what the client can take.
        let edns = request.edns.as_ref().map(|theirs| {
            let mut ours = Edns::new();
            ours.set_max_payload(theirs.max_payload().clamp(512, MAX_PAYLOAD));
            ours
        });
        let response = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
            metadata,
            outcome.answers.iter(),
            outcome.authorities.iter(),
            std::iter::empty(),
            outcome.additionals.iter(),
        );
        let info = match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, src = %request.src(), "sending a DNS response failed");
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        };
        let qtype = request
            .queries
            .queries()
            .first()
            .map_or(RecordType::NULL, |q| q.query_type());
        let transport = match request.protocol() {
            Protocol::Tcp => Transport::Tcp,
            _ => Transport::Udp,
        };
        self.metrics.query(
            outcome.zone,
            transport,
            request.src().is_ipv6(),
            qtype,
            outcome.rcode,
            started.elapsed(),
        );
        info
    }
}

#[cfg(test)]
mod tests;
