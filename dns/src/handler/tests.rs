//! The handler fed random bytes and random odd-but-valid messages: it must always answer
//! with a well-formed response carrying the request's ID, and never panic.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, Query};
use hickory_proto::rr::{DNSClass, Name};
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::NetError;
use hickory_server::zone_handler::MessageResponse;
use proptest::prelude::*;

use super::*;
use crate::forward::ForwardSettings;
use crate::metrics::DnsMetrics;
use crate::zone::ZoneSettings;
use crate::{ClusterState, PodRecords, UpstreamProtocol};

/// Captures the encoded response instead of sending it.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut bytes = Vec::new();
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(512);
        let info = response.destructive_emit(&mut encoder)?;
        *self.0.lock().unwrap() = bytes;
        Ok(info)
    }
}

fn handler() -> Handler {
    let metrics = DnsMetrics::default();
    let server = metrics.server("dns://test", "cluster.local");
    let settings = ForwardSettings {
        // Nothing listens there: forwarded questions fail fast with SERVFAIL.
        upstreams: vec!["127.0.0.1:9".parse().unwrap()],
        protocol: UpstreamProtocol::Udp,
        cache_size: 16,
        serve_stale: Duration::ZERO,
    };
    let forwarder = Forwarder::new(&settings, &metrics, server.clone());
    let settings = ZoneSettings {
        domain: "cluster.local".into(),
        ttl: 5,
        pods: PodRecords::Insecure,
    };
    let index = ZoneIndex::build(&ClusterState::default(), &settings, 1);
    let zone = Arc::new(ArcSwapOption::from_pointee(index));
    Handler::new(zone, "cluster.local", forwarder, server)
}

/// Runs one request through the handler; `None` when hickory's parser rejects the bytes
/// (the server then answers FORMERR itself, before any handler runs).
fn answer(runtime: &tokio::runtime::Runtime, handler: &Handler, bytes: Vec<u8>) -> Option<Message> {
    let src: SocketAddr = "127.0.0.1:5353".parse().unwrap();
    let request = Request::from_bytes(bytes, src, Protocol::Udp).ok()?;
    let capture = Capture::default();
    runtime.block_on(handler.handle_request::<_, TokioTime>(&request, capture.clone()));
    let bytes = capture.0.lock().unwrap().clone();
    let response = Message::from_vec(&bytes).expect("responses parse");
    assert_eq!(response.metadata.id, request.metadata.id);
    assert_eq!(response.metadata.message_type, MessageType::Response);
    Some(response)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("svc".to_owned()),
        Just("cluster".to_owned()),
        Just("local".to_owned()),
        Just("pod".to_owned()),
        Just("in-addr".to_owned()),
        Just("arpa".to_owned()),
        "[a-z0-9-]{1,12}",
        "[0-9]{1,3}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let runtime = runtime();
        let handler = handler();
        let _ = answer(&runtime, &handler, bytes);
    }

    #[test]
    fn odd_valid_messages_get_the_right_rcode(
        names in proptest::collection::vec(proptest::collection::vec(label(), 0..6), 0..3),
        qtype in any::<u16>(),
        class in prop_oneof![Just(DNSClass::IN), Just(DNSClass::CH), Just(DNSClass::ANY)],
        id in any::<u16>(),
    ) {
        let runtime = runtime();
        let handler = handler();
        let mut message = Message::query();
        message.metadata.id = id;
        for labels in &names {
            let mut text = labels.join(".");
            text.push('.');
            let name = Name::from_ascii(&text).unwrap_or_else(|_| Name::root());
            let mut query = Query::query(name, RecordType::from(qtype));
            query.set_query_class(class);
            message.add_query(query);
        }
        let Ok(bytes) = message.to_vec() else { return Ok(()) };
        let Some(response) = answer(&runtime, &handler, bytes) else { return Ok(()) };
        if names.len() != 1 {
            prop_assert_eq!(response.metadata.response_code, ResponseCode::FormErr);
        } else {
            prop_assert_ne!(response.metadata.response_code, ResponseCode::FormErr);
        }
    }
}

#[test]
fn any_gets_the_rfc8482_answer_and_cluster_names_are_authoritative() {
    let runtime = runtime();
    let handler = handler();
    for (name, qtype, rcode) in [
        ("example.org.", RecordType::ANY, ResponseCode::NoError),
        (
            "dns-version.cluster.local.",
            RecordType::TXT,
            ResponseCode::NoError,
        ),
        (
            "nope.svc.cluster.local.",
            RecordType::A,
            ResponseCode::NXDomain,
        ),
        ("cluster.local.", RecordType::AXFR, ResponseCode::NotImp),
        ("example.org.", RecordType::A, ResponseCode::ServFail),
    ] {
        let mut message = Message::query();
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        let response = answer(&runtime, &handler, message.to_vec().unwrap()).unwrap();
        assert_eq!(response.metadata.response_code, rcode, "{name} {qtype}");
        if name.ends_with("cluster.local.") && rcode != ResponseCode::NotImp {
            assert!(response.metadata.authoritative, "{name}");
        }
        if qtype == RecordType::ANY {
            assert_eq!(response.answers[0].record_type(), RecordType::HINFO);
        }
    }
}
