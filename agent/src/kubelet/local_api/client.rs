//! A small client of the local API over its unix socket (used by the `capstan` commands).

use std::io;
use std::path::{Path, PathBuf};

use base64::Engine;
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use super::types::{
    ErrorBody, ExecOutput, ExecRequest, ExecResponse, LogQuery, PodDetail, PodList, WatchEvent,
};

/// Longest watch line accepted (a pod with its status is far smaller).
const MAX_WATCH_LINE: usize = 16 << 20;

/// Why a local API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The agent's socket cannot be reached.
    #[error("connecting to the agent at {} (is `capstan agent` running?)", socket.display())]
    Connect {
        /// The socket path.
        socket: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The HTTP exchange failed.
    #[error("talking to the agent")]
    Http(#[from] hyper::Error),
    /// The agent refused the request.
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The agent's error message.
        message: String,
    },
    /// The agent's answer is not what the API promises.
    #[error("unexpected answer from the agent: {0}")]
    Decode(String),
}

/// A client of one agent's local API.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// A client of the agent listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Client {
            socket: socket.into(),
        }
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The pods (of one namespace, or all) and the manifest errors.
    pub async fn pods(&self, namespace: Option<&str>) -> Result<PodList, ClientError> {
        json(self.get(&pods_path(namespace)).await?).await
    }

    /// The current pods as `ADDED`, then every change.
    pub async fn watch(
        &self,
        namespace: Option<&str>,
    ) -> Result<impl Stream<Item = Result<WatchEvent, ClientError>>, ClientError> {
        let response = self
            .get(&format!("{}?watch=true", pods_path(namespace)))
            .await?;
        let body = response.into_body().into_data_stream();
        Ok(futures::stream::unfold(
            (body, Vec::<u8>::new()),
            |(mut body, mut buffer)| async move {
                loop {
                    if let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buffer.drain(..=end).collect();
                        let event = serde_json::from_slice(&line)
                            .map_err(|e| ClientError::Decode(format!("watch event: {e}")));
                        return Some((event, (body, buffer)));
                    }
                    if buffer.len() > MAX_WATCH_LINE {
                        let error = ClientError::Decode("watch line too long".to_owned());
                        return Some((Err(error), (body, Vec::new())));
                    }
                    match body.next().await {
                        Some(Ok(chunk)) => buffer.extend_from_slice(&chunk),
                        Some(Err(e)) => return Some((Err(e.into()), (body, Vec::new()))),
                        None => return None,
                    }
                }
            },
        ))
    }

    /// One pod (by name or static pod manifest name) and its recent events.
    pub async fn pod(&self, namespace: &str, name: &str) -> Result<PodDetail, ClientError> {
        json(self.get(&pod_path(namespace, name, "")).await?).await
    }

    /// A container's log as it arrives.
    pub async fn logs(
        &self,
        namespace: &str,
        name: &str,
        query: &LogQuery,
    ) -> Result<impl Stream<Item = Result<Bytes, ClientError>>, ClientError> {
        let mut params = Vec::new();
        if let Some(container) = &query.container {
            params.push(format!("container={}", encode(container)));
        }
        if query.follow {
            params.push("follow=true".to_owned());
        }
        if let Some(tail) = query.tail_lines {
            params.push(format!("tailLines={tail}"));
        }
        if query.previous {
            params.push("previous=true".to_owned());
        }
        if query.timestamps {
            params.push("timestamps=true".to_owned());
        }
        if let Some(stream) = query.stream {
            params.push(format!("stream={stream:?}"));
        }
        let mut path = pod_path(namespace, name, "/log");
        if !params.is_empty() {
            path = format!("{path}?{}", params.join("&"));
        }
        let response = self.get(&path).await?;
        Ok(response.into_body().into_data_stream().map_err(Into::into))
    }

    /// Run a command in a container and wait for its result.
    pub async fn exec(
        &self,
        namespace: &str,
        name: &str,
        request: &ExecRequest,
    ) -> Result<ExecOutput, ClientError> {
        let body = serde_json::to_vec(request)
            .map_err(|e| ClientError::Decode(format!("encoding the request: {e}")))?;
        let path = pod_path(namespace, name, "/exec");
        let response: ExecResponse =
            json(self.send(Method::POST, &path, Bytes::from(body)).await?).await?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let decode = |s: &str| {
            b64.decode(s)
                .map_err(|e| ClientError::Decode(format!("exec output: {e}")))
        };
        Ok(ExecOutput {
            exit_code: response.exit_code,
            stdout: decode(&response.stdout)?,
            stderr: decode(&response.stderr)?,
        })
    }

    async fn get(&self, path: &str) -> Result<Response<Incoming>, ClientError> {
        self.send(Method::GET, path, Bytes::new()).await
    }

    /// One request on a fresh connection; a non-2xx answer becomes [`ClientError::Api`].
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Response<Incoming>, ClientError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Connect {
                    socket: self.socket.clone(),
                    source,
                })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "local API connection ended");
            }
        });
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "localhost")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| ClientError::Decode(format!("building the request: {e}")))?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.into_body().collect().await?.to_bytes();
        let message = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(error) => error.error,
            Err(_) => String::from_utf8_lossy(&body).into_owned(),
        };
        Err(ClientError::Api {
            status: status.as_u16(),
            message,
        })
    }
}

async fn json<T: DeserializeOwned>(response: Response<Incoming>) -> Result<T, ClientError> {
    let body = response.into_body().collect().await?.to_bytes();
    serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))
}

fn pods_path(namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("/v1/namespaces/{}/pods", encode(ns)),
        None => "/v1/pods".to_owned(),
    }
}

fn pod_path(namespace: &str, name: &str, suffix: &str) -> String {
    format!(
        "/v1/namespaces/{}/pods/{}{suffix}",
        encode(namespace),
        encode(name)
    )
}

/// Percent-encode everything but RFC 3986 unreserved characters (names come from users).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
