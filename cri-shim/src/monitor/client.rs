//! Async client of a sandbox monitor (JSON lines over `<runDir>/monitor.sock`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::Mutex;

use super::config::SOCKET_FILE;
use super::protocol::{
    ContainerState, CreateContainer, Created, Done, MonitorEvent, Request, Response, Started,
};
use super::MonitorError;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a quick request may take.
const QUICK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long create, start and shutdown may take (they run the executor or a runtime).
const SLOW_TIMEOUT: Duration = Duration::from_secs(120);

struct Connection {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Connection {
    async fn open(socket: &Path) -> Result<Self, MonitorError> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(socket))
            .await
            .map_err(|_| MonitorError::Timeout("connecting"))?
            .map_err(MonitorError::Connection)?;
        let (reader, writer) = stream.into_split();
        Ok(Self {
            reader: BufReader::new(reader),
            writer,
        })
    }

    async fn send(&mut self, request: &Request) -> Result<(), MonitorError> {
        let mut line =
            serde_json::to_vec(request).map_err(|e| MonitorError::Protocol(e.to_string()))?;
        line.push(b'\n');
        self.writer
            .write_all(&line)
            .await
            .map_err(MonitorError::Connection)
    }

    async fn receive<T: DeserializeOwned>(&mut self) -> Result<Option<T>, MonitorError> {
        let mut line = String::new();
        let read = self
            .reader
            .read_line(&mut line)
            .await
            .map_err(MonitorError::Connection)?;
        if read == 0 {
            return Ok(None);
        }
        serde_json::from_str(&line)
            .map(Some)
            .map_err(|e| MonitorError::Protocol(format!("{e}: {}", line.trim_end())))
    }
}

/// A connection to one sandbox's monitor. Requests are serialized on one connection,
/// reopened after an error.
pub struct MonitorClient {
    socket: PathBuf,
    connection: Mutex<Option<Connection>>,
}

impl MonitorClient {
    /// Connect to the monitor of the sandbox whose run directory is `run_dir`.
    pub async fn connect(run_dir: &Path) -> Result<Self, MonitorError> {
        let socket = run_dir.join(SOCKET_FILE);
        let connection = Connection::open(&socket).await?;
        Ok(Self {
            socket,
            connection: Mutex::new(Some(connection)),
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        request: &Request,
        timeout: Duration,
    ) -> Result<T, MonitorError> {
        let mut guard = self.connection.lock().await;
        let mut connection = match guard.take() {
            Some(c) => c,
            None => Connection::open(&self.socket).await?,
        };
        let exchange = async {
            connection.send(request).await?;
            connection.receive::<Response<T>>().await
        };
        let response = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| MonitorError::Timeout("waiting for the monitor's reply"))??;
        // Only a clean exchange leaves the connection usable for the next request.
        *guard = Some(connection);
        match response {
            Some(Response::Ok(value)) => Ok(value),
            Some(Response::Error(message)) => Err(MonitorError::Remote(message)),
            None => {
                *guard = None;
                Err(MonitorError::Connection(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the monitor closed the connection",
                )))
            }
        }
    }

    /// Create a container; returns its init PID (host namespace).
    pub async fn create(&self, container: CreateContainer) -> Result<i32, MonitorError> {
        let created: Created = self.call(&Request::Create(container), SLOW_TIMEOUT).await?;
        Ok(created.pid)
    }

    /// Start a created container; returns when it started (unix nanoseconds).
    pub async fn start(&self, id: &str) -> Result<i64, MonitorError> {
        let started: Started = self
            .call(&Request::Start { id: id.to_owned() }, SLOW_TIMEOUT)
            .await?;
        Ok(started.started_at)
    }

    /// Send `signal` to the container's init process.
    pub async fn signal(&self, id: &str, signal: i32) -> Result<(), MonitorError> {
        let request = Request::Signal {
            id: id.to_owned(),
            signal,
        };
        self.call::<Done>(&request, QUICK_TIMEOUT).await.map(drop)
    }

    /// Drop an exited or never-started container from the monitor.
    pub async fn forget(&self, id: &str) -> Result<(), MonitorError> {
        self.call::<Done>(&Request::Forget { id: id.to_owned() }, SLOW_TIMEOUT)
            .await
            .map(drop)
    }

    /// Reopen the container's log file (after rotation).
    pub async fn reopen_log(&self, id: &str) -> Result<(), MonitorError> {
        self.call::<Done>(&Request::ReopenLog { id: id.to_owned() }, QUICK_TIMEOUT)
            .await
            .map(drop)
    }

    /// The monitor's containers.
    pub async fn list(&self) -> Result<Vec<ContainerState>, MonitorError> {
        self.call(&Request::List, QUICK_TIMEOUT).await
    }

    /// Kill every container, record their exits and stop the monitor.
    pub async fn shutdown(&self) -> Result<(), MonitorError> {
        self.call::<Done>(&Request::Shutdown, SLOW_TIMEOUT)
            .await
            .map(drop)
    }

    /// Turn this client into a stream of container events.
    pub async fn subscribe(self) -> Result<EventStream, MonitorError> {
        self.call::<Done>(&Request::Subscribe, QUICK_TIMEOUT)
            .await?;
        let connection = self
            .connection
            .into_inner()
            .ok_or_else(|| MonitorError::Protocol("subscription lost its connection".into()))?;
        Ok(EventStream { connection })
    }
}

/// Container events from a monitor, in order.
pub struct EventStream {
    connection: Connection,
}

impl EventStream {
    /// The next event; `None` once the monitor closed the connection (it exited).
    pub async fn next(&mut self) -> Option<Result<MonitorEvent, MonitorError>> {
        self.connection.receive::<MonitorEvent>().await.transpose()
    }
}
