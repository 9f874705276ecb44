//! The two pipes between the monitor and a container's init: `report` (we write `R` when
//! ready or `E`+message on failure) and `gate` (one byte starts the process, EOF cancels it).

use std::io::{ErrorKind, Read, Write};
use std::os::fd::OwnedFd;

/// Byte written once setup is done and the process waits on the gate.
pub const READY: u8 = b'R';
/// Byte that precedes an error message.
pub const ERROR: u8 = b'E';

/// Exit status after a reported failure.
pub const FAILURE_EXIT: i32 = 127;

/// Formats an error report: `E` followed by the UTF-8 message.
pub fn error_frame(message: &str) -> Vec<u8> {
    let mut frame = Vec::with_capacity(message.len() + 1);
    frame.push(ERROR);
    frame.extend_from_slice(message.as_bytes());
    frame
}

/// Writes `E`+message to `report` and leaves with status 127, skipping atexit handlers and
/// stdio buffers inherited from the monitor.
pub fn fail(report: &OwnedFd, message: &str) -> ! {
    // Nobody is left to tell if this write fails.
    let _ = std::fs::File::from(clone_fd(report)).write_all(&error_frame(message));
    exit_now(FAILURE_EXIT)
}

/// Tells the monitor that setup is done.
pub fn ready(report: &OwnedFd) -> std::io::Result<()> {
    std::fs::File::from(clone_fd(report)).write_all(&[READY])
}

/// Outcome of waiting on the gate.
#[derive(Debug, PartialEq, Eq)]
pub enum Gate {
    /// A byte arrived: run the process.
    Open,
    /// The monitor closed the gate: leave without running anything.
    Cancelled,
}

/// Blocks until the monitor writes a byte (start) or closes the pipe (cancel).
pub fn wait(gate: OwnedFd) -> std::io::Result<Gate> {
    let mut file = std::fs::File::from(gate);
    let mut byte = [0u8; 1];
    loop {
        match file.read(&mut byte) {
            Ok(0) => return Ok(Gate::Cancelled),
            Ok(_) => return Ok(Gate::Open),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `_exit(2)`: the forked child must not run destructors or flush buffers it shares with
/// its parent.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions and never returns.
    unsafe { libc::_exit(code) }
}

/// A second handle to the same pipe, so writing through a `File` does not close ours.
fn clone_fd(fd: &OwnedFd) -> OwnedFd {
    match fd.try_clone() {
        Ok(clone) => clone,
        // Out of descriptors: nothing can be reported anyway.
        Err(_) => exit_now(FAILURE_EXIT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_frame_is_e_then_message() {
        assert_eq!(error_frame("mount /x: boom"), b"Emount /x: boom".to_vec());
    }

    #[test]
    fn gate_byte_opens_and_eof_cancels() {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        std::fs::File::from(w).write_all(b"x").expect("write");
        assert_eq!(wait(r).expect("wait"), Gate::Open);

        let (r, w) = nix::unistd::pipe().expect("pipe");
        drop(w);
        assert_eq!(wait(r).expect("wait"), Gate::Cancelled);
    }

    #[test]
    fn ready_writes_r() {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        ready(&w).expect("ready");
        drop(w);
        let mut got = Vec::new();
        std::fs::File::from(r).read_to_end(&mut got).expect("read");
        assert_eq!(got, vec![READY]);
    }
}
