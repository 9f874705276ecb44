//! `FaultProxy`: a plain-HTTP proxy in front of a [`Registry`] that replaces, truncates, delays or drops chosen
//! responses — for what the real registry refuses to serve (e.g. a 200 manifest that is not JSON).
//!
//! Every connection carries one request (`Connection: close` is forced both ways). Requests with a chunked body
//! are answered 501. Only plain-HTTP registries can be proxied.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::registry::Registry;

/// What to do with a matching request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status, content type, extra headers and body instead of forwarding.
    Respond {
        /// HTTP status code.
        status: u16,
        /// `Content-Type` header.
        content_type: String,
        /// Extra headers (e.g. a lying `Docker-Content-Digest`).
        headers: Vec<(String, String)>,
        /// Response body.
        body: Vec<u8>,
    },
    /// Forward, but close the connection after `n` body bytes (the upstream `Content-Length` is kept).
    TruncateBody(usize),
    /// Close the connection without answering.
    Hangup,
    /// Sleep, then forward normally.
    Delay(Duration),
}

impl Fault {
    /// `Respond` with no extra headers.
    pub fn respond(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Fault {
        Fault::Respond {
            status,
            content_type: content_type.to_string(),
            headers: Vec::new(),
            body: body.into(),
        }
    }
}

struct Rule {
    method: Option<String>,
    path: String,
    fault: Fault,
    remaining: Option<usize>,
}

#[derive(Default)]
struct State {
    rules: Mutex<Vec<Rule>>,
    seen: Mutex<Vec<(String, String)>>,
}

impl State {
    /// Records the request and returns the first matching fault (consuming one use of it).
    fn take(&self, method: &str, path: &str) -> Option<Fault> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((method.to_string(), path.to_string()));
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let idx = rules.iter().position(|r| {
            r.path == path
                && r.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method))
                && r.remaining != Some(0)
        })?;
        let rule = &mut rules[idx];
        if let Some(n) = rule.remaining.as_mut() {
            *n -= 1;
        }
        Some(rule.fault.clone())
    }
}

/// A running fault-injecting proxy; stopped on drop.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port forwarding to `reg` (which must be plain HTTP).
    pub fn start(reg: &Registry) -> Result<FaultProxy> {
        if reg.is_tls() {
            bail!("FaultProxy only proxies plain-HTTP registries");
        }
        let upstream: SocketAddr = reg.host().parse()?;
        let listener = TcpListener::bind("127.0.0.1:0").context("binding fault proxy")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if sp.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let st = st.clone();
                    std::thread::spawn(move || {
                        let _ = handle(conn, upstream, &st);
                    });
                }
            })?;
        Ok(FaultProxy {
            addr,
            state,
            stop,
            thread: Some(thread),
        })
    }

    /// `127.0.0.1:PORT` of the proxy (use it in image references instead of the registry's host).
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Applies `fault` to requests for exactly `path` (no query; any method if `method` is None), `times` times
    /// or forever. Earlier rules win.
    pub fn inject(&self, method: Option<&str>, path: &str, fault: Fault, times: Option<usize>) {
        self.state
            .rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Rule {
                method: method.map(str::to_string),
                path: path.to_string(),
                fault,
                remaining: times,
            });
    }

    /// Serves `body` with status 200 and `content_type` for `GET /v2/<repo>/manifests/<reference>`.
    pub fn serve_manifest(
        &self,
        repo: &str,
        reference: &str,
        content_type: &str,
        body: impl Into<Vec<u8>>,
    ) {
        let path = format!("/v2/{repo}/manifests/{reference}");
        self.inject(None, &path, Fault::respond(200, content_type, body), None);
    }

    /// Removes all rules.
    pub fn clear(&self) {
        self.state
            .rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// `(method, path)` of every request received so far.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.state
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Number of requests received for `path` with `method`.
    pub fn hits(&self, method: &str, path: &str) -> usize {
        self.requests()
            .iter()
            .filter(|(m, p)| m.eq_ignore_ascii_case(method) && p == path)
            .count()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves one request on `client`.
fn handle(mut client: TcpStream, upstream: SocketAddr, state: &State) -> io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let (head, mut body) = read_head(&mut client)?;
    let head_text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head_text.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let mut parts = request_line.split(' ');
    let (method, target) = (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or("/").to_string(),
    );
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        return write_response(
            &mut client,
            501,
            "text/plain",
            &[],
            b"chunked request bodies not supported\n",
        );
    }
    let len: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while body.len() < len {
        let mut buf = vec![0u8; (len - body.len()).min(1 << 20)];
        let n = client.read(&mut buf)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    let path = target.split('?').next().unwrap_or_default().to_string();
    let mut limit = None;
    match state.take(&method, &path) {
        Some(Fault::Respond {
            status,
            content_type,
            headers,
            body,
        }) => {
            return write_response(&mut client, status, &content_type, &headers, &body);
        }
        Some(Fault::Hangup) => return client.shutdown(Shutdown::Both),
        Some(Fault::Delay(d)) => std::thread::sleep(d),
        Some(Fault::TruncateBody(n)) => limit = Some(n),
        None => {}
    }
    let mut up = TcpStream::connect(upstream)?;
    let mut req = format!("{request_line}\r\n");
    for (k, v) in &headers {
        if !["connection", "keep-alive", "proxy-connection"]
            .iter()
            .any(|h| k.eq_ignore_ascii_case(h))
        {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    req.push_str("Connection: close\r\n\r\n");
    up.write_all(req.as_bytes())?;
    up.write_all(&body)?;
    let (resp_head, resp_rest) = read_head(&mut up)?;
    let resp_text = String::from_utf8_lossy(&resp_head).into_owned();
    let mut out = String::new();
    for line in resp_text.split("\r\n").filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    client.write_all(out.as_bytes())?;
    let mut sent = 0usize;
    let mut send = |client: &mut TcpStream, chunk: &[u8]| -> io::Result<bool> {
        let allowed = limit.map_or(chunk.len(), |l| l.saturating_sub(sent).min(chunk.len()));
        client.write_all(&chunk[..allowed])?;
        sent += allowed;
        Ok(limit.is_none_or(|l| sent < l))
    };
    if send(&mut client, &resp_rest)? {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = up.read(&mut buf)?;
            if n == 0 || !send(&mut client, &buf[..n])? {
                break;
            }
        }
    }
    client.flush()?;
    client.shutdown(Shutdown::Both)
}

/// Reads up to the end of the HTTP head; returns (head without the blank line, bytes already read past it).
fn read_head(stream: &mut TcpStream) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(pos + 4);
            buf.truncate(pos);
            return Ok((buf, rest));
        }
        if buf.len() > 256 * 1024 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "HTTP head too large",
            ));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before end of HTTP head",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Writes a complete response and closes the connection.
fn write_response(
    client: &mut TcpStream,
    status: u16,
    content_type: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Docker-Distribution-Api-Version: registry/2.0\r\nConnection: close\r\n",
        reason(status),
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    client.write_all(head.as_bytes())?;
    client.write_all(body)?;
    client.flush()?;
    client.shutdown(Shutdown::Both)
}

/// Reason phrase for common status codes.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
