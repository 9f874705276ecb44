//! Container output in the CRI log format: `<RFC3339Nano UTC> <stream> <F|P> <content>\n`.
//!
//! A line longer than [`MAX_LINE`] becomes `P` records followed by an `F`; a fragment
//! without a newline when the stream ends (or the container exits) is written as `P`, as
//! containerd does, so readers know the output did not end with a newline.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// Most content bytes in one record.
pub const MAX_LINE: usize = 16 * 1024;

/// Which of the container's streams a record comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// Standard output (and a terminal's only stream).
    Stdout,
    /// Standard error.
    Stderr,
}

impl StreamKind {
    fn name(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// The container's CRI log file; records are dropped (output still drained) without one.
#[derive(Debug)]
pub struct LogFile {
    path: Option<PathBuf>,
    file: Option<File>,
}

impl LogFile {
    /// Open (append, create) the log at `path`, or log nowhere.
    pub fn open(path: Option<PathBuf>) -> io::Result<Self> {
        let file = path.as_deref().map(open_append).transpose()?;
        Ok(Self { path, file })
    }

    /// Close the file and open the path again (the old file was renamed by rotation).
    pub fn reopen(&mut self) -> io::Result<()> {
        let Some(path) = &self.path else {
            return Err(io::Error::other("the container has no log path"));
        };
        self.file = None;
        self.file = Some(open_append(path)?);
        Ok(())
    }

    /// Write one record with a single `writev`, so concurrent readers never see half of it.
    pub fn write_record(&mut self, kind: StreamKind, partial: bool, content: &[u8]) {
        let Some(file) = &mut self.file else {
            return;
        };
        let mut prefix = [0u8; 64];
        let used = {
            let mut cursor = io::Cursor::new(&mut prefix[..]);
            write_timestamp(&mut cursor, crate::monitor::protocol::now_nanos());
            let tag = if partial { "P" } else { "F" };
            let _ = write!(cursor, " {} {tag} ", kind.name());
            cursor.position() as usize
        };
        let mut slices = [
            IoSlice::new(&prefix[..used]),
            IoSlice::new(content),
            IoSlice::new(b"\n"),
        ];
        let total = used + content.len() + 1;
        let mut slices = &mut slices[..];
        let mut written = 0;
        // A regular file takes it in one go; loop only for the unusual short write.
        while written < total {
            match file.write_vectored(slices) {
                Ok(0) => break,
                Ok(n) => {
                    written += n;
                    IoSlice::advance_slices(&mut slices, n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Keep draining the container even when the disk is full.
                    eprintln!("capstan shim: writing log: {e}");
                    break;
                }
            }
        }
    }
}

fn open_append(path: &std::path::Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
}

/// Splits one stream's bytes into records, carrying an unfinished line between reads.
#[derive(Debug)]
pub struct LineSplitter {
    kind: StreamKind,
    pending: Vec<u8>,
}

impl LineSplitter {
    /// A splitter for `kind` with nothing pending.
    pub fn new(kind: StreamKind) -> Self {
        Self {
            kind,
            pending: Vec::new(),
        }
    }

    /// Turn `data` into records: complete lines as `F`, overlong lines in `P` pieces.
    pub fn feed(&mut self, mut data: &[u8], sink: &mut dyn FnMut(StreamKind, bool, &[u8])) {
        while !data.is_empty() {
            let newline = data.iter().position(|&b| b == b'\n');
            let mut piece = &data[..newline.unwrap_or(data.len())];
            while piece.len() > MAX_LINE - self.pending.len() {
                let room = MAX_LINE - self.pending.len();
                if self.pending.is_empty() {
                    sink(self.kind, true, &piece[..room]);
                } else {
                    self.pending.extend_from_slice(&piece[..room]);
                    sink(self.kind, true, &self.pending);
                    self.pending.clear();
                }
                piece = &piece[room..];
            }
            match newline {
                Some(at) => {
                    if self.pending.is_empty() {
                        sink(self.kind, false, strip_cr(piece));
                    } else {
                        self.pending.extend_from_slice(piece);
                        sink(self.kind, false, strip_cr(&self.pending));
                        self.pending.clear();
                    }
                    data = &data[at + 1..];
                }
                None => {
                    self.pending.extend_from_slice(piece);
                    data = &[];
                }
            }
        }
    }

    /// Write what is left of an unfinished line as a `P` record and free the buffer.
    pub fn flush(&mut self, sink: &mut dyn FnMut(StreamKind, bool, &[u8])) {
        if !self.pending.is_empty() {
            sink(self.kind, true, &self.pending);
        }
        self.pending = Vec::new();
    }
}

/// Lines from a terminal end in `\r\n`; the record keeps neither.
fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `nanos` since the epoch as RFC 3339 in UTC with Go's RFC3339Nano fraction (trailing
/// zeros dropped, none at all for whole seconds), the form kubelet parses.
pub fn write_timestamp(out: &mut impl Write, nanos: i64) {
    let secs = nanos.div_euclid(1_000_000_000);
    let frac = nanos.rem_euclid(1_000_000_000);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let of_day = secs.rem_euclid(86_400);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    );
    if frac != 0 {
        let mut digits = [0u8; 9];
        let mut rest = frac;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        let len = 9 - digits.iter().rev().take_while(|&&d| d == b'0').count();
        let _ = out.write_all(b".");
        let _ = out.write_all(&digits[..len]);
    }
    let _ = out.write_all(b"Z");
}

/// (year, month, day) of a day count since 1970-01-01 in the proleptic Gregorian calendar,
/// by 400-year eras counted from 0000-03-01 (so leap days fall at the end of a year).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timestamp(nanos: i64) -> String {
        let mut out = Vec::new();
        write_timestamp(&mut out, nanos);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn timestamps_are_rfc3339_nano_utc() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            timestamp(1_475_713_029_669_794_202),
            "2016-10-06T00:17:09.669794202Z"
        );
        assert_eq!(timestamp(951_782_400_500_000_000), "2000-02-29T00:00:00.5Z");
        assert_eq!(timestamp(-1_000_000_000), "1969-12-31T23:59:59Z");
    }

    fn split(chunks: &[&[u8]], flush: bool) -> Vec<(bool, Vec<u8>)> {
        let mut records = Vec::new();
        let mut splitter = LineSplitter::new(StreamKind::Stderr);
        let mut sink = |kind: StreamKind, partial: bool, content: &[u8]| {
            assert_eq!(kind, StreamKind::Stderr);
            records.push((partial, content.to_vec()));
        };
        for chunk in chunks {
            splitter.feed(chunk, &mut sink);
        }
        if flush {
            splitter.flush(&mut sink);
        }
        records
    }

    #[test]
    fn lines_across_reads_become_full_records() {
        let records = split(&[b"one\ntw", b"o\r\n", b"\nthree"], true);
        assert_eq!(
            records,
            vec![
                (false, b"one".to_vec()),
                (false, b"two".to_vec()),
                (false, b"".to_vec()),
                (true, b"three".to_vec()),
            ]
        );
    }

    #[test]
    fn long_lines_are_split_into_partial_records() {
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        let mut data = long.clone();
        data.push(b'\n');
        let records = split(&[&data[..100], &data[100..]], false);
        assert_eq!(records.len(), 3);
        assert!(records[0].0 && records[1].0 && !records[2].0);
        assert_eq!(records[0].1.len(), MAX_LINE);
        assert_eq!(records[2].1.len(), 10);
        let joined: Vec<u8> = records.into_iter().flat_map(|r| r.1).collect();
        assert_eq!(joined, long);
        // Exactly MAX_LINE bytes then a newline is one full record.
        let mut exact = vec![b'y'; MAX_LINE];
        exact.push(b'\n');
        assert_eq!(split(&[&exact], true), vec![(false, vec![b'y'; MAX_LINE])]);
    }

    #[test]
    fn records_are_appended_in_cri_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut log = LogFile::open(Some(path.clone())).unwrap();
        log.write_record(StreamKind::Stdout, false, b"hello world");
        log.write_record(StreamKind::Stderr, true, b"part");
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].ends_with("Z stdout F hello world"), "{}", lines[0]);
        assert!(lines[1].ends_with("Z stderr P part"), "{}", lines[1]);
        std::fs::rename(&path, dir.path().join("c.log.1")).unwrap();
        log.reopen().unwrap();
        log.write_record(StreamKind::Stdout, false, b"after");
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .ends_with("stdout F after\n"));
        assert!(LogFile::open(None).unwrap().reopen().is_err());
    }
}
