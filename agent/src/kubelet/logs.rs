//! Reading CRI-format container log files (`<RFC3339Nano> stdout|stderr F|P <content>`):
//! choosing the file, tail, follow (inotify) across rotation, timestamps and stream filter.
//!
//! Partial records (`P`) are joined with the following chunks of the same stream until an
//! `F`, so a consumer sees whole lines; a joined line longer than [`MAX_LINE`] is cut there.
//! Malformed records are skipped and counted, never fatal.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use serde::{Deserialize, Serialize};
use tokio::fs::File;
use tokio::io::{AsyncBufReadExt, AsyncSeekExt, BufReader};
use tokio::sync::{mpsc, Notify};

/// Longest logical line emitted; longer joined lines are split (bounds memory on hostile output).
pub const MAX_LINE: usize = 1 << 20;
/// A raw record longer than this is malformed (the runtime splits lines into far smaller chunks).
const MAX_RECORD: usize = 2 << 20;
/// Output is sent in chunks of about this size.
const CHUNK: usize = 64 << 10;
/// Re-check interval when inotify is unavailable.
const POLL_FALLBACK: Duration = Duration::from_millis(250);

/// Which of the container's streams to return (values as in core/v1 PodLogOptions `stream`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamFilter {
    /// Only stdout.
    Stdout,
    /// Only stderr.
    Stderr,
    /// Both, in file order.
    #[default]
    All,
}

/// How to read a log.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// Only the last N lines (of the selected streams).
    pub tail: Option<u64>,
    /// Keep reading as the file grows until `stop` resolves.
    pub follow: bool,
    /// Prefix each line with its timestamp and a space.
    pub timestamps: bool,
    /// Which streams.
    pub stream: StreamFilter,
}

/// Why a log cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    /// No log of an earlier instance of the container exists.
    #[error("no previous log in {}", dir.display())]
    NoPrevious {
        /// The container's log directory.
        dir: PathBuf,
    },
    /// The log file (or directory) cannot be opened or listed.
    #[error("opening log {}", path.display())]
    Open {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl LogsError {
    /// True when the file or directory does not exist (as opposed to failing to read).
    pub fn is_not_found(&self) -> bool {
        match self {
            LogsError::NoPrevious { .. } => true,
            LogsError::Open { source, .. } => source.kind() == io::ErrorKind::NotFound,
        }
    }
}

/// The log file to read in a container's log directory: `<restart_count>.log`, or with
/// `previous` the highest-numbered `N.log` other than the current one (rotated
/// `N.log.<timestamp>` files are never chosen).
pub fn log_file(dir: &Path, restart_count: u32, previous: bool) -> Result<PathBuf, LogsError> {
    if !previous {
        return Ok(dir.join(format!("{restart_count}.log")));
    }
    let entries = std::fs::read_dir(dir).map_err(|source| LogsError::Open {
        path: dir.to_path_buf(),
        source,
    })?;
    entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name();
            let number = name.to_str()?.strip_suffix(".log")?;
            if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            number.parse::<u32>().ok()
        })
        .filter(|n| *n != restart_count)
        .max()
        .map(|n| dir.join(format!("{n}.log")))
        .ok_or_else(|| LogsError::NoPrevious {
            dir: dir.to_path_buf(),
        })
}

/// Open `path` and stream its lines as `opts` says; with `follow`, keep going until `stop`
/// resolves (then read what is left and end). The file is opened before this returns, so a
/// missing log is an error here rather than in the stream.
pub async fn read_log(
    path: &Path,
    opts: &LogOptions,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<LogStream, LogsError> {
    let file = File::open(path).await.map_err(|source| LogsError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let malformed = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::channel(8);
    let reader = Reader {
        path: path.to_path_buf(),
        follow: opts.follow,
        input: Input::new(file),
        decoder: Decoder::new(opts.stream, opts.timestamps, malformed.clone()),
        sink: Sink {
            tx,
            out: Vec::new(),
            ring: opts.tail.map(|n| (VecDeque::new(), n)),
        },
    };
    tokio::spawn(reader.run(stop));
    Ok(LogStream { rx, malformed })
}

/// The lines of a log as a byte stream; ends at EOF, or when following stops.
#[derive(Debug)]
pub struct LogStream {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    malformed: Arc<AtomicU64>,
}

impl LogStream {
    /// How many malformed records were skipped so far.
    pub fn malformed_lines(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }
}

impl Stream for LogStream {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// The open file and the bytes of a record not yet terminated by a newline.
struct Input {
    reader: BufReader<File>,
    carry: Vec<u8>,
    /// Skipping the rest of an oversized record.
    discarding: bool,
    /// Bytes consumed from the file, to notice truncation.
    position: u64,
}

impl Input {
    fn new(file: File) -> Self {
        Input {
            reader: BufReader::with_capacity(CHUNK, file),
            carry: Vec::new(),
            discarding: false,
            position: 0,
        }
    }
}

/// Where decoded lines go: the tail ring until the first EOF, then the output buffer.
struct Sink {
    tx: mpsc::Sender<io::Result<Bytes>>,
    out: Vec<u8>,
    ring: Option<(VecDeque<Vec<u8>>, u64)>,
}

impl Sink {
    fn push(&mut self, line: Vec<u8>) {
        match &mut self.ring {
            Some((ring, limit)) => {
                if *limit == 0 {
                    return;
                }
                if ring.len() as u64 >= *limit {
                    ring.pop_front();
                }
                ring.push_back(line);
            }
            None => self.out.extend_from_slice(&line),
        }
    }

    /// The tail is complete: release it into the output.
    fn end_tail(&mut self) {
        if let Some((ring, _)) = self.ring.take() {
            for line in ring {
                self.out.extend_from_slice(&line);
            }
        }
    }

    /// Send what is buffered; false when the consumer has gone away.
    async fn flush(&mut self) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let chunk = Bytes::from(std::mem::take(&mut self.out));
        self.tx.send(Ok(chunk)).await.is_ok()
    }
}

/// The task behind a [`LogStream`].
struct Reader {
    path: PathBuf,
    follow: bool,
    input: Input,
    decoder: Decoder,
    sink: Sink,
}

impl Reader {
    async fn run(mut self, stop: impl Future<Output = ()>) {
        if let Err(error) = self.read(stop).await {
            let _ = self.sink.tx.send(Err(error)).await;
        }
    }

    async fn read(&mut self, stop: impl Future<Output = ()>) -> io::Result<()> {
        if !self.follow {
            if self.drain().await? {
                self.finish().await;
            }
            return Ok(());
        }
        // Watch before the first read so no write between reading and waiting goes unseen.
        let wake = Wake::new(&self.path);
        let mut stop = pin!(stop);
        let mut stopping = false;
        loop {
            if !self.drain().await? {
                return Ok(());
            }
            self.sink.end_tail();
            if !self.sink.flush().await {
                return Ok(());
            }
            if stopping {
                self.finish().await;
                return Ok(());
            }
            if self.reopen_if_rotated().await? {
                continue;
            }
            tokio::select! {
                _ = wake.wait() => {}
                _ = &mut stop => stopping = true,
                _ = self.sink.tx.closed() => return Ok(()),
            }
        }
    }

    /// Decode every complete record up to EOF; false when the consumer has gone away.
    async fn drain(&mut self) -> io::Result<bool> {
        loop {
            let chunk = self.input.reader.fill_buf().await?;
            if chunk.is_empty() {
                return Ok(true);
            }
            let (taken, end_of_record) = match chunk.iter().position(|b| *b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            if !self.input.discarding {
                let record = if end_of_record {
                    &chunk[..taken - 1]
                } else {
                    chunk
                };
                self.input.carry.extend_from_slice(record);
            }
            self.input.reader.consume(taken);
            self.input.position += taken as u64;
            if self.input.carry.len() > MAX_RECORD {
                self.input.carry = Vec::new();
                self.input.discarding = true;
                self.decoder.malformed.fetch_add(1, Ordering::Relaxed);
            }
            if end_of_record {
                if !self.input.discarding {
                    let record = std::mem::take(&mut self.input.carry);
                    self.decoder.record(&record, &mut self.sink);
                }
                self.input.discarding = false;
            }
            if self.sink.out.len() >= CHUNK && !self.sink.flush().await {
                return Ok(false);
            }
        }
    }

    /// No more input: decode an unterminated last record, release joined partials, send all.
    async fn finish(&mut self) {
        if !self.input.discarding && !self.input.carry.is_empty() {
            let record = std::mem::take(&mut self.input.carry);
            self.decoder.record(&record, &mut self.sink);
        }
        self.decoder.finish(&mut self.sink);
        self.sink.end_tail();
        self.sink.flush().await;
    }

    /// Follow the path when the runtime rotated (new inode) or truncated the file; true if
    /// the input changed.
    async fn reopen_if_rotated(&mut self) -> io::Result<bool> {
        let current = match tokio::fs::metadata(&self.path).await {
            Ok(meta) => meta,
            // Rotated away and not yet recreated: keep waiting for it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let open = self.input.reader.get_ref().metadata().await?;
        if current.ino() != open.ino() || current.dev() != open.dev() {
            // Lines written to the old file between the last drain and its rotation.
            if !self.drain().await? {
                return Ok(false);
            }
            let file = File::open(&self.path).await?;
            self.input = Input::new(file);
            return Ok(true);
        }
        if current.len() < self.input.position {
            self.input.reader.seek(io::SeekFrom::Start(0)).await?;
            self.input.carry.clear();
            self.input.discarding = false;
            self.input.position = 0;
            return Ok(true);
        }
        Ok(false)
    }
}

/// Wakes the follower when the log directory changes (inotify), or on a timer as a fallback.
enum Wake {
    Inotify {
        notify: Arc<Notify>,
        _watcher: RecommendedWatcher,
    },
    Poll,
}

impl Wake {
    fn new(path: &Path) -> Self {
        let notify = Arc::new(Notify::new());
        let signal = notify.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Our own reads are access events: waking on them would spin.
            if event.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
                signal.notify_one();
            }
        });
        // The directory, not the file: rotation replaces the file.
        let dir = path.parent().unwrap_or(Path::new("."));
        match watcher.and_then(|mut w| w.watch(dir, RecursiveMode::NonRecursive).map(|()| w)) {
            Ok(watcher) => Wake::Inotify {
                notify,
                _watcher: watcher,
            },
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot watch log, polling instead");
                Wake::Poll
            }
        }
    }

    async fn wait(&self) {
        match self {
            Wake::Inotify { notify, .. } => notify.notified().await,
            Wake::Poll => tokio::time::sleep(POLL_FALLBACK).await,
        }
    }
}

/// Which stream a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Stdout = 0,
    Stderr = 1,
}

/// A line being joined from partial records.
#[derive(Debug)]
struct Pending {
    timestamp: Vec<u8>,
    content: Vec<u8>,
}

/// Turns records into output lines: filter, join partials per stream, prefix timestamps.
struct Decoder {
    filter: StreamFilter,
    timestamps: bool,
    pending: [Option<Pending>; 2],
    malformed: Arc<AtomicU64>,
}

impl Decoder {
    fn new(filter: StreamFilter, timestamps: bool, malformed: Arc<AtomicU64>) -> Self {
        Decoder {
            filter,
            timestamps,
            pending: [None, None],
            malformed,
        }
    }

    /// Decode one record (without its newline).
    fn record(&mut self, record: &[u8], sink: &mut Sink) {
        let Some((timestamp, stream, partial, content)) = parse_record(record) else {
            self.malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let wanted = match self.filter {
            StreamFilter::All => true,
            StreamFilter::Stdout => stream == Source::Stdout,
            StreamFilter::Stderr => stream == Source::Stderr,
        };
        if !wanted {
            return;
        }
        let slot = &mut self.pending[stream as usize];
        let pending = slot.get_or_insert_with(|| Pending {
            timestamp: timestamp.to_vec(),
            content: Vec::new(),
        });
        pending.content.extend_from_slice(content);
        if !partial || pending.content.len() >= MAX_LINE {
            if let Some(line) = slot.take() {
                sink.push(self.render(line));
            }
        }
    }

    /// Emit partial lines still waiting for their end (the input is over).
    fn finish(&mut self, sink: &mut Sink) {
        for slot in 0..self.pending.len() {
            if let Some(line) = self.pending[slot].take() {
                sink.push(self.render(line));
            }
        }
    }

    fn render(&self, line: Pending) -> Vec<u8> {
        let mut out = Vec::with_capacity(line.timestamp.len() + line.content.len() + 2);
        if self.timestamps {
            out.extend_from_slice(&line.timestamp);
            out.push(b' ');
        }
        out.extend_from_slice(&line.content);
        out.push(b'\n');
        out
    }
}

/// Split `<timestamp> <stream> <tags> <content>`; `None` when malformed.
fn parse_record(record: &[u8]) -> Option<(&[u8], Source, bool, &[u8])> {
    let mut fields = record.splitn(4, |b| *b == b' ');
    let timestamp = fields.next()?;
    let stream = match fields.next()? {
        b"stdout" => Source::Stdout,
        b"stderr" => Source::Stderr,
        _ => return None,
    };
    let tags = fields.next()?;
    // An empty F line may be written without the separator before its (empty) content.
    let content = fields.next().unwrap_or_default();
    std::str::from_utf8(timestamp)
        .ok()?
        .parse::<jiff::Timestamp>()
        .ok()?;
    let mut partial = None;
    for tag in tags.split(|b| *b == b':') {
        match tag {
            b"P" => partial = Some(true),
            b"F" => partial = Some(false),
            _ => {}
        }
    }
    Some((timestamp, stream, partial?, content))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use futures::StreamExt;
    use tokio::sync::oneshot;

    use super::*;

    const T1: &str = "2024-05-01T10:00:00.000000001Z";
    const T2: &str = "2024-05-01T10:00:01.5Z";

    fn write(path: &Path, text: &str) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }

    async fn read_all(path: &Path, opts: LogOptions) -> (String, u64) {
        let mut stream = read_log(path, &opts, std::future::pending()).await.unwrap();
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        (String::from_utf8(out).unwrap(), stream.malformed_lines())
    }

    /// Read from a following stream until `want` has arrived in full.
    async fn read_until(stream: &mut LogStream, got: &mut String, want: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !got.contains(want) {
            let chunk = tokio::time::timeout_at(deadline, stream.next())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {want:?}, got {got:?}"))
                .expect("stream ended early")
                .unwrap();
            got.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    fn sample(dir: &Path) -> PathBuf {
        let path = dir.join("0.log");
        write(
            &path,
            &format!(
                "{T1} stdout F one\n{T1} stderr F err one\n{T2} stdout P tw\n{T2} stderr F err two\n\
                 {T2} stdout F o\n{T2} stdout F\n{T2} stdout F three\n"
            ),
        );
        path
    }

    #[tokio::test]
    async fn reads_whole_file_joining_partials() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample(dir.path());
        let (out, malformed) = read_all(&path, LogOptions::default()).await;
        assert_eq!(out, "one\nerr one\nerr two\ntwo\n\nthree\n");
        assert_eq!(malformed, 0);
    }

    #[tokio::test]
    async fn filters_streams_and_prefixes_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample(dir.path());
        let opts = LogOptions {
            stream: StreamFilter::Stderr,
            timestamps: true,
            ..LogOptions::default()
        };
        let (out, _) = read_all(&path, opts).await;
        assert_eq!(out, format!("{T1} err one\n{T2} err two\n"));
        let opts = LogOptions {
            stream: StreamFilter::Stdout,
            timestamps: true,
            ..LogOptions::default()
        };
        let (out, _) = read_all(&path, opts).await;
        // A joined line carries the timestamp of its first chunk.
        assert_eq!(out, format!("{T1} one\n{T2} two\n{T2} \n{T2} three\n"));
    }

    #[tokio::test]
    async fn tail_counts_logical_lines_and_may_exceed_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample(dir.path());
        let tail = |n| LogOptions {
            tail: Some(n),
            ..LogOptions::default()
        };
        assert_eq!(read_all(&path, tail(2)).await.0, "\nthree\n");
        assert_eq!(read_all(&path, tail(4)).await.0, "err two\ntwo\n\nthree\n");
        assert_eq!(
            read_all(&path, tail(1000)).await.0,
            "one\nerr one\nerr two\ntwo\n\nthree\n"
        );
        assert_eq!(read_all(&path, tail(0)).await.0, "");
        let stdout_tail = LogOptions {
            tail: Some(3),
            stream: StreamFilter::Stdout,
            ..LogOptions::default()
        };
        assert_eq!(read_all(&path, stdout_tail).await.0, "two\n\nthree\n");
    }

    #[tokio::test]
    async fn malformed_records_are_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut bad = format!(
            "garbage\n\nnot-a-time stdout F x\n{T1} stdin F x\n{T1} stdout X x\n{T1} stdout\n{T1} stdout F good\n"
        )
        .into_bytes();
        bad.extend_from_slice(b"\xff\xfe stdout F x\n");
        // Content need not be UTF-8: it is passed through.
        bad.extend_from_slice(format!("{T1} stdout F ").as_bytes());
        bad.extend_from_slice(b"\xff\n");
        std::fs::write(&path, &bad).unwrap();
        let mut stream = read_log(&path, &LogOptions::default(), std::future::pending())
            .await
            .unwrap();
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(out, b"good\n\xff\n");
        assert_eq!(stream.malformed_lines(), 7);
    }

    #[tokio::test]
    async fn unterminated_partial_at_eof_is_emitted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        write(&path, &format!("{T1} stdout P half\n{T1} stdout F done"));
        assert_eq!(read_all(&path, LogOptions::default()).await.0, "halfdone\n");
        write(&path, &format!("\n{T1} stdout P dangling\n"));
        assert_eq!(
            read_all(&path, LogOptions::default()).await.0,
            "halfdone\ndangling\n"
        );
    }

    #[tokio::test]
    async fn overlong_lines_are_split_and_overlong_records_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let chunk = "a".repeat(MAX_LINE / 2 + 1);
        write(
            &path,
            &format!("{T1} stdout P {chunk}\n{T1} stdout P {chunk}\n{T1} stdout F b\n"),
        );
        write(
            &path,
            &format!("{T1} stdout F {}\n", "c".repeat(MAX_RECORD + 1)),
        );
        write(&path, &format!("{T1} stdout F end\n"));
        let (out, malformed) = read_all(&path, LogOptions::default()).await;
        assert_eq!(out, format!("{chunk}{chunk}\nb\nend\n"));
        assert_eq!(malformed, 1);
    }

    #[tokio::test]
    async fn follow_sees_growth_and_partials_then_stops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        write(&path, &format!("{T1} stdout F old1\n{T1} stdout F old2\n"));
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let opts = LogOptions {
            tail: Some(1),
            follow: true,
            ..LogOptions::default()
        };
        let mut stream = read_log(&path, &opts, async {
            let _ = stop_rx.await;
        })
        .await
        .unwrap();
        let mut got = String::new();
        read_until(&mut stream, &mut got, "old2\n").await;
        assert_eq!(got, "old2\n");

        write(&path, &format!("{T2} stdout F new1\n{T2} stdout P par"));
        read_until(&mut stream, &mut got, "new1\n").await;
        write(&path, &format!("t\n{T2} stdout F ial\n"));
        read_until(&mut stream, &mut got, "partial\n").await;
        assert_eq!(got, "old2\nnew1\npartial\n");

        // Lines written just before the stop are still delivered, then the stream ends.
        write(&path, &format!("{T2} stdout F last\n"));
        stop_tx.send(()).unwrap();
        let rest = tokio::time::timeout(Duration::from_secs(10), async {
            let mut rest = String::new();
            while let Some(chunk) = stream.next().await {
                rest.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
            }
            rest
        })
        .await
        .expect("follow did not end after stop");
        assert_eq!(format!("{got}{rest}"), "old2\nnew1\npartial\nlast\n");
    }

    #[tokio::test]
    async fn follow_continues_across_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        write(&path, &format!("{T1} stdout F before\n"));
        let opts = LogOptions {
            follow: true,
            ..LogOptions::default()
        };
        let mut stream = read_log(&path, &opts, std::future::pending())
            .await
            .unwrap();
        let mut got = String::new();
        read_until(&mut stream, &mut got, "before\n").await;
        write(&path, &format!("{T1} stdout F tail-of-old\n"));
        std::fs::rename(&path, dir.path().join("0.log.20240501-100000")).unwrap();
        write(&path, &format!("{T2} stdout F after\n"));
        read_until(&mut stream, &mut got, "after\n").await;
        assert_eq!(got, "before\ntail-of-old\nafter\n");
    }

    #[tokio::test]
    async fn missing_file_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let error = read_log(
            &dir.path().join("3.log"),
            &LogOptions::default(),
            std::future::pending(),
        )
        .await
        .unwrap_err();
        assert!(error.is_not_found(), "{error}");
    }

    #[test]
    fn previous_is_the_highest_other_restart() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(log_file(d, 2, false).unwrap(), d.join("2.log"));
        assert!(matches!(
            log_file(d, 0, true),
            Err(LogsError::NoPrevious { .. })
        ));
        for name in [
            "0.log",
            "1.log",
            "2.log",
            "7.log.20240501-100000",
            "x.log",
            ".log",
        ] {
            write(&d.join(name), "");
        }
        assert_eq!(log_file(d, 2, true).unwrap(), d.join("1.log"));
        assert_eq!(log_file(d, 0, true).unwrap(), d.join("2.log"));
        let missing = log_file(&d.join("nope"), 0, true).unwrap_err();
        assert!(missing.is_not_found());
    }
}
