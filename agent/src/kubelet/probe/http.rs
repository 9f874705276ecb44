//! The httpGet handler: the kubelet's probe HTTP client (no proxy, no keep-alive, no
//! compression, TLS without verification, redirects followed only on the same host).

use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::HTTPGetAction;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONNECTION, HOST, USER_AGENT};
use reqwest::redirect::{Action, Attempt, Policy};
use reqwest::Url;

use super::{port, ProbeResult, ProbeTarget, KUBE_VERSION};

/// The most response body the kubelet reads (and shows in a redirect warning).
const MAX_BODY: usize = 10 * 1024;

/// Redirects followed at most, like Go's default client.
const MAX_REDIRECTS: usize = 10;

/// Who sends the request; it names the `User-Agent` (`kube-probe/1.33`, `kube-lifecycle/1.33`).
#[derive(Clone, Copy, Debug)]
pub(super) enum Purpose {
    Probe,
    Lifecycle,
}

impl Purpose {
    fn user_agent(self) -> String {
        let purpose = match self {
            Purpose::Probe => "probe",
            Purpose::Lifecycle => "lifecycle",
        };
        format!("kube-{purpose}/{KUBE_VERSION}")
    }
}

/// Why a GET produced no response.
#[derive(Debug)]
pub(super) enum GetError {
    /// The request could not be formed (no host, bad port); the kubelet reports these as
    /// probe errors rather than failures.
    Request(String),
    /// Sending it failed (connect, TLS, timeout, too many redirects), in Go's `Get "url": ...`
    /// form.
    Transport(String),
}

/// A response: the status and at most [`MAX_BODY`] bytes of body (or why reading it failed).
#[derive(Debug)]
pub(super) struct Response {
    pub(super) status: u16,
    pub(super) body: Result<Vec<u8>, String>,
}

/// Sends the handler's GET; `timeout` bounds the whole exchange including the body.
pub(super) async fn get(
    action: &HTTPGetAction,
    target: &ProbeTarget,
    purpose: Purpose,
    timeout: Option<Duration>,
) -> Result<Response, GetError> {
    let url = url_for(action, target).map_err(GetError::Request)?;
    let transport = |cause: &str| GetError::Transport(format!("Get \"{url}\": {cause}"));
    if !matches!(url.scheme(), "http" | "https") {
        return Err(transport(&format!(
            "unsupported protocol scheme \"{}\"",
            url.scheme()
        )));
    }
    let headers = headers_for(action, purpose).map_err(|e| transport(&e))?;
    let client = client().map_err(|e| transport(&e))?;
    let mut request = client.get(url.clone()).headers(headers);
    if let Some(timeout) = timeout {
        request = request.timeout(timeout);
    }
    let mut response = request.send().await.map_err(|e| {
        if e.is_timeout() {
            transport("context deadline exceeded (Client.Timeout exceeded while awaiting headers)")
        } else {
            transport(&causes(&e))
        }
    })?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    let body = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_BODY - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() == MAX_BODY {
                    // A longer body is truncated, not an error (the kubelet's ReadAtMost).
                    break Ok(body);
                }
            }
            Ok(None) => break Ok(body),
            Err(e) if e.is_timeout() => {
                break Err(format!(
                    "reading the response of \"{url}\": context deadline exceeded \
                     (Client.Timeout or context cancellation while reading body)"
                ))
            }
            Err(e) => break Err(format!("reading the response of \"{url}\": {}", causes(&e))),
        }
    };
    Ok(Response { status, body })
}

/// One httpGet probe attempt: 200..400 passes (a 3xx left unfollowed with a warning),
/// anything else fails with the status code (never the body, which may hold secrets).
pub(super) async fn probe(
    action: &HTTPGetAction,
    target: &ProbeTarget,
    timeout: Duration,
) -> ProbeResult {
    let response = match get(action, target, Purpose::Probe, Some(timeout)).await {
        Ok(response) => response,
        Err(GetError::Request(message)) => return ProbeResult::Unknown(message),
        Err(GetError::Transport(message)) => return ProbeResult::Failure(message),
    };
    let body = match response.body {
        Ok(body) => body,
        Err(message) => return ProbeResult::Unknown(message),
    };
    match response.status {
        200..=299 => ProbeResult::Success,
        300..=399 => ProbeResult::Warning(format!(
            "Probe terminated redirects, Response body: {}",
            String::from_utf8_lossy(&body)
        )),
        status => ProbeResult::Failure(format!("HTTP probe failed with statuscode: {status}")),
    }
}

/// `scheme://host:port/path` as the kubelet's `formatURL` builds it.
fn url_for(action: &HTTPGetAction, target: &ProbeTarget) -> Result<Url, String> {
    let scheme = match action.scheme.as_deref() {
        None | Some("") => "http".to_owned(),
        Some(s) => s.to_ascii_lowercase(),
    };
    let host = port::host_or_pod_ip(action.host.as_deref(), target.pod_ip.as_deref())?;
    let port = port::resolve(&action.port, &target.container)?;
    let path = action.path.as_deref().unwrap_or("");
    let slash = if path.starts_with('/') { "" } else { "/" };
    let raw = format!(
        "{scheme}://{}{slash}{path}",
        port::join_host_port(&host, port)
    );
    Url::parse(&raw).map_err(|e| format!("invalid URL {raw:?}: {e}"))
}

/// The handler's headers plus the kubelet's defaults: `User-Agent` and `Accept: */*` unless
/// given (an empty `Accept` asks for none), `Host` from the headers, `Connection: close`.
fn headers_for(action: &HTTPGetAction, purpose: Purpose) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    for header in action.http_headers.iter().flatten() {
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| format!("net/http: invalid header field name {:?}", header.name))?;
        let value = HeaderValue::from_str(&header.value)
            .map_err(|_| format!("net/http: invalid header field value for {:?}", header.name))?;
        headers.append(name, value);
    }
    if !headers.contains_key(USER_AGENT) {
        let agent = HeaderValue::from_str(&purpose.user_agent())
            .map_err(|_| "invalid User-Agent".to_owned())?;
        headers.insert(USER_AGENT, agent);
    }
    match headers.get(ACCEPT) {
        None => {
            headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
        }
        Some(v) if v.is_empty() => {
            // The kubelet sends none then; reqwest puts back `*/*`, which means the same.
            headers.remove(ACCEPT);
        }
        Some(_) => {}
    }
    // Only the first Host counts, and an empty one means the URL's host (Go's req.Host).
    match headers.get(HOST).cloned() {
        Some(host) if !host.is_empty() => {
            headers.insert(HOST, host);
        }
        _ => {
            headers.remove(HOST);
        }
    }
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    Ok(headers)
}

/// The shared client; per-request state (timeout, headers) is set on each request.
fn client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(0)
                .http1_only()
                .no_gzip()
                .tls_danger_accept_invalid_certs(true)
                .redirect(Policy::custom(same_host_redirects))
                .build()
                .map_err(|e| format!("building the HTTP client: {}", causes(&e)))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The kubelet's `RedirectChecker(false)`: a redirect to another host ends the chain with the
/// 3xx response; more than ten redirects is an error.
fn same_host_redirects(attempt: Attempt<'_>) -> Action {
    let original = attempt.previous().first().and_then(Url::host_str);
    let same_host = original == attempt.url().host_str();
    let followed = attempt.previous().len();
    if !same_host {
        attempt.stop()
    } else if followed >= MAX_REDIRECTS {
        attempt.error(format!("stopped after {MAX_REDIRECTS} redirects"))
    } else {
        attempt.follow()
    }
}

/// Whether a transport error says a TLS handshake got a reply that is not TLS (a plain HTTP
/// server on an HTTPS URL: rustls rejects its first byte as a record type).
pub(super) fn is_plaintext_reply(message: &str) -> bool {
    message.contains("InvalidContentType")
}

/// The error's causes below reqwest's own "error sending request" line, joined with ": ".
fn causes(error: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    if parts.is_empty() {
        error.to_string()
    } else {
        parts.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::probe::test_support::{
        http_server, response, target, target_with_web_port, FakeExec,
    };
    use crate::kubelet::probe::{run_once, ProbeResult};
    use k8s_openapi::api::core::v1::{HTTPHeader, Probe};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn http_probe(port: IntOrString, path: &str, scheme: Option<&str>) -> Probe {
        Probe {
            http_get: Some(HTTPGetAction {
                port,
                path: Some(path.into()),
                scheme: scheme.map(str::to_owned),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn no_exec() -> FakeExec {
        FakeExec::new(|_, _, _| Err(ExecError::Failed("no exec in http tests".into())))
    }

    use crate::kubelet::probe::ExecError;

    #[tokio::test]
    async fn status_codes_decide_like_the_kubelet() {
        let server = http_server(false, |head, _| {
            let code = head
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.strip_prefix("/code/"))
                .unwrap_or("200")
                .to_owned();
            response(&code, &[], "body")
        })
        .await;
        let t = target(Some("127.0.0.1"));
        let port = IntOrString::Int(server.port.into());
        let exec = no_exec();
        for (code, expected) in [
            ("200", ProbeResult::Success),
            (
                "399",
                ProbeResult::Warning("Probe terminated redirects, Response body: body".into()),
            ),
            (
                "400",
                ProbeResult::Failure("HTTP probe failed with statuscode: 400".into()),
            ),
            (
                "500",
                ProbeResult::Failure("HTTP probe failed with statuscode: 500".into()),
            ),
            ("204", ProbeResult::Success),
        ] {
            let probe = http_probe(port.clone(), &format!("/code/{code}"), None);
            assert_eq!(run_once(&probe, &t, &exec).await, expected, "status {code}");
        }
    }

    #[tokio::test]
    async fn sends_the_kubelet_headers_and_honours_overrides() {
        let server = http_server(false, |_, _| response("200", &[], "")).await;
        let t = target_with_web_port("127.0.0.1", server.port);
        let mut probe = http_probe(IntOrString::String("web".into()), "/healthz?x=1", None);
        let exec = no_exec();
        assert_eq!(run_once(&probe, &t, &exec).await, ProbeResult::Success);
        let head = server.last_request();
        assert!(head.starts_with("GET /healthz?x=1 HTTP/1.1\r\n"), "{head}");
        let lower = head.to_ascii_lowercase();
        assert!(
            lower.contains("\r\nuser-agent: kube-probe/1.33\r\n"),
            "{head}"
        );
        assert!(lower.contains("\r\naccept: */*\r\n"), "{head}");
        assert!(lower.contains("\r\nconnection: close\r\n"), "{head}");
        assert!(
            lower.contains(&format!("\r\nhost: 127.0.0.1:{}\r\n", server.port)),
            "{head}"
        );
        assert!(!lower.contains("accept-encoding"), "{head}");

        if let Some(action) = probe.http_get.as_mut() {
            action.http_headers = Some(vec![
                HTTPHeader {
                    name: "host".into(),
                    value: "example.test".into(),
                },
                HTTPHeader {
                    name: "User-Agent".into(),
                    value: "mine".into(),
                },
                HTTPHeader {
                    name: "Accept".into(),
                    value: "".into(),
                },
                HTTPHeader {
                    name: "X-Custom".into(),
                    value: "a".into(),
                },
            ]);
        }
        assert_eq!(run_once(&probe, &t, &exec).await, ProbeResult::Success);
        let lower = server.last_request().to_ascii_lowercase();
        assert!(lower.contains("\r\nhost: example.test\r\n"), "{lower}");
        assert!(lower.contains("\r\nuser-agent: mine\r\n"), "{lower}");
        assert!(lower.contains("\r\naccept: */*\r\n"), "{lower}");
        assert!(lower.contains("\r\nx-custom: a\r\n"), "{lower}");
    }

    #[tokio::test]
    async fn follows_same_host_redirects_and_warns_on_other_hosts() {
        let server = http_server(false, |head, port| {
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
            match path.as_str() {
                "/start" => response("302", &[("Location", "/next")], ""),
                "/next" => response("200", &[], ""),
                "/away" => response(
                    "302",
                    &[("Location", &format!("http://localhost:{port}/next"))],
                    "moved",
                ),
                _ => response("302", &[("Location", "/loop")], ""),
            }
        })
        .await;
        let t = target(Some("127.0.0.1"));
        let port = IntOrString::Int(server.port.into());
        let exec = no_exec();
        assert_eq!(
            run_once(&http_probe(port.clone(), "/start", None), &t, &exec).await,
            ProbeResult::Success
        );
        assert_eq!(
            run_once(&http_probe(port.clone(), "/away", None), &t, &exec).await,
            ProbeResult::Warning("Probe terminated redirects, Response body: moved".into())
        );
        match run_once(&http_probe(port, "/loop", None), &t, &exec).await {
            ProbeResult::Failure(m) => assert!(m.contains("stopped after 10 redirects"), "{m}"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn https_is_not_verified() {
        let server = http_server(true, |_, _| response("200", &[], "")).await;
        let t = target(Some("127.0.0.1"));
        let probe = http_probe(IntOrString::Int(server.port.into()), "/", Some("HTTPS"));
        assert_eq!(run_once(&probe, &t, &no_exec()).await, ProbeResult::Success);
        assert!(server.last_request().starts_with("GET / HTTP/1.1"));
    }

    #[tokio::test]
    async fn a_slow_server_fails_at_the_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accepts and never answers.
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let mut probe = http_probe(IntOrString::Int(port.into()), "/", None);
        probe.timeout_seconds = Some(1);
        let started = std::time::Instant::now();
        let result = run_once(&probe, &target(Some("127.0.0.1")), &no_exec()).await;
        hold.abort();
        assert_eq!(
            result,
            ProbeResult::Failure(format!(
                "Get \"http://127.0.0.1:{port}/\": context deadline exceeded \
                 (Client.Timeout exceeded while awaiting headers)"
            ))
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn bad_input_is_unknown_or_failure_never_a_panic() {
        let t = target(Some("127.0.0.1"));
        let exec = no_exec();
        assert_eq!(
            run_once(
                &http_probe(IntOrString::String("nope".into()), "/", None),
                &t,
                &exec
            )
            .await,
            ProbeResult::Unknown("port nope not found".into())
        );
        assert_eq!(
            run_once(&http_probe(IntOrString::Int(0), "/", None), &t, &exec).await,
            ProbeResult::Unknown("invalid port number: 0".into())
        );
        assert_eq!(
            run_once(&http_probe(IntOrString::Int(70000), "/", None), &t, &exec).await,
            ProbeResult::Unknown("invalid port number: 70000".into())
        );
        assert!(matches!(
            run_once(
                &http_probe(IntOrString::Int(80), "/", None),
                &target(None),
                &exec
            )
            .await,
            ProbeResult::Unknown(_)
        ));
        assert_eq!(
            run_once(
                &http_probe(IntOrString::Int(1), "/", Some("ftp")),
                &t,
                &exec
            )
            .await,
            ProbeResult::Failure(
                "Get \"ftp://127.0.0.1:1/\": unsupported protocol scheme \"ftp\"".into()
            )
        );
        let mut probe = http_probe(IntOrString::Int(1), "/", None);
        if let Some(action) = probe.http_get.as_mut() {
            action.http_headers = Some(vec![HTTPHeader {
                name: "bad name".into(),
                value: "v".into(),
            }]);
        }
        match run_once(&probe, &t, &exec).await {
            ProbeResult::Failure(m) => assert!(m.contains("invalid header field name"), "{m}"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_refused_connection_fails() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let probe = http_probe(IntOrString::Int(port.into()), "/", None);
        match run_once(&probe, &target(Some("127.0.0.1")), &no_exec()).await {
            ProbeResult::Failure(m) => {
                assert!(
                    m.starts_with(&format!("Get \"http://127.0.0.1:{port}/\": ")),
                    "{m}"
                );
                assert!(m.to_ascii_lowercase().contains("refused"), "{m}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn long_bodies_are_truncated_not_errors() {
        let body = "x".repeat(5 * MAX_BODY);
        let server = http_server(false, move |_, _| response("301", &[], &body)).await;
        let probe = http_probe(IntOrString::Int(server.port.into()), "/", None);
        match run_once(&probe, &target(Some("127.0.0.1")), &no_exec()).await {
            ProbeResult::Warning(m) => assert_eq!(
                m.len(),
                "Probe terminated redirects, Response body: ".len() + MAX_BODY
            ),
            other => panic!("unexpected {other:?}"),
        }
    }
}
