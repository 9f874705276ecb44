//! One client connection: a bounded line reader and a bounded write queue on a
//! non-blocking socket.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;

use crate::monitor::protocol::MAX_REQUEST_BYTES;

/// Most bytes queued for a client that does not read (a stuck subscriber is dropped).
const MAX_QUEUED_BYTES: usize = 1 << 20;

/// A client of the monitor.
#[derive(Debug)]
pub struct Conn {
    /// The socket (non-blocking).
    pub stream: UnixStream,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Receives events; its further input is ignored.
    pub subscriber: bool,
    /// Done: drop it.
    pub closed: bool,
}

impl Conn {
    /// Wrap an accepted socket.
    pub fn new(stream: UnixStream) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(Self {
            stream,
            input: Vec::new(),
            output: Vec::new(),
            subscriber: false,
            closed: false,
        })
    }

    /// Whether there is output waiting for the socket to accept it.
    pub fn wants_write(&self) -> bool {
        !self.output.is_empty()
    }

    /// Read what the client sent and return the complete lines.
    pub fn read_lines(&mut self) -> Vec<Vec<u8>> {
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.closed = true;
                    break;
                }
                // A subscriber only listens; what it sends is dropped.
                Ok(_) if self.subscriber => {}
                Ok(n) => {
                    self.input.extend_from_slice(&buf[..n]);
                    if self.input.len() > MAX_REQUEST_BYTES && !self.input.contains(&b'\n') {
                        self.closed = true;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.closed = true;
                    break;
                }
            }
        }
        let mut lines = Vec::new();
        while let Some(at) = self.input.iter().position(|&b| b == b'\n') {
            let rest = self.input.split_off(at + 1);
            let mut line = std::mem::replace(&mut self.input, rest);
            line.pop();
            lines.push(line);
        }
        if self.input.is_empty() {
            // Idle clients hold no buffer.
            self.input = Vec::new();
        }
        lines
    }

    /// Queue one line and send what the socket takes now.
    pub fn send_line(&mut self, line: &[u8]) {
        if self.closed {
            return;
        }
        if self.output.len() + line.len() > MAX_QUEUED_BYTES {
            self.closed = true;
            return;
        }
        self.output.extend_from_slice(line);
        self.output.push(b'\n');
        self.flush();
    }

    /// Send queued output until the socket would block.
    pub fn flush(&mut self) {
        while !self.output.is_empty() {
            match self.stream.write(&self.output) {
                Ok(0) => {
                    self.closed = true;
                    return;
                }
                Ok(n) => {
                    self.output.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.closed = true;
                    return;
                }
            }
        }
        self.output = Vec::new();
    }

    /// Send everything queued, waiting for the client (the monitor is about to exit).
    pub fn flush_blocking(&mut self) {
        let timeout = Some(std::time::Duration::from_secs(2));
        if self.stream.set_nonblocking(false).is_ok()
            && self.stream.set_write_timeout(timeout).is_ok()
        {
            let _ = self.stream.write_all(&self.output);
            self.output.clear();
        }
    }
}
