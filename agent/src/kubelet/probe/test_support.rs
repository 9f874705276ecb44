//! Shared test helpers: a scripted `ContainerExec` and probe targets.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ContainerPort};

use super::{ContainerExec, ExecError, ExecResult, ProbeTarget};

type Script = dyn Fn(&str, &[String], Duration) -> Result<ExecResult, ExecError> + Send + Sync;

/// A `ContainerExec` answering from a closure and counting calls.
#[derive(Clone)]
pub(super) struct FakeExec {
    script: Arc<Script>,
    calls: Arc<AtomicUsize>,
}

impl FakeExec {
    pub(super) fn new(
        script: impl Fn(&str, &[String], Duration) -> Result<ExecResult, ExecError>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        Self {
            script: Arc::new(script),
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub(super) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl ContainerExec for FakeExec {
    async fn exec_sync(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecResult, ExecError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        (self.script)(container_id, &cmd, timeout)
    }
}

/// A target for container `c` (ID `cid`, a port named `web` on 8080) in pod `p_ns(uid)`.
pub(super) fn target(pod_ip: Option<&str>) -> ProbeTarget {
    ProbeTarget {
        pod_ip: pod_ip.map(str::to_owned),
        container_id: "cid".into(),
        container: Container {
            name: "c".into(),
            ports: Some(vec![ContainerPort {
                name: Some("web".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        },
        pod: super::format_pod("p", "ns", "uid"),
    }
}

/// A target whose named port `web` is `port`.
pub(super) fn target_with_web_port(pod_ip: &str, port: u16) -> ProbeTarget {
    let mut t = target(Some(pod_ip));
    if let Some(p) = t.container.ports.as_mut().and_then(|p| p.first_mut()) {
        p.container_port = i32::from(port);
    }
    t
}

/// A real HTTP/1.1 (or HTTPS with a self-signed certificate) server on 127.0.0.1 that answers
/// each request with `respond(request head, own port)` and records the request heads.
pub(super) struct HttpServer {
    pub(super) port: u16,
    requests: Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpServer {
    /// The head of the latest request.
    pub(super) fn last_request(&self) -> String {
        self.requests
            .lock()
            .map(|r| r.last().cloned().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers a request head (given the server's port) with a whole response.
type Responder = dyn Fn(&str, u16) -> String + Send + Sync;

/// Starts an [`HttpServer`].
pub(super) async fn http_server(
    tls: bool,
    respond: impl Fn(&str, u16) -> String + Send + Sync + 'static,
) -> HttpServer {
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        mut stream: S,
        respond: &Responder,
        port: u16,
        requests: &std::sync::Mutex<Vec<String>>,
    ) {
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n")
            && head.len() < 65536
            && head.first() != Some(&0x16)
        {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        if head.first() == Some(&0x16) {
            // A TLS ClientHello: answer like a real HTTP server does to a malformed request.
            let _ = stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
                .await;
            return;
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let answer = respond(&head, port);
        if let Ok(mut r) = requests.lock() {
            r.push(head);
        }
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tls.then(tls_acceptor);
    let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = requests.clone();
    let respond: Arc<Responder> = Arc::new(respond);
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let respond = respond.clone();
            let recorded = recorded.clone();
            tokio::spawn(async move {
                match acceptor {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            serve(stream, respond.as_ref(), port, &recorded).await;
                        }
                    }
                    None => serve(stream, respond.as_ref(), port, &recorded).await,
                }
            });
        }
    });
    HttpServer {
        port,
        requests,
        task,
    }
}

fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
    use tokio_rustls::rustls;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// An HTTP/1.1 response with `code`, extra headers and `body`, closing the connection.
pub(super) fn response(code: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut out = format!(
        "HTTP/1.1 {code} Whatever\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    out
}
