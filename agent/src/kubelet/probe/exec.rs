//! The exec handler: a command run in the container through the runtime (CRI ExecSync).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ExecAction;

use super::{expand, ProbeResult, ProbeTarget};

/// The most output of an exec probe the kubelet keeps for the event message.
const MAX_OUTPUT: usize = 10 * 1024;

/// How much longer than the command's own timeout the kubelet's CRI client waits for the
/// runtime to answer (its default runtime request timeout), so a stuck runtime cannot hang
/// a worker forever.
const RUNTIME_GRACE: Duration = Duration::from_secs(120);

/// Runs a command in a container (the agent implements it over CRI ExecSync).
pub trait ContainerExec: Send + Sync + 'static {
    /// Runs `cmd` in `container_id`; `timeout` is passed to the runtime (zero: none). Map a
    /// CRI `DeadlineExceeded` status to [`ExecError::TimedOut`].
    fn exec_sync(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> impl Future<Output = Result<ExecResult, ExecError>> + Send;
}

impl<T: ContainerExec> ContainerExec for Arc<T> {
    fn exec_sync(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> impl Future<Output = Result<ExecResult, ExecError>> + Send {
        self.as_ref().exec_sync(container_id, cmd, timeout)
    }
}

/// What a finished command produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecResult {
    /// The command's exit code (0: success).
    pub exit_code: i32,
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// Its standard error.
    pub stderr: Vec<u8>,
}

/// Why a command did not produce an exit code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// The runtime stopped the command at its timeout.
    #[error("command timed out")]
    TimedOut,
    /// The runtime could not run the command (the message says why).
    #[error("{0}")]
    Failed(String),
}

/// The command with `$(VAR)` expanded from the container's static env.
pub(super) fn command_for(action: &ExecAction, target: &ProbeTarget) -> Vec<String> {
    expand::command(
        action.command.as_deref().unwrap_or(&[]),
        target.container.env.as_deref().unwrap_or(&[]),
    )
}

/// Runs `cmd` with the runtime's deadline backed by the CRI client's own.
pub(super) async fn run<E: ContainerExec>(
    exec: &E,
    container_id: &str,
    cmd: Vec<String>,
    timeout: Duration,
) -> Result<ExecResult, ExecError> {
    let call = exec.exec_sync(container_id, cmd, timeout);
    if timeout.is_zero() {
        return call.await;
    }
    tokio::time::timeout(timeout + RUNTIME_GRACE, call)
        .await
        .unwrap_or(Err(ExecError::TimedOut))
}

/// The `[a b c]` form Go prints a command in.
pub(super) fn go_list(cmd: &[String]) -> String {
    format!("[{}]", cmd.join(" "))
}

/// stdout followed by stderr, as the kubelet's `RunInContainer` returns them.
pub(super) fn combined_output(result: &ExecResult) -> Vec<u8> {
    let mut out = result.stdout.clone();
    out.extend_from_slice(&result.stderr);
    out
}

/// One exec probe attempt: exit 0 passes, another exit code fails with the output as the
/// message, the runtime's timeout fails with `command "..." timed out`.
pub(super) async fn probe<E: ContainerExec>(
    action: &ExecAction,
    target: &ProbeTarget,
    exec: &E,
    timeout: Duration,
) -> ProbeResult {
    let cmd = command_for(action, target);
    let joined = cmd.join(" ");
    match run(exec, &target.container_id, cmd, timeout).await {
        Ok(result) if result.exit_code == 0 => ProbeResult::Success,
        Ok(result) => {
            let mut output = combined_output(&result);
            output.truncate(MAX_OUTPUT);
            ProbeResult::Failure(String::from_utf8_lossy(&output).into_owned())
        }
        Err(ExecError::TimedOut) => ProbeResult::Failure(format!("command {joined:?} timed out")),
        Err(ExecError::Failed(message)) => ProbeResult::Unknown(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::probe::test_support::{target, FakeExec};
    use crate::kubelet::probe::{run_once, ProbeResult};
    use k8s_openapi::api::core::v1::{EnvVar, Probe};

    fn exec_probe(cmd: &[&str], timeout: Option<i32>) -> Probe {
        Probe {
            exec: Some(ExecAction {
                command: Some(cmd.iter().map(|s| s.to_string()).collect()),
            }),
            timeout_seconds: timeout,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn exit_zero_passes_and_other_codes_fail_with_the_output() {
        let exec = FakeExec::new(|_, cmd, _| match cmd[0].as_str() {
            "true" => Ok(ExecResult::default()),
            _ => Ok(ExecResult {
                exit_code: 1,
                stdout: b"out ".to_vec(),
                stderr: b"err".to_vec(),
            }),
        });
        let t = target(None);
        assert_eq!(
            run_once(&exec_probe(&["true"], None), &t, &exec).await,
            ProbeResult::Success
        );
        assert_eq!(
            run_once(&exec_probe(&["false"], None), &t, &exec).await,
            ProbeResult::Failure("out err".into())
        );
    }

    #[tokio::test]
    async fn passes_the_probe_timeout_and_expands_static_env() {
        let exec = FakeExec::new(|id, cmd, timeout| {
            assert_eq!(id, "cid");
            assert_eq!(cmd, ["check", "8080", ""]);
            assert_eq!(timeout, Duration::from_secs(3));
            Ok(ExecResult::default())
        });
        let mut t = target(None);
        t.container.env = Some(vec![
            EnvVar {
                name: "PORT".into(),
                value: Some("8080".into()),
                ..Default::default()
            },
            EnvVar {
                name: "SECRET".into(),
                ..Default::default()
            },
        ]);
        let probe = exec_probe(&["check", "$(PORT)", "$(SECRET)"], Some(3));
        assert_eq!(run_once(&probe, &t, &exec).await, ProbeResult::Success);
        assert_eq!(exec.calls(), 1);
    }

    #[tokio::test]
    async fn a_runtime_timeout_fails_and_a_runtime_error_is_unknown() {
        let exec = FakeExec::new(|_, cmd, _| match cmd[0].as_str() {
            "slow" => Err(ExecError::TimedOut),
            _ => Err(ExecError::Failed("container not running".into())),
        });
        let t = target(None);
        assert_eq!(
            run_once(&exec_probe(&["slow", "arg"], None), &t, &exec).await,
            ProbeResult::Failure("command \"slow arg\" timed out".into())
        );
        assert_eq!(
            run_once(&exec_probe(&["other"], None), &t, &exec).await,
            ProbeResult::Unknown("container not running".into())
        );
    }

    /// A runtime that never answers.
    struct Hang;

    impl ContainerExec for Hang {
        async fn exec_sync(
            &self,
            _: &str,
            _: Vec<String>,
            _: Duration,
        ) -> Result<ExecResult, ExecError> {
            std::future::pending().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_runtime_that_never_answers_times_out_after_the_cri_grace() {
        let started = tokio::time::Instant::now();
        let result = run_once(&exec_probe(&["x"], Some(2)), &target(None), &Hang).await;
        assert_eq!(
            result,
            ProbeResult::Failure("command \"x\" timed out".into())
        );
        assert_eq!(started.elapsed(), Duration::from_secs(2) + RUNTIME_GRACE);
    }

    #[tokio::test]
    async fn output_in_the_message_is_bounded() {
        let exec = FakeExec::new(|_, _, _| {
            Ok(ExecResult {
                exit_code: 2,
                stdout: vec![b'x'; 3 * MAX_OUTPUT],
                stderr: Vec::new(),
            })
        });
        match run_once(&exec_probe(&["x"], None), &target(None), &exec).await {
            ProbeResult::Failure(message) => assert_eq!(message.len(), MAX_OUTPUT),
            other => panic!("unexpected {other:?}"),
        }
    }
}
