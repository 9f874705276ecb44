//! A blocking CRI client that plays kubelet for tests and benchmarks: the RuntimeService
//! and ImageService over a unix socket, on its own current-thread tokio runtime. The same
//! code drives Capstan and containerd.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    Container, ContainerConfig, ContainerEventResponse, ContainerEventType, ContainerFilter,
    ContainerState, ContainerStatus, ContainerStatusRequest, CreateContainerRequest,
    ExecSyncRequest, ExecSyncResponse, GetEventsRequest, ImageSpec, ListContainersRequest,
    ListPodSandboxRequest, PodSandbox, PodSandboxConfig, PodSandboxFilter, PodSandboxStatus,
    PodSandboxStatusRequest, PullImageRequest, RemoveContainerRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest, StopContainerRequest, StopPodSandboxRequest,
    VersionRequest, VersionResponse,
};
use tokio::runtime::Runtime;
use tokio::sync::Notify;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::Code;

use crate::names::unique_name;
use crate::pods::{container_config, PodEnv};

/// Longest any single RPC may take before the driver gives up.
const RPC_TIMEOUT: Duration = Duration::from_secs(120);

/// How long [`CriDriver::wait_running`] waits in [`CriDriver::cycle`].
const RUNNING_TIMEOUT: Duration = Duration::from_secs(30);

/// ContainerStatus polling interval when the runtime has no event stream.
const POLL_INTERVAL: Duration = Duration::from_millis(2);

/// How the driver learns that a container runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// GetContainerEvents (evented PLEG), subscribed at connect.
    Events,
    /// ContainerStatus polling (the runtime answered GetContainerEvents with Unimplemented).
    Polling,
}

/// Container states seen on the event stream, and a wake-up for waiters.
#[derive(Default)]
struct EventLog {
    states: Mutex<HashMap<String, ContainerState>>,
    changed: Notify,
    ended: Mutex<Option<String>>,
    /// Whether the fallback to polling was reported (once is enough).
    fallback_reported: AtomicBool,
}

impl EventLog {
    fn record(&self, event: &ContainerEventResponse) {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        match ContainerEventType::try_from(event.container_event_type) {
            Ok(ContainerEventType::ContainerCreatedEvent) => {
                states.insert(event.container_id.clone(), ContainerState::ContainerCreated);
            }
            Ok(ContainerEventType::ContainerStartedEvent) => {
                states.insert(event.container_id.clone(), ContainerState::ContainerRunning);
            }
            Ok(ContainerEventType::ContainerStoppedEvent) => {
                states.insert(event.container_id.clone(), ContainerState::ContainerExited);
            }
            // Forget deleted containers so the log stays as small as the live set.
            Ok(ContainerEventType::ContainerDeletedEvent) | Err(_) => {
                states.remove(&event.container_id);
            }
        }
        drop(states);
        self.changed.notify_waiters();
    }

    fn state(&self, id: &str) -> Option<ContainerState> {
        self.states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .copied()
    }

    fn end(&self, why: String) {
        *self.ended.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
        self.changed.notify_waiters();
    }

    fn ended(&self) -> Option<String> {
        self.ended.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A blocking CRI client bound to one runtime socket.
pub struct CriDriver {
    rt: Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    socket: PathBuf,
    handler: String,
    events: Option<Arc<EventLog>>,
}

impl CriDriver {
    /// Connect to the CRI socket at `socket` and subscribe to container events if the
    /// runtime serves them.
    pub fn connect(socket: &Path) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the CRI driver's tokio runtime")?;
        let channel = rt
            .block_on(channel(socket.to_path_buf()))
            .with_context(|| format!("connecting to {}", socket.display()))?;
        let mut driver = Self {
            rt,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            socket: socket.to_path_buf(),
            handler: String::new(),
            events: None,
        };
        driver.events = driver.subscribe()?;
        Ok(driver)
    }

    /// Use `handler` as the `runtime_handler` of every sandbox run from now on.
    pub fn with_runtime_handler(mut self, handler: &str) -> Self {
        handler.clone_into(&mut self.handler);
        self
    }

    /// How this driver learns that containers run.
    pub fn watch(&self) -> Watch {
        if self.events.is_some() {
            Watch::Events
        } else {
            Watch::Polling
        }
    }

    /// The socket the driver talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn subscribe(&self) -> Result<Option<Arc<EventLog>>> {
        let mut client = self.runtime.clone();
        let stream =
            self.block(async move { client.get_container_events(GetEventsRequest {}).await });
        let mut stream = match stream {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == Code::Unimplemented => return Ok(None),
            Err(status) => return Err(status).context("GetContainerEvents"),
        };
        let log = Arc::new(EventLog::default());
        let feed = Arc::clone(&log);
        // Runs whenever the driver blocks on an RPC, so the stream is drained as it fills.
        self.rt.spawn(async move {
            loop {
                match stream.message().await {
                    Ok(Some(event)) => feed.record(&event),
                    Ok(None) => return feed.end("the runtime ended the event stream".to_owned()),
                    Err(status) => return feed.end(format!("event stream failed: {status}")),
                }
            }
        });
        Ok(Some(log))
    }

    fn block<F: Future>(&self, future: F) -> F::Output {
        self.rt.block_on(future)
    }

    /// Run one RPC with [`RPC_TIMEOUT`], naming it in errors.
    fn call<T, F>(&self, what: &str, future: F) -> Result<T>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        match self.block(async { tokio::time::timeout(RPC_TIMEOUT, future).await }) {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => bail!("{what}: {} ({:?})", status.message(), status.code()),
            Err(_) => bail!("{what}: no answer within {RPC_TIMEOUT:?}"),
        }
    }

    /// Version.
    pub fn version(&self) -> Result<VersionResponse> {
        let mut c = self.runtime.clone();
        self.call("Version", async move {
            c.version(VersionRequest::default()).await
        })
    }

    /// PullImage; returns the image reference the runtime reports.
    pub fn pull_image(&self, image: &str) -> Result<String> {
        let mut c = self.images.clone();
        let request = PullImageRequest {
            image: Some(image_spec(image)),
            ..Default::default()
        };
        let response = self.call(&format!("PullImage {image}"), async move {
            c.pull_image(request).await
        })?;
        Ok(response.image_ref)
    }

    /// RunPodSandbox; returns the sandbox id.
    pub fn run_sandbox(&self, config: &PodSandboxConfig) -> Result<String> {
        let mut c = self.runtime.clone();
        let request = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: self.handler.clone(),
        };
        let response = self.call(
            "RunPodSandbox",
            async move { c.run_pod_sandbox(request).await },
        )?;
        Ok(response.pod_sandbox_id)
    }

    /// PodSandboxStatus (not verbose).
    pub fn sandbox_status(&self, id: &str) -> Result<PodSandboxStatus> {
        let mut c = self.runtime.clone();
        let request = PodSandboxStatusRequest {
            pod_sandbox_id: id.to_owned(),
            verbose: false,
        };
        self.call("PodSandboxStatus", async move {
            c.pod_sandbox_status(request).await
        })?
        .status
        .context("PodSandboxStatus without a status")
    }

    /// The sandbox's primary IP (empty for host-network pods).
    pub fn sandbox_ip(&self, id: &str) -> Result<String> {
        Ok(self
            .sandbox_status(id)?
            .network
            .map(|n| n.ip)
            .unwrap_or_default())
    }

    /// CreateContainer in `sandbox_id`; creates the container's log directory first, as kubelet does.
    pub fn create_container(
        &self,
        sandbox_id: &str,
        config: &ContainerConfig,
        sandbox_config: &PodSandboxConfig,
    ) -> Result<String> {
        if !sandbox_config.log_directory.is_empty() && !config.log_path.is_empty() {
            let log = Path::new(&sandbox_config.log_directory).join(&config.log_path);
            if let Some(dir) = log.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
        }
        let mut c = self.runtime.clone();
        let request = CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_owned(),
            config: Some(config.clone()),
            sandbox_config: Some(sandbox_config.clone()),
        };
        let response = self.call("CreateContainer", async move {
            c.create_container(request).await
        })?;
        Ok(response.container_id)
    }

    /// StartContainer.
    pub fn start_container(&self, id: &str) -> Result<()> {
        let mut c = self.runtime.clone();
        let request = StartContainerRequest {
            container_id: id.to_owned(),
        };
        self.call(
            "StartContainer",
            async move { c.start_container(request).await },
        )?;
        Ok(())
    }

    /// Wait until container `id` is RUNNING: on the event stream when the runtime has
    /// one, else by polling ContainerStatus. Fails if it exits first.
    pub fn wait_running(&self, id: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        if let Some(log) = &self.events {
            let outcome = self.block(wait_event(log, id, deadline));
            match outcome {
                Ok(true) => return Ok(()),
                Ok(false) => bail!(
                    "container {id} exited instead of running: {}",
                    self.describe(id)
                ),
                // The stream broke (a runtime restart, say): poll rather than fail the wait.
                Err(why) => {
                    if !log.fallback_reported.swap(true, Ordering::Relaxed) {
                        eprintln!("cri driver: {why}; polling container status from now on");
                    }
                }
            }
        }
        loop {
            let status = self.container_status(id)?;
            match ContainerState::try_from(status.state) {
                Ok(ContainerState::ContainerRunning) => return Ok(()),
                Ok(ContainerState::ContainerExited) => bail!(
                    "container {id} exited (code {}, {} {}) instead of running",
                    status.exit_code,
                    status.reason,
                    status.message
                ),
                _ => {}
            }
            if Instant::now() > deadline {
                bail!(
                    "container {id} not running after {timeout:?}: state {}",
                    status.state
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn describe(&self, id: &str) -> String {
        match self.container_status(id) {
            Ok(s) => format!("exit code {}, {} {}", s.exit_code, s.reason, s.message),
            Err(e) => format!("{e:#}"),
        }
    }

    /// ContainerStatus (not verbose).
    pub fn container_status(&self, id: &str) -> Result<ContainerStatus> {
        Ok(self.container_status_verbose(id, false)?.0)
    }

    /// ContainerStatus with the runtime's `info` map (verbose).
    pub fn container_status_verbose(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<(ContainerStatus, HashMap<String, String>)> {
        let mut c = self.runtime.clone();
        let request = ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose,
        };
        let response = self.call("ContainerStatus", async move {
            c.container_status(request).await
        })?;
        let status = response
            .status
            .context("ContainerStatus without a status")?;
        Ok((status, response.info))
    }

    /// The host pid of container `id`'s process, from the verbose `info` of runtimes that
    /// report it (containerd: `info.pid`).
    pub fn container_pid(&self, id: &str) -> Result<Option<i32>> {
        let (_, info) = self.container_status_verbose(id, true)?;
        Ok(info
            .get("info")
            .and_then(|json| serde_json::from_str::<serde_json::Value>(json).ok())
            .and_then(|info| info.get("pid")?.as_i64())
            .and_then(|pid| i32::try_from(pid).ok())
            .filter(|&pid| pid > 0))
    }

    /// StopContainer, with `timeout` seconds of grace (0: kill at once).
    pub fn stop_container(&self, id: &str, timeout: i64) -> Result<()> {
        let mut c = self.runtime.clone();
        let request = StopContainerRequest {
            container_id: id.to_owned(),
            timeout,
        };
        self.call(
            "StopContainer",
            async move { c.stop_container(request).await },
        )?;
        Ok(())
    }

    /// RemoveContainer.
    pub fn remove_container(&self, id: &str) -> Result<()> {
        let mut c = self.runtime.clone();
        let request = RemoveContainerRequest {
            container_id: id.to_owned(),
        };
        self.call("RemoveContainer", async move {
            c.remove_container(request).await
        })?;
        Ok(())
    }

    /// StopPodSandbox.
    pub fn stop_sandbox(&self, id: &str) -> Result<()> {
        let mut c = self.runtime.clone();
        let request = StopPodSandboxRequest {
            pod_sandbox_id: id.to_owned(),
        };
        self.call("StopPodSandbox", async move {
            c.stop_pod_sandbox(request).await
        })?;
        Ok(())
    }

    /// RemovePodSandbox.
    pub fn remove_sandbox(&self, id: &str) -> Result<()> {
        let mut c = self.runtime.clone();
        let request = RemovePodSandboxRequest {
            pod_sandbox_id: id.to_owned(),
        };
        self.call("RemovePodSandbox", async move {
            c.remove_pod_sandbox(request).await
        })?;
        Ok(())
    }

    /// ExecSync of `cmd` in container `id`, with `timeout` seconds (0: none).
    pub fn exec_sync(&self, id: &str, cmd: &[&str], timeout: i64) -> Result<ExecSyncResponse> {
        let mut c = self.runtime.clone();
        let request = ExecSyncRequest {
            container_id: id.to_owned(),
            cmd: cmd.iter().map(|&s| s.to_owned()).collect(),
            timeout,
        };
        self.call("ExecSync", async move { c.exec_sync(request).await })
    }

    /// ListPodSandbox, optionally only those carrying label `key=value`.
    pub fn list_sandboxes(&self, label: Option<(&str, &str)>) -> Result<Vec<PodSandbox>> {
        let mut c = self.runtime.clone();
        let filter = label.map(|(k, v)| PodSandboxFilter {
            label_selector: HashMap::from([(k.to_owned(), v.to_owned())]),
            ..Default::default()
        });
        let response = self.call("ListPodSandbox", async move {
            c.list_pod_sandbox(ListPodSandboxRequest { filter }).await
        })?;
        Ok(response.items)
    }

    /// ListContainers, optionally of one sandbox.
    pub fn list_containers(&self, sandbox_id: Option<&str>) -> Result<Vec<Container>> {
        let mut c = self.runtime.clone();
        let filter = sandbox_id.map(|id| ContainerFilter {
            pod_sandbox_id: id.to_owned(),
            ..Default::default()
        });
        let response = self.call("ListContainers", async move {
            c.list_containers(ListContainersRequest { filter }).await
        })?;
        Ok(response.containers)
    }

    /// Stop and remove a sandbox and the given containers in it (containers killed at once).
    /// Every step runs even if an earlier one fails; the first error is returned.
    pub fn teardown(&self, sandbox_id: &str, containers: &[String]) -> Result<()> {
        let mut first: Option<anyhow::Error> = None;
        let mut note = |r: Result<()>| {
            if let Err(e) = r {
                first.get_or_insert(e);
            }
        };
        for id in containers {
            note(self.stop_container(id, 0));
            note(self.remove_container(id));
        }
        note(self.stop_sandbox(sandbox_id));
        note(self.remove_sandbox(sandbox_id));
        first.map_or(Ok(()), Err)
    }

    /// Start a pod running one container of `image` with `command`; returns the sandbox
    /// and container ids once the container runs. A failed start is torn down.
    pub fn start_pod(
        &self,
        env: &PodEnv,
        name: &str,
        image: &str,
        command: &[&str],
    ) -> Result<(String, String)> {
        let sandbox = env.sandbox_config(name, "capstan-test", &unique_name("uid"))?;
        let container = container_config("main", image, command);
        let pod = self.run_sandbox(&sandbox)?;
        let mut created = Vec::new();
        let started: Result<String> = (|| {
            let id = self.create_container(&pod, &container, &sandbox)?;
            created.push(id.clone());
            self.start_container(&id)?;
            self.wait_running(&id, RUNNING_TIMEOUT)?;
            Ok(id)
        })();
        match started {
            Ok(id) => Ok((pod, id)),
            Err(e) => {
                let _ = self.teardown(&pod, &created);
                Err(e)
            }
        }
    }

    /// One pod start as kubelet does it: RunPodSandbox, CreateContainer, StartContainer and
    /// the wait until it runs, timed; then stop and remove both, untimed.
    pub fn cycle(&self, env: &PodEnv, image: &str) -> Result<Duration> {
        let sandbox =
            env.sandbox_config(&unique_name("cycle"), "capstan-test", &unique_name("uid"))?;
        let container = container_config("main", image, &["sleep", "3600"]);
        let began = Instant::now();
        let pod = self.run_sandbox(&sandbox)?;
        let mut created = Vec::new();
        let timed: Result<Duration> = (|| {
            let id = self.create_container(&pod, &container, &sandbox)?;
            created.push(id.clone());
            self.start_container(&id)?;
            self.wait_running(&id, RUNNING_TIMEOUT)?;
            Ok(began.elapsed())
        })();
        let torn = self.teardown(&pod, &created);
        let elapsed = timed?;
        torn.context("tearing down the cycle's pod")?;
        Ok(elapsed)
    }
}

/// Wait for `id` to be reported running (`true`) or exited (`false`); `Err` when the
/// stream ended or the deadline passed.
async fn wait_event(log: &EventLog, id: &str, deadline: Instant) -> Result<bool, String> {
    loop {
        let changed = log.changed.notified();
        tokio::pin!(changed);
        // Registered before the check, so an event recorded in between still wakes us.
        changed.as_mut().enable();
        match log.state(id) {
            Some(ContainerState::ContainerRunning) => return Ok(true),
            Some(ContainerState::ContainerExited) => return Ok(false),
            _ => {}
        }
        if let Some(why) = log.ended() {
            return Err(why);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, changed).await.is_err() {
            return Err(format!("no start event for container {id}"));
        }
    }
}

fn image_spec(image: &str) -> ImageSpec {
    ImageSpec {
        image: image.to_owned(),
        user_specified_image: image.to_owned(),
        ..Default::default()
    }
}

/// A gRPC channel over the unix socket (HTTP/2 needs some authority; it is not used).
async fn channel(socket: PathBuf) -> Result<Channel> {
    Ok(Endpoint::try_from("http://localhost")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                tokio::net::UnixStream::connect(socket)
                    .await
                    .map(TokioIo::new)
            }
        }))
        .await?)
}
