//! CRI RuntimeService over the runtime's sandboxes and containers. Streaming
//! Exec/Attach/PortForward and checkpointing are not served (the kubelet API serves the
//! streams); the RPCs newer than k8s-cri's proto cannot be reached.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use k8s_cri::v1::*;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use crate::runtime::Runtime;

/// Serves CRI RuntimeService.
pub struct RuntimeApi {
    runtime: Arc<Runtime>,
    network_config: std::sync::Mutex<Option<NetworkConfig>>,
}

impl RuntimeApi {
    /// Serve this runtime.
    pub fn new(runtime: Arc<Runtime>) -> Self {
        Self {
            runtime,
            network_config: std::sync::Mutex::new(None),
        }
    }
}

/// The CRI API version this runtime speaks (kubelet checks it).
const CRI_API_VERSION: &str = "v1";

fn required<T>(value: Option<T>, what: &str) -> Result<T, Status> {
    value.ok_or_else(|| Status::invalid_argument(format!("{what} is required")))
}

fn not_served(what: &str) -> Status {
    Status::unimplemented(format!("capstan CRI: {what} is not served by this runtime"))
}

#[tonic::async_trait]
impl RuntimeService for RuntimeApi {
    async fn version(
        &self,
        _: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: "0.1.0".to_owned(),
            runtime_name: crate::RUNTIME_NAME.to_owned(),
            runtime_version: crate::RUNTIME_VERSION.to_owned(),
            runtime_api_version: CRI_API_VERSION.to_owned(),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<RunPodSandboxRequest>,
    ) -> Result<Response<RunPodSandboxResponse>, Status> {
        let request = request.into_inner();
        let config = required(request.config, "config")?;
        let pod_sandbox_id = self
            .runtime
            .run_pod_sandbox(config, request.runtime_handler)
            .await?;
        Ok(Response::new(RunPodSandboxResponse { pod_sandbox_id }))
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<StopPodSandboxRequest>,
    ) -> Result<Response<StopPodSandboxResponse>, Status> {
        self.runtime
            .stop_pod_sandbox(&request.into_inner().pod_sandbox_id)
            .await?;
        Ok(Response::new(StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<RemovePodSandboxRequest>,
    ) -> Result<Response<RemovePodSandboxResponse>, Status> {
        self.runtime
            .remove_pod_sandbox(&request.into_inner().pod_sandbox_id)
            .await?;
        Ok(Response::new(RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<PodSandboxStatusRequest>,
    ) -> Result<Response<PodSandboxStatusResponse>, Status> {
        let request = request.into_inner();
        let (status, info) = self
            .runtime
            .pod_sandbox_status(&request.pod_sandbox_id, request.verbose)?;
        let containers_statuses = self
            .runtime
            .list_containers(Some(&ContainerFilter {
                pod_sandbox_id: request.pod_sandbox_id.clone(),
                ..Default::default()
            }))
            .into_iter()
            .filter_map(|c| self.runtime.container_status(&c.id, false).ok())
            .map(|(s, _)| s)
            .collect();
        Ok(Response::new(PodSandboxStatusResponse {
            status: Some(status),
            info,
            containers_statuses,
            timestamp: crate::runtime::store::now_nanos(),
        }))
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<ListPodSandboxRequest>,
    ) -> Result<Response<ListPodSandboxResponse>, Status> {
        let items = self
            .runtime
            .list_pod_sandboxes(request.into_inner().filter.as_ref());
        Ok(Response::new(ListPodSandboxResponse { items }))
    }

    async fn create_container(
        &self,
        request: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        let request = request.into_inner();
        let config = required(request.config, "config")?;
        let container_id = self
            .runtime
            .create_container(&request.pod_sandbox_id, config, request.sandbox_config)
            .await?;
        Ok(Response::new(CreateContainerResponse { container_id }))
    }

    async fn start_container(
        &self,
        request: Request<StartContainerRequest>,
    ) -> Result<Response<StartContainerResponse>, Status> {
        self.runtime
            .start_container(&request.into_inner().container_id)
            .await?;
        Ok(Response::new(StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        request: Request<StopContainerRequest>,
    ) -> Result<Response<StopContainerResponse>, Status> {
        let request = request.into_inner();
        self.runtime
            .stop_container(&request.container_id, request.timeout)
            .await?;
        Ok(Response::new(StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        request: Request<RemoveContainerRequest>,
    ) -> Result<Response<RemoveContainerResponse>, Status> {
        self.runtime
            .remove_container(&request.into_inner().container_id)
            .await?;
        Ok(Response::new(RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        request: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        let containers = self
            .runtime
            .list_containers(request.into_inner().filter.as_ref());
        Ok(Response::new(ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        request: Request<ContainerStatusRequest>,
    ) -> Result<Response<ContainerStatusResponse>, Status> {
        let request = request.into_inner();
        let (status, info) = self
            .runtime
            .container_status(&request.container_id, request.verbose)?;
        Ok(Response::new(ContainerStatusResponse {
            status: Some(status),
            info,
        }))
    }

    async fn update_container_resources(
        &self,
        request: Request<UpdateContainerResourcesRequest>,
    ) -> Result<Response<UpdateContainerResourcesResponse>, Status> {
        let request = request.into_inner();
        self.runtime
            .update_container_resources(&request.container_id, request.linux)
            .await?;
        Ok(Response::new(UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        request: Request<ReopenContainerLogRequest>,
    ) -> Result<Response<ReopenContainerLogResponse>, Status> {
        self.runtime
            .reopen_container_log(&request.into_inner().container_id)
            .await?;
        Ok(Response::new(ReopenContainerLogResponse {}))
    }

    async fn exec_sync(
        &self,
        request: Request<ExecSyncRequest>,
    ) -> Result<Response<ExecSyncResponse>, Status> {
        let request = request.into_inner();
        let response = self
            .runtime
            .exec_sync(&request.container_id, request.cmd, request.timeout)
            .await?;
        Ok(Response::new(response))
    }

    async fn exec(&self, _: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        Err(not_served("streaming Exec (use ExecSync)"))
    }

    async fn attach(&self, _: Request<AttachRequest>) -> Result<Response<AttachResponse>, Status> {
        Err(not_served("Attach"))
    }

    async fn port_forward(
        &self,
        _: Request<PortForwardRequest>,
    ) -> Result<Response<PortForwardResponse>, Status> {
        Err(not_served("PortForward"))
    }

    async fn container_stats(
        &self,
        request: Request<ContainerStatsRequest>,
    ) -> Result<Response<ContainerStatsResponse>, Status> {
        let stats = self
            .runtime
            .container_stats(&request.into_inner().container_id)?;
        Ok(Response::new(ContainerStatsResponse { stats: Some(stats) }))
    }

    async fn list_container_stats(
        &self,
        request: Request<ListContainerStatsRequest>,
    ) -> Result<Response<ListContainerStatsResponse>, Status> {
        let stats = self
            .runtime
            .list_container_stats(request.into_inner().filter.as_ref());
        Ok(Response::new(ListContainerStatsResponse { stats }))
    }

    async fn pod_sandbox_stats(
        &self,
        request: Request<PodSandboxStatsRequest>,
    ) -> Result<Response<PodSandboxStatsResponse>, Status> {
        let stats = self
            .runtime
            .pod_sandbox_stats(&request.into_inner().pod_sandbox_id)?;
        Ok(Response::new(PodSandboxStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        request: Request<ListPodSandboxStatsRequest>,
    ) -> Result<Response<ListPodSandboxStatsResponse>, Status> {
        let stats = self
            .runtime
            .list_pod_sandbox_stats(request.into_inner().filter.as_ref());
        Ok(Response::new(ListPodSandboxStatsResponse { stats }))
    }

    async fn update_runtime_config(
        &self,
        request: Request<UpdateRuntimeConfigRequest>,
    ) -> Result<Response<UpdateRuntimeConfigResponse>, Status> {
        // The pod CIDR is the CNI configuration's business; it is kept for Status only.
        let network = request
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config);
        if let Some(network) = network {
            tracing::info!(pod_cidr = %network.pod_cidr, "runtime config updated");
            *self
                .network_config
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(network);
        }
        Ok(Response::new(UpdateRuntimeConfigResponse {}))
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let network = self.runtime.network_ready().await;
        let conditions = vec![
            RuntimeCondition {
                r#type: "RuntimeReady".to_owned(),
                status: true,
                reason: String::new(),
                message: String::new(),
            },
            RuntimeCondition {
                r#type: "NetworkReady".to_owned(),
                status: network.is_ok(),
                reason: if network.is_ok() {
                    String::new()
                } else {
                    "NetworkPluginNotReady".to_owned()
                },
                message: network.err().unwrap_or_default(),
            },
        ];
        let mut info = std::collections::HashMap::new();
        if request.into_inner().verbose {
            let pod_cidr = self
                .network_config
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|n| n.pod_cidr.clone());
            info.insert(
                "config".to_owned(),
                serde_json::json!({
                    "root": self.runtime.config().root,
                    "runRoot": self.runtime.config().run_root,
                    "cni": {
                        "confDir": self.runtime.config().cni.conf_dir,
                        "binDirs": self.runtime.config().cni.bin_dirs,
                    },
                    "podCIDR": pod_cidr,
                })
                .to_string(),
            );
        }
        let handlers = std::iter::once(String::new())
            .chain(self.runtime.config().runtime_handlers.keys().cloned())
            .map(|name| k8s_cri::v1::RuntimeHandler {
                name,
                features: Some(RuntimeHandlerFeatures {
                    recursive_read_only_mounts: false,
                    user_namespaces: false,
                }),
            })
            .collect();
        Ok(Response::new(StatusResponse {
            status: Some(RuntimeStatus { conditions }),
            info,
            runtime_handlers: handlers,
            features: Some(RuntimeFeatures {
                supplemental_groups_policy: false,
            }),
        }))
    }

    type GetContainerEventsStream =
        Pin<Box<dyn Stream<Item = Result<ContainerEventResponse, Status>> + Send + 'static>>;

    async fn get_container_events(
        &self,
        _: Request<GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        let stream = BroadcastStream::new(self.runtime.subscribe_events()).map(move |event| {
            match event {
                Ok(event) => Ok(event),
                // A client too slow to keep up must resync with a List, as with a watch.
                Err(BroadcastStreamRecvError::Lagged(n)) => Err(Status::data_loss(format!(
                    "event stream fell behind by {n} events; list again"
                ))),
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn checkpoint_container(
        &self,
        _: Request<CheckpointContainerRequest>,
    ) -> Result<Response<CheckpointContainerResponse>, Status> {
        Err(not_served("CheckpointContainer"))
    }

    async fn list_metric_descriptors(
        &self,
        _: Request<ListMetricDescriptorsRequest>,
    ) -> Result<Response<ListMetricDescriptorsResponse>, Status> {
        Ok(Response::new(ListMetricDescriptorsResponse {
            descriptors: Vec::new(),
        }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<ListPodSandboxMetricsRequest>,
    ) -> Result<Response<ListPodSandboxMetricsResponse>, Status> {
        Ok(Response::new(ListPodSandboxMetricsResponse {
            pod_metrics: Vec::new(),
        }))
    }

    async fn runtime_config(
        &self,
        _: Request<RuntimeConfigRequest>,
    ) -> Result<Response<RuntimeConfigResponse>, Status> {
        Ok(Response::new(RuntimeConfigResponse {
            linux: Some(LinuxRuntimeConfiguration {
                cgroup_driver: CgroupDriver::Cgroupfs as i32,
            }),
        }))
    }
}
