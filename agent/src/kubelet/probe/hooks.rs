//! Lifecycle hooks (postStart, preStop) as the kubelet's handler runner runs them.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ExecAction, HTTPGetAction, LifecycleHandler};

use super::exec::{self, ContainerExec, ExecError};
use super::http::{self, GetError, Purpose};
use super::ProbeTarget;

/// Why a hook did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// The handler failed or cannot run; the message is the kubelet's (the pod worker shows it
    /// as the container's error; events should say only "PostStartHook failed" /
    /// "PreStopHook failed", as the kubelet, since the output may hold secrets).
    #[error("{0}")]
    Failed(String),
    /// The handler was still running at the deadline (for preStop: the grace period ran out;
    /// the kubelet logs this and goes on to stop the container without an event).
    #[error("lifecycle hook did not complete within {0:?}")]
    TimedOut(Duration),
}

/// Runs `handler` for the target's container; `timeout` (None: unbounded, as postStart)
/// bounds it. HTTP hooks pass on any response status, as the kubelet's.
pub async fn run_hook<E: ContainerExec>(
    handler: &LifecycleHandler,
    target: &ProbeTarget,
    exec: &E,
    timeout: Option<Duration>,
) -> Result<(), HookError> {
    let run = run_handler(handler, target, exec, timeout);
    match timeout {
        None => run.await,
        Some(limit) => tokio::time::timeout(limit, run)
            .await
            .unwrap_or(Err(HookError::TimedOut(limit))),
    }
}

async fn run_handler<E: ContainerExec>(
    handler: &LifecycleHandler,
    target: &ProbeTarget,
    exec: &E,
    timeout: Option<Duration>,
) -> Result<(), HookError> {
    let container = &target.container.name;
    let pod = &target.pod;
    if let Some(action) = &handler.exec {
        run_exec(action, target, exec, timeout).await
    } else if let Some(action) = &handler.http_get {
        run_http(action, target).await.map_err(|error| {
            HookError::Failed(format!(
                "HTTP lifecycle hook ({}) for Container \"{container}\" in Pod \"{pod}\" \
                 failed - error: {error}",
                action.path.as_deref().unwrap_or("")
            ))
        })
    } else if let Some(action) = &handler.sleep {
        let seconds = u64::try_from(action.seconds).unwrap_or(0);
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        Ok(())
    } else {
        let what = if handler.tcp_socket.is_some() {
            "tcpSocket is not supported as a lifecycle handler"
        } else {
            "no exec, httpGet or sleep action"
        };
        Err(HookError::Failed(format!(
            "Cannot run handler: invalid handler: {what}"
        )))
    }
}

async fn run_exec<E: ContainerExec>(
    action: &ExecAction,
    target: &ProbeTarget,
    exec: &E,
    timeout: Option<Duration>,
) -> Result<(), HookError> {
    let cmd = exec::command_for(action, target);
    let listed = exec::go_list(&cmd);
    let joined = cmd.join(" ");
    // The runtime gets the hook's deadline so it ends the command there itself.
    let limit = timeout.unwrap_or(Duration::ZERO);
    let (error, output) = match exec::run(exec, &target.container_id, cmd, limit).await {
        Ok(result) if result.exit_code == 0 => return Ok(()),
        Ok(result) => (
            format!(
                "command '{joined}' exited with {}: {}",
                result.exit_code,
                String::from_utf8_lossy(&result.stderr)
            ),
            exec::combined_output(&result),
        ),
        Err(ExecError::TimedOut) if timeout.is_some() => {
            return Err(HookError::TimedOut(limit));
        }
        Err(e) => (e.to_string(), Vec::new()),
    };
    Err(HookError::Failed(format!(
        "Exec lifecycle hook ({listed}) for Container \"{}\" in Pod \"{}\" failed - error: \
         {error}, message: {:?}",
        target.container.name,
        target.pod,
        String::from_utf8_lossy(&output)
    )))
}

/// GETs the hook's URL; any response passes. An HTTPS hook answered in plain HTTP is retried
/// over HTTP without `Authorization`, as the kubelet's (which records `LifecycleHTTPFallback`).
async fn run_http(action: &HTTPGetAction, target: &ProbeTarget) -> Result<(), String> {
    let error = match http::get(action, target, Purpose::Lifecycle, None).await {
        Ok(_) => return Ok(()),
        Err(GetError::Request(message)) => return Err(message),
        Err(GetError::Transport(message)) => message,
    };
    let https = action
        .scheme
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("https"));
    if !https || !http::is_plaintext_reply(&error) {
        return Err(error);
    }
    let plain = HTTPGetAction {
        scheme: Some("HTTP".to_owned()),
        http_headers: action.http_headers.as_ref().map(|headers| {
            headers
                .iter()
                .filter(|h| !h.name.eq_ignore_ascii_case("authorization"))
                .cloned()
                .collect()
        }),
        ..action.clone()
    };
    match http::get(&plain, target, Purpose::Lifecycle, None).await {
        Ok(_) => {
            tracing::warn!(
                container = %target.container.name,
                pod = %target.pod,
                "request to HTTPS lifecycle hook got HTTP response, retry with HTTP succeeded"
            );
            Ok(())
        }
        Err(_) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::probe::test_support::{http_server, response, target, FakeExec};
    use crate::kubelet::probe::ExecResult;
    use k8s_openapi::api::core::v1::{HTTPHeader, SleepAction, TCPSocketAction};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn exec_hook(cmd: &[&str]) -> LifecycleHandler {
        LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(cmd.iter().map(|s| s.to_string()).collect()),
            }),
            ..Default::default()
        }
    }

    fn http_hook(port: u16, path: &str) -> LifecycleHandler {
        LifecycleHandler {
            http_get: Some(HTTPGetAction {
                port: IntOrString::Int(port.into()),
                path: Some(path.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn scripted() -> FakeExec {
        FakeExec::new(|_, cmd, timeout| match cmd[0].as_str() {
            "ok" => Ok(ExecResult::default()),
            "slow" if !timeout.is_zero() => Err(ExecError::TimedOut),
            "broken" => Err(ExecError::Failed("container not found".into())),
            _ => Ok(ExecResult {
                exit_code: 3,
                stdout: b"out".to_vec(),
                stderr: b"err".to_vec(),
            }),
        })
    }

    #[tokio::test]
    async fn exec_hooks_report_like_the_kubelet() {
        let t = target(None);
        let exec = scripted();
        assert_eq!(run_hook(&exec_hook(&["ok"]), &t, &exec, None).await, Ok(()));
        assert_eq!(
            run_hook(&exec_hook(&["fail", "now"]), &t, &exec, None).await,
            Err(HookError::Failed(
                "Exec lifecycle hook ([fail now]) for Container \"c\" in Pod \"p_ns(uid)\" \
                 failed - error: command 'fail now' exited with 3: err, message: \"outerr\""
                    .into()
            ))
        );
        assert_eq!(
            run_hook(&exec_hook(&["broken"]), &t, &exec, None).await,
            Err(HookError::Failed(
                "Exec lifecycle hook ([broken]) for Container \"c\" in Pod \"p_ns(uid)\" \
                 failed - error: container not found, message: \"\""
                    .into()
            ))
        );
        let limit = Duration::from_secs(2);
        assert_eq!(
            run_hook(&exec_hook(&["slow"]), &t, &exec, Some(limit)).await,
            Err(HookError::TimedOut(limit))
        );
    }

    #[tokio::test]
    async fn http_hooks_pass_on_any_status_and_fail_on_transport_errors() {
        let server = http_server(false, |_, _| response("500", &[], "")).await;
        let t = target(Some("127.0.0.1"));
        let exec = scripted();
        assert_eq!(
            run_hook(&http_hook(server.port, "/stop"), &t, &exec, None).await,
            Ok(())
        );
        let head = server.last_request().to_ascii_lowercase();
        assert!(head.starts_with("get /stop http/1.1"), "{head}");
        assert!(
            head.contains("\r\nuser-agent: kube-lifecycle/1.33\r\n"),
            "{head}"
        );

        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        match run_hook(&http_hook(port, "/stop"), &t, &exec, None).await {
            Err(HookError::Failed(m)) => assert!(
                m.starts_with(&format!(
                    "HTTP lifecycle hook (/stop) for Container \"c\" in Pod \"p_ns(uid)\" \
                     failed - error: Get \"http://127.0.0.1:{port}/stop\": "
                )),
                "{m}"
            ),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            run_hook(&http_hook(0, "/"), &t, &exec, None).await,
            Err(HookError::Failed(m)) if m.ends_with("error: invalid port number: 0")
        ));
    }

    #[tokio::test]
    async fn https_hooks_answered_in_plain_http_fall_back_without_authorization() {
        let server = http_server(false, |_, _| response("200", &[], "")).await;
        let mut hook = http_hook(server.port, "/stop");
        if let Some(action) = hook.http_get.as_mut() {
            action.scheme = Some("HTTPS".into());
            action.http_headers = Some(vec![
                HTTPHeader {
                    name: "Authorization".into(),
                    value: "Bearer secret".into(),
                },
                HTTPHeader {
                    name: "X-Kept".into(),
                    value: "1".into(),
                },
            ]);
        }
        let t = target(Some("127.0.0.1"));
        assert_eq!(run_hook(&hook, &t, &scripted(), None).await, Ok(()));
        let head = server.last_request().to_ascii_lowercase();
        assert!(head.starts_with("get /stop http/1.1"), "{head}");
        assert!(head.contains("\r\nx-kept: 1\r\n"), "{head}");
        assert!(!head.contains("authorization"), "{head}");

        let tls = http_server(true, |_, _| response("503", &[], "")).await;
        let mut hook = http_hook(tls.port, "/stop");
        if let Some(action) = hook.http_get.as_mut() {
            action.scheme = Some("HTTPS".into());
        }
        assert_eq!(run_hook(&hook, &t, &scripted(), None).await, Ok(()));
        assert!(tls.last_request().starts_with("GET /stop HTTP/1.1"));
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_hooks_sleep_and_are_cut_at_the_deadline() {
        let sleep = LifecycleHandler {
            sleep: Some(SleepAction { seconds: 5 }),
            ..Default::default()
        };
        let t = target(None);
        let exec = scripted();
        let started = tokio::time::Instant::now();
        assert_eq!(run_hook(&sleep, &t, &exec, None).await, Ok(()));
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        let limit = Duration::from_secs(2);
        assert_eq!(
            run_hook(&sleep, &t, &exec, Some(limit)).await,
            Err(HookError::TimedOut(limit))
        );
        let negative = LifecycleHandler {
            sleep: Some(SleepAction { seconds: -3 }),
            ..Default::default()
        };
        assert_eq!(run_hook(&negative, &t, &exec, None).await, Ok(()));
    }

    #[tokio::test]
    async fn tcp_socket_and_empty_handlers_are_errors() {
        let tcp = LifecycleHandler {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(80),
                host: None,
            }),
            ..Default::default()
        };
        let t = target(None);
        let exec = scripted();
        assert_eq!(
            run_hook(&tcp, &t, &exec, None).await,
            Err(HookError::Failed(
                "Cannot run handler: invalid handler: tcpSocket is not supported as a \
                 lifecycle handler"
                    .into()
            ))
        );
        assert!(matches!(
            run_hook(&LifecycleHandler::default(), &t, &exec, None).await,
            Err(HookError::Failed(m)) if m.starts_with("Cannot run handler: invalid handler")
        ));
        assert_eq!(exec.calls(), 0);
    }
}
