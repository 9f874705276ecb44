//! Deletes stale UDP conntrack entries over ctnetlink, so clients of a removed Service
//! endpoint move to a live one instead of sending into a dead NAT mapping until it times out.
//!
//! One netlink socket does a dump of the family's table, then one delete per matching entry
//! (kube-proxy forks the `conntrack` tool per entry instead). Conntrack is per network
//! namespace: the socket sees the namespace of the thread that opened it.

mod filter;
#[cfg(test)]
mod root_tests;
mod wire;

use std::io;
use std::net::IpAddr;

use netlink_packet_core::DecodeError;
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

pub use filter::FlowFilter;
pub use wire::{Family, Flow, FlowTuple};
use wire::{Received, Reply};

/// Largest datagram the kernel sends for a dump (its dump buffers stay well below this).
const RECV_BUFFER: usize = 1 << 16;

/// Errors talking ctnetlink.
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    /// The NETLINK_NETFILTER socket could not be created, bound or connected.
    #[error("opening the ctnetlink socket: {0}")]
    Open(#[source] io::Error),
    /// A request could not be sent.
    #[error("sending a ctnetlink {op} request: {source}")]
    Send {
        /// The request ("dump" or "delete").
        op: &'static str,
        /// The socket error.
        source: io::Error,
    },
    /// A reply could not be received.
    #[error("receiving ctnetlink {op} replies: {source}")]
    Receive {
        /// The request ("dump" or "delete").
        op: &'static str,
        /// The socket error.
        source: io::Error,
    },
    /// A reply was malformed.
    #[error("decoding a ctnetlink {op} reply: {source}")]
    Decode {
        /// The request ("dump" or "delete").
        op: &'static str,
        /// What was wrong with it.
        source: DecodeError,
    },
    /// The kernel answered the request with an error.
    #[error("the kernel refused the ctnetlink {op} request: {source}")]
    Kernel {
        /// The request ("dump" or "delete").
        op: &'static str,
        /// The errno the kernel returned.
        source: io::Error,
    },
}

/// An open ctnetlink socket in the calling thread's network namespace.
pub struct Conntrack {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Conntrack {
    /// Opens a NETLINK_NETFILTER socket (needs CAP_NET_ADMIN for deletes).
    pub fn open() -> Result<Self, ConntrackError> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(ConntrackError::Open)?;
        socket.bind_auto().map_err(ConntrackError::Open)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(ConntrackError::Open)?;
        Ok(Conntrack {
            socket,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUFFER),
        })
    }

    /// Delete UDP flows whose original destination is vip:port (optionally only those DNATed to
    /// `endpoint`), in either family. Returns how many were deleted.
    pub fn clear_udp_service(
        &mut self,
        vip: IpAddr,
        port: u16,
        endpoint: Option<IpAddr>,
    ) -> Result<usize, ConntrackError> {
        self.clear(FlowFilter::Service {
            vip,
            port,
            endpoint,
        })
    }

    /// Delete UDP flows DNATed to `endpoint` (reply source == endpoint), e.g. for a removed
    /// endpoint of a NodePort.
    pub fn clear_udp_endpoint(&mut self, endpoint: IpAddr) -> Result<usize, ConntrackError> {
        self.clear(FlowFilter::Endpoint(endpoint))
    }

    /// Deletes every entry `filter` matches; returns how many the kernel removed.
    pub fn clear(&mut self, filter: FlowFilter) -> Result<usize, ConntrackError> {
        let flows = self.list(filter.family())?;
        let mut deleted = 0;
        for flow in flows.iter().filter(|flow| filter.matches(flow)) {
            if self.delete(flow)? {
                deleted += 1;
            }
        }
        tracing::debug!(?filter, deleted, "cleared conntrack entries");
        Ok(deleted)
    }

    /// Lists the address/port flows of one family's conntrack table.
    pub fn list(&mut self, family: Family) -> Result<Vec<Flow>, ConntrackError> {
        const OP: &str = "dump";
        let request = wire::dump_request(family, self.next_seq());
        let seq = self.send(OP, &request)?;
        let mut flows = Vec::new();
        loop {
            for received in self.receive(OP)? {
                if received.seq != seq {
                    continue;
                }
                match received.reply {
                    Reply::Entry(Some(flow)) => flows.push(flow),
                    Reply::Done => return Ok(flows),
                    Reply::Error(errno) => return Err(kernel_error(OP, errno)),
                    Reply::Entry(None) | Reply::Ack | Reply::Other => {}
                }
            }
        }
    }

    /// Deletes one entry; `false` when it was already gone (expired or deleted meanwhile).
    fn delete(&mut self, flow: &Flow) -> Result<bool, ConntrackError> {
        const OP: &str = "delete";
        let request = wire::delete_request(flow, self.next_seq());
        let seq = self.send(OP, &request)?;
        loop {
            for received in self.receive(OP)? {
                if received.seq != seq {
                    continue;
                }
                match received.reply {
                    Reply::Ack => return Ok(true),
                    Reply::Error(libc::ENOENT) => return Ok(false),
                    Reply::Error(errno) => return Err(kernel_error(OP, errno)),
                    Reply::Entry(_) | Reply::Done | Reply::Other => {}
                }
            }
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends one request and returns its sequence number.
    fn send(&mut self, op: &'static str, request: &[u8]) -> Result<u32, ConntrackError> {
        loop {
            match self.socket.send(request, 0) {
                Ok(_) => return Ok(self.seq),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(ConntrackError::Send { op, source }),
            }
        }
    }

    fn receive(&mut self, op: &'static str) -> Result<Vec<Received>, ConntrackError> {
        self.buf.clear();
        let len = loop {
            match self.socket.recv(&mut self.buf, 0) {
                Ok(len) => break len,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(ConntrackError::Receive { op, source }),
            }
        };
        if len > self.buf.len() {
            return Err(ConntrackError::Decode {
                op,
                source: DecodeError::buffer_too_small(self.buf.len(), len),
            });
        }
        wire::parse_datagram(&self.buf).map_err(|source| ConntrackError::Decode { op, source })
    }
}

fn kernel_error(op: &'static str, errno: i32) -> ConntrackError {
    ConntrackError::Kernel {
        op,
        source: io::Error::from_raw_os_error(errno),
    }
}
