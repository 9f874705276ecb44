//! The decompressed stream: decoding, the diff ID hash, the byte limits, and telling apart
//! why a read failed (the blob, the decoder, a limit, or the tar structure).

use std::cell::Cell;
use std::fmt;
use std::io::{self, Read};
use std::rc::Rc;

use sha2::{Digest, Sha256};

use super::error::UnpackError;
use super::limits::MAX_METADATA_BYTES;
use super::Compression;

/// Which bound a read ran into.
#[derive(Debug, Clone, Copy)]
enum Hit {
    Bytes,
    Metadata,
}

/// What the readers observed, shared with the code that interprets their errors.
#[derive(Debug)]
struct State {
    compression: Compression,
    max_bytes: u64,
    /// Decompressed bytes read so far.
    total: Cell<u64>,
    /// Compressed bytes read from the blob so far.
    compressed: Cell<u64>,
    /// While the tar reader parses headers: the `total` it may not pass.
    metadata_end: Cell<Option<u64>>,
    hit: Cell<Option<Hit>>,
    source_failed: Cell<bool>,
    decode_failed: Cell<bool>,
}

/// Watches the stream from outside the tar reader: limits, totals and error classification.
#[derive(Debug, Clone)]
pub(crate) struct Probe(Rc<State>);

/// The blob as given, noting whether a failure came from it.
struct Source<R> {
    inner: R,
    state: Rc<State>,
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.state
                    .compressed
                    .set(self.state.compressed.get().saturating_add(n as u64));
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.state.source_failed.set(true);
                }
                Err(e)
            }
        }
    }
}

/// The decompressed stream, hashed and counted as the tar reader consumes it.
pub(crate) struct Stream<'a> {
    inner: Box<dyn Read + 'a>,
    hasher: Sha256,
    state: Rc<State>,
}

/// Start decoding `blob`; `max_bytes` bounds the decompressed total.
pub(crate) fn open<'a, R: Read + 'a>(
    blob: R,
    compression: Compression,
    max_bytes: u64,
) -> Result<(Stream<'a>, Probe), UnpackError> {
    let state = Rc::new(State {
        compression,
        max_bytes,
        total: Cell::new(0),
        compressed: Cell::new(0),
        metadata_end: Cell::new(None),
        hit: Cell::new(None),
        source_failed: Cell::new(false),
        decode_failed: Cell::new(false),
    });
    let source = Source {
        inner: blob,
        state: state.clone(),
    };
    let inner: Box<dyn Read + 'a> = match compression {
        Compression::None => Box::new(source),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(source)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(source).map_err(|source| {
                UnpackError::Decoder {
                    compression: compression.name(),
                    source,
                }
            })?)
        }
    };
    let stream = Stream {
        inner,
        hasher: Sha256::new(),
        state: state.clone(),
    };
    Ok((stream, Probe(state)))
}

impl Read for Stream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(hit) = self.state.hit.get() {
            return Err(hit_error(hit));
        }
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted && !self.state.source_failed.get() {
                    self.state.decode_failed.set(true);
                }
                return Err(e);
            }
        };
        let data = buf.get(..n).unwrap_or_default();
        self.hasher.update(data);
        let total = self.state.total.get().saturating_add(n as u64);
        self.state.total.set(total);
        let hit = if total > self.state.max_bytes {
            Some(Hit::Bytes)
        } else if self.state.metadata_end.get().is_some_and(|end| total > end) {
            Some(Hit::Metadata)
        } else {
            None
        };
        if let Some(hit) = hit {
            self.state.hit.set(Some(hit));
            return Err(hit_error(hit));
        }
        Ok(n)
    }
}

impl Stream<'_> {
    /// Read to the end of the stream (past the tar end marker) and return the diff ID.
    pub(crate) fn finish(mut self) -> Result<String, UnpackError> {
        let probe = Probe(self.state.clone());
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match self.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(probe.error(e, "reading past the end of the tar archive")),
            }
        }
        let state = &self.state;
        if state.compression != Compression::None && state.compressed.get() == 0 {
            return Err(UnpackError::Corrupt(format!(
                "empty {} stream",
                state.compression.name()
            )));
        }
        Ok(format!("sha256:{}", hex::encode(self.hasher.finalize())))
    }
}

impl Probe {
    /// Bound what the tar reader may read before it hands over the next entry.
    pub(crate) fn begin_metadata(&self) {
        let end = self.0.total.get().saturating_add(MAX_METADATA_BYTES);
        self.0.metadata_end.set(Some(end));
    }

    /// The tar reader handed over an entry (or finished); lift the metadata bound.
    pub(crate) fn end_metadata(&self) {
        self.0.metadata_end.set(None);
    }

    /// Decompressed bytes read so far.
    pub(crate) fn total(&self) -> u64 {
        self.0.total.get()
    }

    /// The `max_bytes` limit in force.
    pub(crate) fn max_bytes(&self) -> u64 {
        self.0.max_bytes
    }

    /// Turn a read failure into the error that explains it; `context` says what was being read.
    pub(crate) fn error(&self, err: io::Error, context: impl fmt::Display) -> UnpackError {
        let state = &self.0;
        match state.hit.get() {
            Some(Hit::Bytes) => {
                return UnpackError::TooManyBytes {
                    max: state.max_bytes,
                }
            }
            Some(Hit::Metadata) => {
                return UnpackError::MetadataTooLarge {
                    max: MAX_METADATA_BYTES,
                }
            }
            None => {}
        }
        if state.source_failed.get() {
            return UnpackError::Read(err);
        }
        let name = state.compression.name();
        if state.decode_failed.get() {
            return UnpackError::Corrupt(if err.kind() == io::ErrorKind::UnexpectedEof {
                format!("unexpected end of {name} stream")
            } else {
                format!("invalid {name} data: {err}")
            });
        }
        UnpackError::Corrupt(format!("{context}: {err}"))
    }
}

fn hit_error(hit: Hit) -> io::Error {
    io::Error::other(match hit {
        Hit::Bytes => "layer exceeds max_bytes",
        Hit::Metadata => "tar metadata exceeds its bound",
    })
}
