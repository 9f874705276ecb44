//! The grpc handler: `grpc.health.v1.Health/Check` on the pod IP, plaintext, SERVING passes.

use std::time::Duration;

use k8s_openapi::api::core::v1::GRPCAction;
use tonic::transport::Endpoint;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::{port, ProbeResult, ProbeTarget, KUBE_VERSION};

/// One grpc probe attempt with the kubelet's messages; `timeout` bounds connect plus RPC.
pub(super) async fn probe(
    action: &GRPCAction,
    target: &ProbeTarget,
    timeout: Duration,
) -> ProbeResult {
    let port = match port::checked(action.port.into()) {
        Ok(port) => port,
        Err(message) => return ProbeResult::Unknown(message),
    };
    let host = match port::host_or_pod_ip(None, target.pod_ip.as_deref()) {
        Ok(host) => host,
        Err(message) => return ProbeResult::Unknown(message),
    };
    let addr = port::join_host_port(&host, port);
    let service = action.service.clone().unwrap_or_default();
    let deadline = tokio::time::Instant::now() + timeout;
    let within = go_duration(timeout);

    let endpoint = match Endpoint::from_shared(format!("http://{addr}"))
        .and_then(|e| e.user_agent(format!("kube-probe/{KUBE_VERSION}")))
    {
        Ok(endpoint) => endpoint.connect_timeout(timeout),
        Err(e) => {
            return ProbeResult::Failure(format!(
                "error: failed to connect service at \"{addr}\": {}",
                causes(&e)
            ))
        }
    };
    let channel = match tokio::time::timeout_at(deadline, endpoint.connect()).await {
        Ok(Ok(channel)) => channel,
        Ok(Err(e)) if !is_timeout(&e) => {
            return ProbeResult::Failure(format!(
                "error: failed to connect service at \"{addr}\": {}",
                causes(&e)
            ))
        }
        _ => {
            return ProbeResult::Failure(format!(
                "timeout: failed to connect service \"{addr}\" within {within}: \
                 context deadline exceeded"
            ))
        }
    };
    let mut client = HealthClient::new(channel);
    let check = client.check(HealthCheckRequest { service });
    let response = match tokio::time::timeout_at(deadline, check).await {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(status)) => return ProbeResult::Failure(rpc_error(&status, &within)),
        Err(_) => {
            return ProbeResult::Failure(format!(
                "timeout: health rpc did not complete within {within}"
            ))
        }
    };
    match ServingStatus::try_from(response.status) {
        Ok(ServingStatus::Serving) => ProbeResult::Success,
        Ok(other) => ProbeResult::Failure(format!(
            "service unhealthy (responded with \"{}\")",
            other.as_str_name()
        )),
        Err(_) => ProbeResult::Failure(format!(
            "service unhealthy (responded with \"{}\")",
            response.status
        )),
    }
}

/// The kubelet's message for a failed Check call.
fn rpc_error(status: &tonic::Status, within: &str) -> String {
    match status.code() {
        tonic::Code::Unimplemented => format!(
            "error: this server does not implement the grpc health protocol \
             (grpc.health.v1.Health): {}",
            status.message()
        ),
        tonic::Code::DeadlineExceeded => {
            format!("timeout: health rpc did not complete within {within}")
        }
        code => format!(
            "error: health rpc probe failed: rpc error: code = {code:?} desc = {}",
            status.message()
        ),
    }
}

/// Whether a connect error is the connect timeout elapsing.
fn is_timeout(error: &tonic::transport::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.to_string().contains("timed out") {
            return true;
        }
        source = e.source();
    }
    false
}

/// The error and its causes joined with ": ".
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        parts.push(e.to_string());
        source = e.source();
    }
    parts.join(": ")
}

/// Whole seconds the way Go prints a `time.Duration` ("1s", "1m30s").
fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs / 3600, secs / 60 % 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::probe::test_support::{target, FakeExec};
    use crate::kubelet::probe::{run_once, ExecError};
    use k8s_openapi::api::core::v1::Probe;
    use tokio_stream::wrappers::TcpListenerStream;

    fn grpc_probe(port: i32, service: Option<&str>) -> Probe {
        Probe {
            grpc: Some(GRPCAction {
                port,
                service: service.map(str::to_owned),
            }),
            ..Default::default()
        }
    }

    fn no_exec() -> FakeExec {
        FakeExec::new(|_, _, _| Err(ExecError::Failed("unused".into())))
    }

    #[tokio::test]
    async fn follows_the_health_servers_status() {
        let (reporter, service) = tonic_health::server::health_reporter();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = i32::from(listener.local_addr().unwrap().port());
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        let t = target(Some("127.0.0.1"));
        let exec = no_exec();
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        reporter
            .set_service_status("db", tonic_health::ServingStatus::NotServing)
            .await;
        assert_eq!(
            run_once(&grpc_probe(port, None), &t, &exec).await,
            ProbeResult::Success
        );
        assert_eq!(
            run_once(&grpc_probe(port, Some("db")), &t, &exec).await,
            ProbeResult::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
        reporter
            .set_service_status("db", tonic_health::ServingStatus::Serving)
            .await;
        assert_eq!(
            run_once(&grpc_probe(port, Some("db")), &t, &exec).await,
            ProbeResult::Success
        );
        match run_once(&grpc_probe(port, Some("other")), &t, &exec).await {
            ProbeResult::Failure(m) => assert!(
                m.starts_with("error: health rpc probe failed: rpc error: code = NotFound"),
                "{m}"
            ),
            other => panic!("unexpected {other:?}"),
        }
        server.abort();
    }

    #[tokio::test]
    async fn a_server_without_the_health_service_is_unimplemented() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = i32::from(listener.local_addr().unwrap().port());
        // A gRPC server with no services answers every method Unimplemented.
        let router =
            tonic::transport::Server::builder().add_routes(tonic::service::Routes::default());
        let server = tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
        match run_once(
            &grpc_probe(port, None),
            &target(Some("127.0.0.1")),
            &no_exec(),
        )
        .await
        {
            ProbeResult::Failure(m) => assert!(
                m.starts_with("error: this server does not implement the grpc health protocol"),
                "{m}"
            ),
            other => panic!("unexpected {other:?}"),
        }
        server.abort();
    }

    #[tokio::test]
    async fn a_closed_port_fails_and_bad_ports_are_unknown() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = i32::from(listener.local_addr().unwrap().port());
        drop(listener);
        let t = target(Some("127.0.0.1"));
        match run_once(&grpc_probe(port, None), &t, &no_exec()).await {
            ProbeResult::Failure(m) => assert!(
                m.starts_with(&format!(
                    "error: failed to connect service at \"127.0.0.1:{port}\": "
                )),
                "{m}"
            ),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            run_once(&grpc_probe(0, None), &t, &no_exec()).await,
            ProbeResult::Unknown("invalid port number: 0".into())
        );
        assert_eq!(
            run_once(&grpc_probe(65536, None), &t, &no_exec()).await,
            ProbeResult::Unknown("invalid port number: 65536".into())
        );
    }

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(Duration::from_secs(1)), "1s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
    }
}
