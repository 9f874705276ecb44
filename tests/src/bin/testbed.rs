//! `testbed`: runs harness fixtures by hand, e.g. `testbed registry --tls --auth u:p --push-demo`.

use std::io::{Read, Write};
use std::sync::mpsc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use tests::image::{catalog, ManifestKind};
use tests::push;
use tests::registry::{Registry, RegistryOptions};

/// Capstan test-bed fixtures.
#[derive(Parser)]
#[command(name = "testbed", about = "Start Capstan test fixtures by hand")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Subcommands.
#[derive(Subcommand)]
enum Command {
    /// Start a registry and keep it running until SIGTERM/SIGINT or stdin EOF.
    Registry(RegistryArgs),
}

/// `testbed registry` arguments.
#[derive(Parser)]
struct RegistryArgs {
    /// Serve HTTPS with a generated CA (its path is printed as `CA <path>`).
    #[arg(long)]
    tls: bool,
    /// Require basic auth with USER:PASS.
    #[arg(long, value_name = "USER:PASS")]
    auth: Option<String>,
    /// Enable DELETE of blobs and manifests.
    #[arg(long)]
    delete: bool,
    /// Push busybox as demo/busybox:latest (OCI manifest inside an OCI index with a decoy platform).
    #[arg(long)]
    push_demo: bool,
    /// Also push demo/multi-layer:latest (OCI manifest) and demo/busybox-docker:latest (Docker manifest list).
    #[arg(long)]
    push_extra: bool,
    /// Do not stop on stdin EOF (for running in the background with stdin at /dev/null).
    #[arg(long)]
    ignore_stdin: bool,
}

fn main() -> Result<()> {
    // Block the stop signals before any thread exists, so every thread inherits the mask and sigwait sees them.
    let signals = block_stop_signals()?;
    match Cli::parse().command {
        Command::Registry(args) => run_registry(args, signals),
    }
}

fn run_registry(args: RegistryArgs, signals: libc::sigset_t) -> Result<()> {
    let mut opts = RegistryOptions::plain()
        .tls(args.tls)
        .delete_enabled(args.delete);
    if let Some(auth) = &args.auth {
        let Some((user, pass)) = auth.split_once(':') else {
            bail!("--auth wants USER:PASS")
        };
        opts = opts.basic_auth(user, pass);
    }
    let reg = Registry::start(opts)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "REGISTRY {}", reg.host())?;
    if let Some(ca) = reg.ca_cert_path() {
        writeln!(out, "CA {}", ca.display())?;
    }
    if args.push_demo {
        let digest = push::push_image(
            &reg,
            "demo/busybox",
            "latest",
            &catalog::busybox()?,
            ManifestKind::Oci,
            true,
        )?;
        writeln!(
            out,
            "IMAGE {} {digest}",
            push::image_ref(&reg, "demo/busybox", "latest")
        )?;
    }
    if args.push_extra {
        let digest = push::push_image(
            &reg,
            "demo/multi-layer",
            "latest",
            &catalog::multi_layer()?,
            ManifestKind::Oci,
            false,
        )?;
        writeln!(
            out,
            "IMAGE {} {digest}",
            push::image_ref(&reg, "demo/multi-layer", "latest")
        )?;
        let digest = push::push_image(
            &reg,
            "demo/busybox-docker",
            "latest",
            &catalog::busybox()?,
            ManifestKind::Docker,
            true,
        )?;
        writeln!(
            out,
            "IMAGE {} {digest}",
            push::image_ref(&reg, "demo/busybox-docker", "latest")
        )?;
    }
    writeln!(out, "LOG {}", reg.log_path().display())?;
    writeln!(out, "READY")?;
    out.flush()?;
    drop(out);

    let reason = wait_for_stop(signals, !args.ignore_stdin)?;
    eprintln!("testbed: stopping ({reason})");
    drop(reg);
    Ok(())
}

/// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread (and threads spawned later); returns the set.
fn block_stop_signals() -> Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data initialised by sigemptyset; the libc calls only touch that set and the mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            bail!("pthread_sigmask failed: {rc}");
        }
        Ok(set)
    }
}

/// Waits for one of the blocked signals or (if `watch_stdin`) EOF on stdin; returns what happened.
fn wait_for_stop(signals: libc::sigset_t, watch_stdin: bool) -> Result<String> {
    let (tx, rx) = mpsc::channel::<String>();
    let sig_tx = tx.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut sig: libc::c_int = 0;
            // SAFETY: `signals` is a valid, initialised set that is blocked in this thread.
            let rc = unsafe { libc::sigwait(&signals, &mut sig) };
            let _ = sig_tx.send(if rc == 0 {
                format!("signal {sig}")
            } else {
                format!("sigwait failed: {rc}")
            });
        })
        .context("spawning signal thread")?;
    if watch_stdin {
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || {
                let mut buf = [0u8; 4096];
                let mut stdin = std::io::stdin();
                while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
                let _ = tx.send("stdin closed".into());
            })
            .context("spawning stdin thread")?;
    }
    Ok(rx.recv().unwrap_or_else(|_| "channel closed".into()))
}
