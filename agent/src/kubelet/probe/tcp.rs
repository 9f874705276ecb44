//! The tcpSocket handler: a connection opened within the timeout passes.

use std::time::Duration;

use k8s_openapi::api::core::v1::TCPSocketAction;
use tokio::net::TcpStream;

use super::{port, ProbeResult, ProbeTarget};

/// One tcpSocket probe attempt, with Go's `dial tcp addr: ...` failure messages.
pub(super) async fn probe(
    action: &TCPSocketAction,
    target: &ProbeTarget,
    timeout: Duration,
) -> ProbeResult {
    let port = match port::resolve(&action.port, &target.container) {
        Ok(port) => port,
        Err(message) => return ProbeResult::Unknown(message),
    };
    let host = match port::host_or_pod_ip(action.host.as_deref(), target.pod_ip.as_deref()) {
        Ok(host) => host,
        Err(message) => return ProbeResult::Unknown(message),
    };
    let addr = port::join_host_port(&host, port);
    match connect(&addr, timeout).await {
        Ok(()) => ProbeResult::Success,
        Err(message) => ProbeResult::Failure(format!("dial tcp {addr}: {message}")),
    }
}

/// Connects to `addr` (resolving a name) and closes at once.
async fn connect(addr: &str, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(_stream)) => Ok(()),
        Ok(Err(e)) => Err(format!("connect: {e}")),
        Err(_) => Err("i/o timeout".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::probe::test_support::{target, target_with_web_port, FakeExec};
    use crate::kubelet::probe::{run_once, ExecError};
    use k8s_openapi::api::core::v1::Probe;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn tcp_probe(port: IntOrString, host: Option<&str>) -> Probe {
        Probe {
            tcp_socket: Some(TCPSocketAction {
                port,
                host: host.map(str::to_owned),
            }),
            ..Default::default()
        }
    }

    fn no_exec() -> FakeExec {
        FakeExec::new(|_, _, _| Err(ExecError::Failed("unused".into())))
    }

    #[tokio::test]
    async fn a_listening_port_passes_and_a_closed_one_fails() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let t = target_with_web_port("127.0.0.1", port);
        let exec = no_exec();
        assert_eq!(
            run_once(
                &tcp_probe(IntOrString::String("web".into()), None),
                &t,
                &exec
            )
            .await,
            ProbeResult::Success
        );
        assert_eq!(
            run_once(
                &tcp_probe(IntOrString::Int(port.into()), Some("localhost")),
                &target(Some("192.0.2.1")),
                &exec
            )
            .await,
            ProbeResult::Success
        );
        drop(listener);
        match run_once(&tcp_probe(IntOrString::Int(port.into()), None), &t, &exec).await {
            ProbeResult::Failure(m) => {
                assert!(
                    m.starts_with(&format!("dial tcp 127.0.0.1:{port}: connect: ")),
                    "{m}"
                );
                assert!(m.to_ascii_lowercase().contains("refused"), "{m}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn ipv6_pod_ips_are_dialled_in_brackets() {
        let listener = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let probe = tcp_probe(IntOrString::Int(port.into()), None);
        assert_eq!(
            run_once(&probe, &target(Some("::1")), &no_exec()).await,
            ProbeResult::Success
        );
    }

    #[tokio::test]
    async fn an_unreachable_address_fails_at_the_timeout() {
        // TEST-NET-1 is never routed; the SYN goes unanswered (or the route is refused).
        let started = std::time::Instant::now();
        let result = run_once(
            &tcp_probe(IntOrString::Int(80), None),
            &target(Some("192.0.2.1")),
            &no_exec(),
        )
        .await;
        assert!(
            matches!(result, ProbeResult::Failure(ref m) if m.starts_with("dial tcp 192.0.2.1:80: "))
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn bad_ports_are_unknown() {
        let t = target(Some("127.0.0.1"));
        assert_eq!(
            run_once(&tcp_probe(IntOrString::Int(0), None), &t, &no_exec()).await,
            ProbeResult::Unknown("invalid port number: 0".into())
        );
        assert_eq!(
            run_once(
                &tcp_probe(IntOrString::String("x".into()), None),
                &t,
                &no_exec()
            )
            .await,
            ProbeResult::Unknown("port x not found".into())
        );
    }
}
