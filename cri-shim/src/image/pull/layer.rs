//! Fetching one layer: the blob streams from the registry into the blob store while a
//! blocking task unpacks the same bytes into a snapshot. Nothing becomes visible unless the
//! blob's digest and size and the snapshot's diff ID all check out.

use std::io::{self, Read};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use oci_client::client::LayerDescriptor;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::endpoint::Endpoint;
use super::registry_error;
use crate::image::error::ImageError;
use crate::image::store::{ImageStore, LayerRecord, PreparedSnapshot, Usage};
use crate::image::unpack::{self, Compression, LayerStats, UnpackOptions};

/// Chunks buffered between download and unpack; bounds memory per layer.
const PIPE_DEPTH: usize = 64;

type Unpacker = JoinHandle<Result<(PreparedSnapshot, LayerStats), ImageError>>;

/// Download `layer` into the blob store, unpacking it on the way when `unpack` is set.
pub async fn fetch(
    store: &Arc<ImageStore>,
    endpoint: &Endpoint,
    layer: &LayerRecord,
    urls: &Option<Vec<String>>,
    unpack: bool,
    options: &UnpackOptions,
) -> Result<(), ImageError> {
    let digest = layer.digest.to_string();
    let descriptor = LayerDescriptor {
        digest: &digest,
        urls,
    };
    let sized = endpoint
        .client
        .pull_blob_stream(&endpoint.reference, &descriptor)
        .await
        .map_err(|e| registry_error(endpoint, e))?;
    let mut writer = store.blobs.writer(layer.digest.clone(), layer.size)?;

    let (mut sender, mut unpacker) = if unpack {
        let compression = Compression::from_media_type(&layer.media_type).map_err(|source| {
            ImageError::Unpack {
                digest: digest.clone(),
                source,
            }
        })?;
        let (tx, rx) = mpsc::channel(PIPE_DEPTH);
        (
            Some(tx),
            Some(spawn_unpacker(
                store.clone(),
                rx,
                compression,
                options.clone(),
                digest.clone(),
            )),
        )
    } else {
        (None, None)
    };

    let mut stream = sized.stream;
    let mut finished_early = None;
    let mut downloaded: Result<(), ImageError> = Ok(());
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                downloaded = Err(stream_error(endpoint, &digest, e, layer));
                break;
            }
        };
        if let Err(e) = writer.write(&chunk) {
            downloaded = Err(e);
            break;
        }
        if let Some(tx) = &sender {
            if tx.send(Ok(chunk)).await.is_err() {
                // The unpacker stopped early: a hostile or broken layer ends the pull now;
                // one that finished cleanly only leaves the rest of the blob to verify.
                sender = None;
                if let Some(handle) = unpacker.take() {
                    finished_early = Some(join(handle).await?);
                }
            }
        }
    }
    if downloaded.is_ok() {
        downloaded = writer.verify();
    }
    if let (Err(e), Some(tx)) = (&downloaded, &sender) {
        // Make the unpacker fail rather than commit bytes that did not verify.
        let _ = tx.send(Err(io::Error::other(e.to_string()))).await;
    }
    drop(sender);
    let unpacked = match unpacker {
        Some(handle) => Some(join(handle).await),
        None => finished_early.map(Ok),
    };
    if let Err(e) = downloaded {
        // An unpack that finished before the download failed is discarded off the runtime
        // threads: removing its tree is blocking work.
        let _ = tokio::task::spawn_blocking(move || drop(unpacked)).await;
        return Err(e);
    }
    let snapshot = unpacked.transpose()?;
    if let Some((_, stats)) = &snapshot {
        if stats.diff_id != layer.diff_id.to_string() {
            return Err(ImageError::DigestMismatch {
                expected: layer.diff_id.to_string(),
                actual: stats.diff_id.clone(),
            });
        }
    }

    let store = store.clone();
    let diff_id = layer.diff_id.clone();
    tokio::task::spawn_blocking(move || {
        writer.commit()?;
        if let Some((prepared, stats)) = snapshot {
            let usage = Usage {
                bytes: stats.bytes,
                inodes: stats.inodes,
            };
            store
                .snapshots
                .commit(prepared, &diff_id, usage)
                .map_err(|e| ImageError::io(format!("committing snapshot {diff_id}"), e))?;
        }
        Ok(())
    })
    .await
    .map_err(|e| ImageError::io("layer commit task", io::Error::other(e)))?
}

fn spawn_unpacker(
    store: Arc<ImageStore>,
    rx: mpsc::Receiver<io::Result<Bytes>>,
    compression: Compression,
    options: UnpackOptions,
    digest: String,
) -> Unpacker {
    tokio::task::spawn_blocking(move || {
        let prepared = store
            .snapshots
            .prepare()
            .map_err(|e| ImageError::io("preparing snapshot", e))?;
        let mut reader = ChannelReader {
            rx,
            current: Bytes::new(),
        };
        let stats = unpack::apply_layer(&mut reader, compression, &prepared.fs_path(), &options)
            .map_err(|source| ImageError::Unpack { digest, source })?;
        Ok((prepared, stats))
    })
}

async fn join(handle: Unpacker) -> Result<(PreparedSnapshot, LayerStats), ImageError> {
    handle
        .await
        .map_err(|e| ImageError::io("unpack task", io::Error::other(e)))?
}

fn stream_error(
    endpoint: &Endpoint,
    digest: &str,
    e: io::Error,
    layer: &LayerRecord,
) -> ImageError {
    ImageError::Registry {
        reference: endpoint.reference.whole(),
        registry: endpoint.host.clone(),
        message: format!("downloading layer {digest} ({} bytes): {e}", layer.size),
    }
}

/// Blocking `Read` over the chunks the download sends.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
