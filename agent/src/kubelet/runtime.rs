//! The kubelet's only way to the container runtime: CRI v1 over a unix socket.

use std::collections::HashMap;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    AuthConfig, Container, ContainerConfig, ContainerEventResponse, ContainerFilter,
    ContainerStatus, CreateContainerRequest, ExecSyncRequest, GetEventsRequest, ImageSpec,
    ImageStatusRequest, ListContainersRequest, ListPodSandboxRequest, PodSandbox, PodSandboxConfig,
    PodSandboxFilter, PodSandboxStatus, PodSandboxStatusRequest, PullImageRequest,
    RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopContainerRequest, StopPodSandboxRequest,
};
use tonic::transport::{Channel, Endpoint, Uri};

use super::probe::{ContainerExec, ExecError, ExecResult};

/// Largest gRPC message accepted (ListContainers on a busy node).
const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// A failed CRI call, naming the call.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The endpoint is not a unix socket URL.
    #[error("runtime endpoint {0:?} must be unix:///path/to/socket")]
    Endpoint(String),
    /// The socket could not be reached.
    #[error("connecting to CRI runtime at {endpoint}: {source}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// The runtime answered with an error.
    #[error("{call}: {}", .status.message())]
    Call {
        /// The CRI call.
        call: &'static str,
        /// The gRPC status.
        status: tonic::Status,
    },
}

impl RuntimeError {
    /// The gRPC code of a runtime answer (`Unknown` for transport errors).
    pub fn code(&self) -> tonic::Code {
        match self {
            Self::Call { status, .. } => status.code(),
            _ => tonic::Code::Unknown,
        }
    }
}

fn call(call: &'static str) -> impl FnOnce(tonic::Status) -> RuntimeError {
    move |status| RuntimeError::Call { call, status }
}

/// A gRPC channel to the runtime at `endpoint` (`unix:///path` or a bare absolute path).
pub async fn connect_channel(endpoint: &str) -> Result<Channel, RuntimeError> {
    let path = match endpoint.strip_prefix("unix://") {
        Some(path) => path.to_owned(),
        None if endpoint.starts_with('/') => endpoint.to_owned(),
        None => return Err(RuntimeError::Endpoint(endpoint.to_owned())),
    };
    // The URI is required by tonic but unused: every connection goes to the socket.
    let uri = Endpoint::from_static("http://localhost");
    uri.connect_with_connector(tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move {
            tokio::net::UnixStream::connect(path)
                .await
                .map(TokioIo::new)
        }
    }))
    .await
    .map_err(|source| RuntimeError::Connect {
        endpoint: endpoint.to_owned(),
        source,
    })
}

/// CRI RuntimeService and ImageService clients on one channel.
#[derive(Clone)]
pub struct Cri {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

impl Cri {
    /// Connect to the runtime at `endpoint`.
    pub async fn connect(endpoint: &str) -> Result<Self, RuntimeError> {
        let channel = connect_channel(endpoint).await?;
        Ok(Self {
            runtime: RuntimeServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            images: ImageServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES),
        })
    }

    /// Version: the runtime's name and versions (also a readiness check).
    pub async fn version(&self) -> Result<k8s_cri::v1::VersionResponse, RuntimeError> {
        let request = k8s_cri::v1::VersionRequest {
            version: "v1".to_owned(),
        };
        let reply = self.runtime.clone().version(request).await;
        Ok(reply.map_err(call("Version"))?.into_inner())
    }

    /// Status: the runtime's conditions (RuntimeReady, NetworkReady).
    pub async fn status(&self) -> Result<k8s_cri::v1::RuntimeStatus, RuntimeError> {
        let request = k8s_cri::v1::StatusRequest { verbose: false };
        let reply = self.runtime.clone().status(request).await;
        let reply = reply.map_err(call("Status"))?.into_inner();
        Ok(reply.status.unwrap_or_default())
    }

    /// ListImages: every image the runtime holds.
    pub async fn list_images(&self) -> Result<Vec<k8s_cri::v1::Image>, RuntimeError> {
        let request = k8s_cri::v1::ListImagesRequest { filter: None };
        let reply = self.images.clone().list_images(request).await;
        Ok(reply.map_err(call("ListImages"))?.into_inner().images)
    }

    /// RunPodSandbox; returns the sandbox ID.
    pub async fn run_sandbox(
        &self,
        config: PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String, RuntimeError> {
        let request = RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: runtime_handler.to_owned(),
        };
        let reply = self.runtime.clone().run_pod_sandbox(request).await;
        Ok(reply
            .map_err(call("RunPodSandbox"))?
            .into_inner()
            .pod_sandbox_id)
    }

    /// StopPodSandbox (idempotent in every CRI runtime).
    pub async fn stop_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let request = StopPodSandboxRequest {
            pod_sandbox_id: id.to_owned(),
        };
        let reply = self.runtime.clone().stop_pod_sandbox(request).await;
        reply.map_err(call("StopPodSandbox")).map(drop)
    }

    /// RemovePodSandbox.
    pub async fn remove_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let request = RemovePodSandboxRequest {
            pod_sandbox_id: id.to_owned(),
        };
        let reply = self.runtime.clone().remove_pod_sandbox(request).await;
        reply.map_err(call("RemovePodSandbox")).map(drop)
    }

    /// PodSandboxStatus.
    pub async fn sandbox_status(&self, id: &str) -> Result<PodSandboxStatus, RuntimeError> {
        let request = PodSandboxStatusRequest {
            pod_sandbox_id: id.to_owned(),
            verbose: false,
        };
        let reply = self.runtime.clone().pod_sandbox_status(request).await;
        let status = reply.map_err(call("PodSandboxStatus"))?.into_inner().status;
        status.ok_or_else(|| RuntimeError::Call {
            call: "PodSandboxStatus",
            status: tonic::Status::internal("answer carries no status"),
        })
    }

    /// ListPodSandbox with these labels (empty: all).
    pub async fn list_sandboxes(
        &self,
        labels: HashMap<String, String>,
    ) -> Result<Vec<PodSandbox>, RuntimeError> {
        let request = ListPodSandboxRequest {
            filter: Some(PodSandboxFilter {
                label_selector: labels,
                ..Default::default()
            }),
        };
        let reply = self.runtime.clone().list_pod_sandbox(request).await;
        Ok(reply.map_err(call("ListPodSandbox"))?.into_inner().items)
    }

    /// ListContainers with these labels (empty: all).
    pub async fn list_containers(
        &self,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Container>, RuntimeError> {
        let request = ListContainersRequest {
            filter: Some(ContainerFilter {
                label_selector: labels,
                ..Default::default()
            }),
        };
        let reply = self.runtime.clone().list_containers(request).await;
        Ok(reply
            .map_err(call("ListContainers"))?
            .into_inner()
            .containers)
    }

    /// ContainerStatus.
    pub async fn container_status(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        let request = k8s_cri::v1::ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose: false,
        };
        let reply = self.runtime.clone().container_status(request).await;
        let status = reply.map_err(call("ContainerStatus"))?.into_inner().status;
        status.ok_or_else(|| RuntimeError::Call {
            call: "ContainerStatus",
            status: tonic::Status::internal("answer carries no status"),
        })
    }

    /// CreateContainer; returns the container ID.
    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: ContainerConfig,
        sandbox_config: PodSandboxConfig,
    ) -> Result<String, RuntimeError> {
        let request = CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_owned(),
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        };
        let reply = self.runtime.clone().create_container(request).await;
        Ok(reply
            .map_err(call("CreateContainer"))?
            .into_inner()
            .container_id)
    }

    /// StartContainer.
    pub async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        let request = StartContainerRequest {
            container_id: id.to_owned(),
        };
        let reply = self.runtime.clone().start_container(request).await;
        reply.map_err(call("StartContainer")).map(drop)
    }

    /// StopContainer: SIGTERM, then SIGKILL after `timeout`.
    pub async fn stop_container(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        let request = StopContainerRequest {
            container_id: id.to_owned(),
            timeout: whole_seconds(timeout),
        };
        let reply = self.runtime.clone().stop_container(request).await;
        reply.map_err(call("StopContainer")).map(drop)
    }

    /// RemoveContainer.
    pub async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let request = RemoveContainerRequest {
            container_id: id.to_owned(),
        };
        let reply = self.runtime.clone().remove_container(request).await;
        reply.map_err(call("RemoveContainer")).map(drop)
    }

    /// The image when the runtime has it.
    pub async fn image_status(
        &self,
        image: &str,
    ) -> Result<Option<k8s_cri::v1::Image>, RuntimeError> {
        let request = ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.to_owned(),
                ..Default::default()
            }),
            verbose: false,
        };
        let reply = self.images.clone().image_status(request).await;
        Ok(reply.map_err(call("ImageStatus"))?.into_inner().image)
    }

    /// PullImage; returns the image reference the runtime resolved.
    pub async fn pull_image(
        &self,
        image: &str,
        auth: Option<AuthConfig>,
        sandbox_config: PodSandboxConfig,
    ) -> Result<String, RuntimeError> {
        let request = PullImageRequest {
            image: Some(ImageSpec {
                image: image.to_owned(),
                ..Default::default()
            }),
            auth,
            sandbox_config: Some(sandbox_config),
        };
        let reply = self.images.clone().pull_image(request).await;
        Ok(reply.map_err(call("PullImage"))?.into_inner().image_ref)
    }

    /// GetContainerEvents: the runtime's push stream of container lifecycle changes.
    pub async fn container_events(
        &self,
    ) -> Result<tonic::Streaming<ContainerEventResponse>, RuntimeError> {
        let reply = self
            .runtime
            .clone()
            .get_container_events(GetEventsRequest {})
            .await;
        Ok(reply.map_err(call("GetContainerEvents"))?.into_inner())
    }
}

impl ContainerExec for Cri {
    async fn exec_sync(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecResult, ExecError> {
        let request = ExecSyncRequest {
            container_id: container_id.to_owned(),
            cmd,
            timeout: whole_seconds(timeout),
        };
        let reply = self.runtime.clone().exec_sync(request).await;
        let reply = reply.map_err(|status| match status.code() {
            tonic::Code::DeadlineExceeded => ExecError::TimedOut,
            _ => ExecError::Failed(status.message().to_owned()),
        })?;
        let reply = reply.into_inner();
        Ok(ExecResult {
            exit_code: reply.exit_code,
            stdout: reply.stdout,
            stderr: reply.stderr,
        })
    }
}

/// A CRI timeout in whole seconds, rounded up: truncating would shorten a grace period
/// (2.9 s left becoming 2 s) and turn a sub-second exec timeout into 0, which means none.
fn whole_seconds(timeout: Duration) -> i64 {
    let secs = timeout
        .as_secs()
        .saturating_add(u64::from(timeout.subsec_nanos() > 0));
    i64::try_from(secs).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::ZERO), 0);
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(2_990)), 3);
        assert_eq!(whole_seconds(Duration::from_secs(3)), 3);
        assert_eq!(whole_seconds(Duration::MAX), i64::MAX);
    }
}
