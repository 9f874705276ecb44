//! ctnetlink wire format: typed requests out, typed flows and acks in (no socket I/O here).

use std::net::IpAddr;

use netlink_packet_core::{
    DecodeError, DefaultNla, NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla, NLM_F_ACK,
    NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Status, Tuple,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};

/// `CTA_ZONE` (uapi nfnetlink_conntrack.h); not typed by the netfilter crate.
const CTA_ZONE: u16 = 18;
/// Length of `struct nlmsghdr`.
const NLMSG_HDR_LEN: usize = 16;

/// Address family of a flow, as carried in `nfgenmsg.nfgen_family`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// AF_INET.
    V4,
    /// AF_INET6.
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    fn proto_family(self) -> NetfilterProtoFamily {
        match self {
            Family::V4 => NetfilterProtoFamily::IPv4,
            Family::V6 => NetfilterProtoFamily::IPv6,
        }
    }
}

/// One direction of a conntrack entry: addresses and layer-4 ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowTuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
}

/// A conntrack entry as far as cleanup needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// IP protocol number (17 for UDP).
    pub protocol: u8,
    /// The tuple as the client sent it (before DNAT).
    pub original: FlowTuple,
    /// The tuple replies carry (after DNAT: the source is the endpoint).
    pub reply: FlowTuple,
    /// Whether the kernel destination-NATed this flow.
    pub dst_nat: bool,
    /// Conntrack zone, which a delete has to name to find the entry.
    pub zone: Option<u16>,
}

/// One decoded netlink message from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A conntrack entry from a dump; `None` when it is not an IP/port flow (ICMP, ...).
    Entry(Option<Flow>),
    /// End of a dump.
    Done,
    /// Acknowledgement of a request.
    Ack,
    /// A request failed with this (positive) errno.
    Error(i32),
    /// Anything else (noop, overrun, other subsystems).
    Other,
}

/// A decoded message with the sequence number of the request it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Sequence number copied from the request.
    pub seq: u32,
    /// What the message says.
    pub reply: Reply,
}

/// Encodes an `IPCTNL_MSG_CT_GET` dump request for all entries of one family.
pub fn dump_request(family: Family, seq: u32) -> Vec<u8> {
    encode(
        family,
        ConntrackMessage::Get(Vec::new()),
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
    )
}

/// Encodes an `IPCTNL_MSG_CT_DELETE` for exactly this entry (its original tuple and zone).
pub fn delete_request(flow: &Flow, seq: u32) -> Vec<u8> {
    let mut attributes = vec![ConntrackAttribute::CtaTupleOrig(vec![
        Tuple::Ip(vec![
            IPTuple::SourceAddress(flow.original.src),
            IPTuple::DestinationAddress(flow.original.dst),
        ]),
        Tuple::Proto(vec![
            ProtoTuple::Protocol(flow.protocol.into()),
            ProtoTuple::SourcePort(flow.original.src_port),
            ProtoTuple::DestinationPort(flow.original.dst_port),
        ]),
    ])];
    if let Some(zone) = flow.zone {
        attributes.push(ConntrackAttribute::Other(DefaultNla::new(
            CTA_ZONE,
            zone.to_be_bytes().to_vec(),
        )));
    }
    encode(
        Family::of(flow.original.src),
        ConntrackMessage::Delete(attributes),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
    )
}

fn encode(family: Family, message: ConntrackMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut packet = NetlinkMessage::new(
        header,
        NetlinkPayload::from(NetfilterMessage::new(
            NetfilterHeader::new(family.proto_family(), 0, 0),
            message,
        )),
    );
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    buf
}

/// Decodes every netlink message in one datagram; never panics on malformed input.
pub fn parse_datagram(mut buf: &[u8]) -> Result<Vec<Received>, DecodeError> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDR_LEN {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < NLMSG_HDR_LEN || len > buf.len() {
            return Err(DecodeError::buffer_too_small(buf.len(), len));
        }
        let message = NetlinkMessage::<NetfilterMessage>::deserialize(&buf[..len])?;
        out.push(Received {
            seq: message.header.sequence_number,
            reply: classify(message.payload),
        });
        // Messages are 4-byte aligned within a datagram; the last may omit its padding.
        buf = buf.get(len.next_multiple_of(4)..).unwrap_or(&[]);
    }
    Ok(out)
}

fn classify(payload: NetlinkPayload<NetfilterMessage>) -> Reply {
    match payload {
        NetlinkPayload::Done(_) => Reply::Done,
        NetlinkPayload::Error(error) => match error.code {
            None => Reply::Ack,
            Some(code) => Reply::Error(code.get().saturating_abs()),
        },
        // Dump replies reuse the request's type (CT_GET); events use CT_NEW.
        NetlinkPayload::InnerMessage(NetfilterMessage {
            inner:
                NetfilterMessageInner::Conntrack(
                    ConntrackMessage::Get(attributes) | ConntrackMessage::New(attributes),
                ),
            ..
        }) => Reply::Entry(flow_from_attributes(&attributes)),
        _ => Reply::Other,
    }
}

/// Builds a [`Flow`] from a dumped entry's attributes; `None` when a part is missing.
pub fn flow_from_attributes(attributes: &[ConntrackAttribute]) -> Option<Flow> {
    let mut original = None;
    let mut reply = None;
    let mut dst_nat = false;
    let mut zone = None;
    for attribute in attributes {
        match attribute {
            ConntrackAttribute::CtaTupleOrig(tuple) => original = tuple_from(tuple),
            ConntrackAttribute::CtaTupleReply(tuple) => reply = tuple_from(tuple),
            ConntrackAttribute::CtaStatus(status) => dst_nat = status.contains(Status::DstNat),
            ConntrackAttribute::Other(nla) if nla.kind() == CTA_ZONE && nla.value_len() == 2 => {
                let mut value = [0u8; 2];
                nla.emit_value(&mut value);
                zone = Some(u16::from_be_bytes(value));
            }
            _ => {}
        }
    }
    let (protocol, original) = original?;
    let (reply_protocol, reply) = reply?;
    (protocol == reply_protocol).then_some(Flow {
        protocol,
        original,
        reply,
        dst_nat,
        zone,
    })
}

fn tuple_from(parts: &[Tuple]) -> Option<(u8, FlowTuple)> {
    let (mut src, mut dst, mut protocol, mut src_port, mut dst_port) =
        (None, None, None, None, None);
    for part in parts {
        match part {
            Tuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => src = Some(*a),
                        IPTuple::DestinationAddress(a) => dst = Some(*a),
                        _ => {}
                    }
                }
            }
            Tuple::Proto(protos) => {
                for proto in protos {
                    match proto {
                        ProtoTuple::Protocol(p) => protocol = Some(u8::from(*p)),
                        ProtoTuple::SourcePort(p) => src_port = Some(*p),
                        ProtoTuple::DestinationPort(p) => dst_port = Some(*p),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some((
        protocol?,
        FlowTuple {
            src: src?,
            dst: dst?,
            src_port: src_port?,
            dst_port: dst_port?,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{DoneMessage, ErrorMessage};
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::num::NonZeroI32;

    fn udp_flow(src: IpAddr, vip: IpAddr, endpoint: IpAddr, zone: Option<u16>) -> Flow {
        Flow {
            protocol: 17,
            original: FlowTuple {
                src,
                dst: vip,
                src_port: 40000,
                dst_port: 53,
            },
            reply: FlowTuple {
                src: endpoint,
                dst: src,
                src_port: 5353,
                dst_port: 40000,
            },
            dst_nat: true,
            zone,
        }
    }

    /// The attributes a kernel dump carries for `flow`, in kernel order.
    fn entry_attributes(flow: &Flow) -> Vec<ConntrackAttribute> {
        let tuple = |t: &FlowTuple| {
            vec![
                Tuple::Ip(vec![
                    IPTuple::SourceAddress(t.src),
                    IPTuple::DestinationAddress(t.dst),
                ]),
                Tuple::Proto(vec![
                    ProtoTuple::Protocol(flow.protocol.into()),
                    ProtoTuple::SourcePort(t.src_port),
                    ProtoTuple::DestinationPort(t.dst_port),
                ]),
            ]
        };
        let mut status = Status::Confirmed;
        if flow.dst_nat {
            status |= Status::DstNat;
        }
        let mut attributes = vec![
            ConntrackAttribute::CtaTupleOrig(tuple(&flow.original)),
            ConntrackAttribute::CtaTupleReply(tuple(&flow.reply)),
            ConntrackAttribute::CtaStatus(status),
            ConntrackAttribute::CtaTimeout(30),
        ];
        if let Some(zone) = flow.zone {
            attributes.push(ConntrackAttribute::Other(DefaultNla::new(
                CTA_ZONE,
                zone.to_be_bytes().to_vec(),
            )));
        }
        attributes
    }

    /// A datagram as the kernel sends it: several messages, each padded to 4 bytes.
    fn datagram(messages: Vec<NetlinkMessage<NetfilterMessage>>) -> Vec<u8> {
        let mut out = Vec::new();
        for mut message in messages {
            message.header.sequence_number = 7;
            message.finalize();
            let mut buf = vec![0; message.buffer_len()];
            message.serialize(&mut buf);
            buf.resize(buf.len().next_multiple_of(4), 0);
            out.extend(buf);
        }
        out
    }

    fn entry_message(flow: &Flow) -> NetlinkMessage<NetfilterMessage> {
        NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::from(NetfilterMessage::new(
                NetfilterHeader::new(Family::of(flow.original.src).proto_family(), 0, 0),
                ConntrackMessage::Get(entry_attributes(flow)),
            )),
        )
    }

    #[test]
    fn dump_request_is_a_ctnetlink_get_dump() {
        let buf = dump_request(Family::V6, 42);
        assert_eq!(buf.len(), 20, "nlmsghdr + nfgenmsg, no attributes");
        assert_eq!(
            u16::from_ne_bytes([buf[4], buf[5]]),
            0x0101,
            "CTNETLINK << 8 | CT_GET"
        );
        assert_eq!(
            u16::from_ne_bytes([buf[6], buf[7]]),
            NLM_F_REQUEST | NLM_F_DUMP
        );
        assert_eq!(u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]), 42);
        assert_eq!(buf[16], 10, "AF_INET6");
    }

    #[test]
    fn delete_request_names_the_original_tuple_and_zone() {
        let flow = udp_flow(
            Ipv4Addr::new(10, 0, 0, 1).into(),
            Ipv4Addr::new(10, 96, 0, 10).into(),
            Ipv4Addr::new(10, 244, 0, 5).into(),
            Some(3),
        );
        let buf = delete_request(&flow, 9);
        assert_eq!(
            u16::from_ne_bytes([buf[4], buf[5]]),
            0x0102,
            "CTNETLINK << 8 | CT_DELETE"
        );
        assert_eq!(
            u16::from_ne_bytes([buf[6], buf[7]]),
            NLM_F_REQUEST | NLM_F_ACK
        );
        assert_eq!(buf[16], 2, "AF_INET");
        let decoded = NetlinkMessage::<NetfilterMessage>::deserialize(&buf).unwrap();
        let NetlinkPayload::InnerMessage(NetfilterMessage {
            inner: NetfilterMessageInner::Conntrack(ConntrackMessage::Delete(attributes)),
            ..
        }) = decoded.payload
        else {
            panic!("not a delete: {decoded:?}");
        };
        let mut expected = entry_attributes(&flow);
        expected.retain(|a| {
            matches!(
                a,
                ConntrackAttribute::CtaTupleOrig(_) | ConntrackAttribute::Other(_)
            )
        });
        assert_eq!(attributes, expected);
    }

    #[test]
    fn parses_a_dump_datagram_of_both_families_and_done() {
        let v4 = udp_flow(
            Ipv4Addr::new(10, 0, 0, 1).into(),
            Ipv4Addr::new(10, 96, 0, 10).into(),
            Ipv4Addr::new(10, 244, 0, 5).into(),
            None,
        );
        let v6 = udp_flow(
            "fd00::1".parse().unwrap(),
            "fd00:96::a".parse().unwrap(),
            "fd00:244::5".parse().unwrap(),
            Some(1),
        );
        let buf = datagram(vec![
            entry_message(&v4),
            entry_message(&v6),
            NetlinkMessage::new(
                NetlinkHeader::default(),
                NetlinkPayload::Done(DoneMessage::default()),
            ),
        ]);
        let replies: Vec<Reply> = parse_datagram(&buf)
            .unwrap()
            .into_iter()
            .map(|r| {
                assert_eq!(r.seq, 7);
                r.reply
            })
            .collect();
        assert_eq!(
            replies,
            vec![Reply::Entry(Some(v4)), Reply::Entry(Some(v6)), Reply::Done]
        );
    }

    #[test]
    fn parses_ack_and_errno() {
        let mut nack = ErrorMessage::default();
        nack.code = NonZeroI32::new(-2);
        let buf = datagram(vec![
            NetlinkMessage::new(
                NetlinkHeader::default(),
                NetlinkPayload::Error(ErrorMessage::default()),
            ),
            NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::Error(nack)),
        ]);
        let replies: Vec<Reply> = parse_datagram(&buf)
            .unwrap()
            .into_iter()
            .map(|r| r.reply)
            .collect();
        assert_eq!(replies, vec![Reply::Ack, Reply::Error(2)]);
    }

    #[test]
    fn entry_without_ports_is_not_a_flow() {
        let mut attributes = entry_attributes(&udp_flow(
            Ipv6Addr::LOCALHOST.into(),
            Ipv6Addr::LOCALHOST.into(),
            Ipv6Addr::LOCALHOST.into(),
            None,
        ));
        attributes[0] = ConntrackAttribute::CtaTupleOrig(vec![Tuple::Ip(vec![
            IPTuple::SourceAddress(Ipv6Addr::LOCALHOST.into()),
            IPTuple::DestinationAddress(Ipv6Addr::LOCALHOST.into()),
        ])]);
        assert_eq!(flow_from_attributes(&attributes), None);
    }

    #[test]
    fn truncated_and_overlong_lengths_are_errors() {
        let buf = dump_request(Family::V4, 1);
        assert!(parse_datagram(&buf[..buf.len() - 1]).is_err());
        let mut short = buf.clone();
        short[0] = 8;
        assert!(parse_datagram(&short).is_err());
    }

    proptest! {
        #[test]
        fn parser_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_datagram(&bytes);
        }

        #[test]
        fn parser_never_panics_on_corrupted_entries(
            flip in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let flow = udp_flow(
                Ipv4Addr::new(10, 0, 0, 1).into(),
                Ipv4Addr::new(10, 96, 0, 10).into(),
                Ipv4Addr::new(10, 244, 0, 5).into(),
                Some(2),
            );
            let mut buf = datagram(vec![entry_message(&flow), entry_message(&flow)]);
            for (at, value) in flip {
                // Keep the netlink header intact so the corruption reaches the attribute parser.
                let at = NLMSG_HDR_LEN + at % (buf.len() - NLMSG_HDR_LEN);
                buf[at] = value;
            }
            buf.truncate(cut % (buf.len() + 1));
            let _ = parse_datagram(&buf);
        }
    }
}
