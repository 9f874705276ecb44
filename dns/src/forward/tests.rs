//! Forwarder tests against scripted upstreams on loopback.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

use super::*;

/// How the fake upstream treats each query.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Script {
    /// Garbage, then a reply with a wrong ID, then the answer (TTL 60).
    Answer,
    /// The answer with TTL 0 (stale at once).
    AnswerTtl0,
    /// A truncated UDP reply; the answer over TCP.
    Truncated,
    /// SERVFAIL.
    ServFail,
    /// Nothing at all.
    Silent,
    /// The answer after 300 ms.
    Slow,
}

struct Fake {
    addr: SocketAddr,
    queries: Arc<AtomicUsize>,
    script: Arc<Mutex<Script>>,
}

fn answer_to(query: &Message, ttl: u32) -> Message {
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.add_queries(query.queries.clone());
    let name = query.queries[0].name().clone();
    reply.add_answer(Record::from_rdata(
        name,
        ttl,
        RData::A(A::new(192, 0, 2, 7)),
    ));
    reply
}

async fn fake(script: Script) -> Fake {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = TcpListener::bind(addr).await.unwrap();
    let queries = Arc::new(AtomicUsize::new(0));
    let script = Arc::new(Mutex::new(script));
    let (q, s) = (queries.clone(), script.clone());
    tokio::spawn(async move {
        let udp = Arc::new(udp);
        let mut buf = vec![0u8; 4096];
        loop {
            let (len, from) = udp.recv_from(&mut buf).await.unwrap();
            q.fetch_add(1, Ordering::SeqCst);
            let query = Message::from_vec(&buf[..len]).unwrap();
            let script = *s.lock().unwrap();
            let udp = udp.clone();
            tokio::spawn(async move {
                let reply = match script {
                    Script::Silent => return,
                    Script::ServFail => {
                        let mut r = answer_to(&query, 60);
                        r.answers.clear();
                        r.metadata.response_code = ResponseCode::ServFail;
                        r
                    }
                    Script::Answer => {
                        udp.send_to(b"\x01\x02garbage", from).await.unwrap();
                        let mut wrong = answer_to(&query, 60);
                        wrong.metadata.id = query.metadata.id.wrapping_add(1);
                        udp.send_to(&wrong.to_vec().unwrap(), from).await.unwrap();
                        answer_to(&query, 60)
                    }
                    Script::AnswerTtl0 => answer_to(&query, 0),
                    Script::Truncated => {
                        let mut r = answer_to(&query, 60);
                        r.answers.clear();
                        r.metadata.truncation = true;
                        r
                    }
                    Script::Slow => {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        answer_to(&query, 60)
                    }
                };
                udp.send_to(&reply.to_vec().unwrap(), from).await.unwrap();
            });
        }
    });
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = tcp.accept().await.unwrap();
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).await.unwrap();
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut buf).await.unwrap();
            let query = Message::from_vec(&buf).unwrap();
            let mut reply = answer_to(&query, 60);
            reply.add_answer(Record::from_rdata(
                query.queries[0].name().clone(),
                60,
                RData::A(A::new(192, 0, 2, 8)),
            ));
            let wire = reply.to_vec().unwrap();
            stream
                .write_all(&u16::try_from(wire.len()).unwrap().to_be_bytes())
                .await
                .unwrap();
            stream.write_all(&wire).await.unwrap();
        }
    });
    Fake {
        addr,
        queries,
        script,
    }
}

fn forwarder(upstreams: Vec<SocketAddr>) -> Forwarder {
    let metrics = DnsMetrics::default();
    let server = metrics.server("dns://test", "cluster.local");
    let settings = ForwardSettings {
        upstreams,
        protocol: UpstreamProtocol::Udp,
        cache_size: 100,
        serve_stale: Duration::from_secs(60),
    };
    Forwarder::new(&settings, &metrics, server)
}

fn question(name: &str) -> Query {
    Query::query(Name::from_ascii(name).unwrap(), RecordType::A)
}

#[tokio::test]
async fn ignores_garbage_and_caches() {
    let up = fake(Script::Answer).await;
    let fwd = forwarder(vec![up.addr]);
    let answer = fwd.resolve(&question("a.example.")).await.unwrap();
    assert_eq!(answer.entry.answers.len(), 1);
    assert!(!answer.is_stale());
    let again = fwd.resolve(&question("A.Example.")).await.unwrap();
    assert_eq!(again.entry.answers.len(), 1);
    assert_eq!(
        up.queries.load(Ordering::SeqCst),
        1,
        "second answer from cache"
    );
    assert_eq!(fwd.cache_len(), 1);
}

#[tokio::test]
async fn truncated_udp_retried_over_tcp() {
    let up = fake(Script::Truncated).await;
    let fwd = forwarder(vec![up.addr]);
    let answer = fwd.resolve(&question("big.example.")).await.unwrap();
    assert_eq!(answer.entry.answers.len(), 2, "the TCP answer");
}

#[tokio::test]
async fn identical_questions_in_flight_are_sent_once() {
    let up = fake(Script::Slow).await;
    let fwd = Arc::new(forwarder(vec![up.addr]));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let fwd = fwd.clone();
            tokio::spawn(async move { fwd.resolve(&question("dedup.example.")).await })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap().is_some());
    }
    assert_eq!(up.queries.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn failing_upstream_skipped_then_servfail_then_stale() {
    let bad = fake(Script::ServFail).await;
    let good = fake(Script::AnswerTtl0).await;
    let fwd = forwarder(vec![bad.addr, good.addr]);
    for i in 0..4 {
        let answer = fwd.resolve(&question(&format!("n{i}.example."))).await;
        assert!(answer.is_some(), "the healthy upstream answers");
    }
    // After MAX_FAILS the failing upstream is asked only after the healthy one.
    assert!(bad.queries.load(Ordering::SeqCst) <= 2);

    *good.script.lock().unwrap() = Script::ServFail;
    assert!(
        fwd.resolve(&question("new.example.")).await.is_none(),
        "SERVFAIL"
    );
    // n0 is cached with TTL 0: expired, but servable stale while upstreams fail.
    let stale = fwd.resolve(&question("n0.example.")).await.unwrap();
    assert!(stale.is_stale());
    assert_eq!(stale.records(&stale.entry.answers)[0].ttl, STALE_TTL);
}

#[tokio::test]
async fn silent_upstream_times_out_to_stale() {
    let up = fake(Script::AnswerTtl0).await;
    let fwd = forwarder(vec![up.addr]);
    fwd.resolve(&question("s.example.")).await.unwrap();
    *up.script.lock().unwrap() = Script::Silent;
    let started = Instant::now();
    let stale = fwd.resolve(&question("s.example.")).await.unwrap();
    assert!(stale.is_stale());
    assert!(started.elapsed() < STALE_DEADLINE + Duration::from_millis(500));
    let none = forwarder(vec![up.addr]);
    let started = Instant::now();
    assert!(none.resolve(&question("t.example.")).await.is_none());
    assert!(started.elapsed() < DEADLINE + Duration::from_millis(500));
}
