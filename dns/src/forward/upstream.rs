//! One exchange with one upstream server: UDP (retried over TCP when truncated) or TCP only.
//! Replies are accepted only when they answer our question with our ID; anything else read
//! from the socket is dropped. The caller bounds the whole exchange with a timeout.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use hickory_proto::op::{Edns, Message, MessageType, Query};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::UpstreamProtocol;

/// The UDP payload size we advertise (the DNS flag day 2020 recommendation).
const EDNS_PAYLOAD: u16 = 1232;
/// Receive buffer: larger than any payload we advertise.
const UDP_BUFFER: usize = 4096;

/// Why an exchange produced no usable reply.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Socket error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The query could not be encoded.
    #[error("encoding the query: {0}")]
    Encode(String),
    /// A TCP reply did not parse or did not match the query.
    #[error("reply over TCP did not answer the query")]
    Mismatch,
}

/// Sends `query` to `server` and returns the matching reply.
pub async fn exchange(
    server: SocketAddr,
    protocol: UpstreamProtocol,
    query: &Query,
) -> Result<Message, ExchangeError> {
    let id = rand::random::<u16>();
    let mut message = Message::query();
    message.metadata.id = id;
    message.metadata.recursion_desired = true;
    message.add_query(query.clone());
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    message.set_edns(edns);
    let wire = message
        .to_vec()
        .map_err(|e| ExchangeError::Encode(e.to_string()))?;
    if protocol == UpstreamProtocol::Udp {
        let reply = udp(server, &wire, id, query).await?;
        if !reply.metadata.truncation {
            return Ok(reply);
        }
    }
    tcp(server, &wire, id, query).await
}

async fn udp(
    server: SocketAddr,
    wire: &[u8],
    id: u16,
    query: &Query,
) -> Result<Message, ExchangeError> {
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    // A fresh socket per query gives a random source port; connecting it makes the kernel
    // drop datagrams from any other source.
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(wire).await?;
    let mut buffer = vec![0u8; UDP_BUFFER];
    loop {
        let len = socket.recv(&mut buffer).await?;
        if let Some(reply) = matching_reply(&buffer[..len], id, query) {
            return Ok(reply);
        }
    }
}

async fn tcp(
    server: SocketAddr,
    wire: &[u8],
    id: u16,
    query: &Query,
) -> Result<Message, ExchangeError> {
    let mut stream = TcpStream::connect(server).await?;
    stream.set_nodelay(true)?;
    let len = u16::try_from(wire.len()).map_err(|_| ExchangeError::Encode("too long".into()))?;
    let mut framed = Vec::with_capacity(wire.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(wire);
    stream.write_all(&framed).await?;
    let mut prefix = [0u8; 2];
    stream.read_exact(&mut prefix).await?;
    let mut buffer = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
    stream.read_exact(&mut buffer).await?;
    matching_reply(&buffer, id, query).ok_or(ExchangeError::Mismatch)
}

/// Parses `bytes` as a reply to our query: same ID, a response, and the same question.
pub fn matching_reply(bytes: &[u8], id: u16, query: &Query) -> Option<Message> {
    let reply = Message::from_vec(bytes).ok()?;
    let ours = reply.metadata.id == id
        && reply.metadata.message_type == MessageType::Response
        && reply.queries.len() == 1
        && reply.queries[0].query_type() == query.query_type()
        && reply.queries[0].query_class() == query.query_class()
        // Name equality is case-insensitive (upstreams may use 0x20 case randomisation).
        && reply.queries[0].name() == query.name();
    ours.then_some(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::{Name, RecordType};

    fn question() -> Query {
        Query::query(Name::from_ascii("a.example.").unwrap(), RecordType::A)
    }

    #[test]
    fn only_replies_to_our_question_are_accepted() {
        let q = question();
        let mut reply = Message::response(7, hickory_proto::op::OpCode::Query);
        reply.add_query(q.clone());
        let bytes = reply.to_vec().unwrap();
        assert!(matching_reply(&bytes, 7, &q).is_some());
        assert!(matching_reply(&bytes, 8, &q).is_none(), "wrong ID");
        let other = Query::query(Name::from_ascii("b.example.").unwrap(), RecordType::A);
        assert!(matching_reply(&bytes, 7, &other).is_none(), "wrong name");
        let upper = Query::query(Name::from_ascii("A.EXAMPLE.").unwrap(), RecordType::A);
        assert!(
            matching_reply(&bytes, 7, &upper).is_some(),
            "case-insensitive"
        );
        assert!(matching_reply(&bytes[..5], 7, &q).is_none(), "garbage");
        let mut query_msg = reply.clone();
        query_msg.metadata.message_type = MessageType::Query;
        assert!(matching_reply(&query_msg.to_vec().unwrap(), 7, &q).is_none());
    }
}
