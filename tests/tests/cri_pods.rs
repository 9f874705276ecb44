//! Pods on Capstan's built-in runtime over CRI: sandbox namespaces and network, container
//! lifecycle, logs, exec, stats and events, with the built-in executor and with runc.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use k8s_cri::v1::ContainerState;
use tests::pods::{container_config, Node, ENV_LABEL};

fn pod_lifecycle(handler: Option<&str>) -> Result<()> {
    let node = Node::start()?;
    let cri = node.driver(handler)?;
    let (pod, ctr) = cri.start_pod(
        &node.env,
        "web",
        node.images.busybox(),
        &["sh", "-c", "echo hello; echo oops >&2; exec sleep 3600"],
    )?;
    let ip = cri.sandbox_ip(&pod)?;
    ensure!(node.net.contains(&ip), "{ip} not in {}", node.net.subnet());

    // The container sees the pod's address, hostname and DNS settings.
    let out = cri.exec_sync(&ctr, &["ip", "-4", "addr", "show", "eth0"], 10)?;
    ensure!(
        out.exit_code == 0,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(String::from_utf8_lossy(&out.stdout).contains(&format!("inet {ip}/24")));
    let out = cri.exec_sync(&ctr, &["hostname"], 10)?;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "web");
    let out = cri.exec_sync(&ctr, &["cat", "/etc/resolv.conf"], 10)?;
    ensure!(String::from_utf8_lossy(&out.stdout).contains("nameserver 10.96.0.10"));
    let out = cri.exec_sync(&ctr, &["sh", "-c", "echo out; echo err >&2; exit 3"], 10)?;
    assert_eq!(
        (out.exit_code, &out.stdout[..], &out.stderr[..]),
        (3, &b"out\n"[..], &b"err\n"[..])
    );

    // Logs in the CRI format.
    let status = cri.container_status(&ctr)?;
    let log = wait_for_log(Path::new(&status.log_path), 2)?;
    let lines: Vec<&str> = log.lines().collect();
    ensure!(
        lines.iter().any(|l| l.ends_with(" stdout F hello")),
        "{log}"
    );
    ensure!(lines.iter().any(|l| l.ends_with(" stderr F oops")), "{log}");

    // The host reaches the pod: a listener started through exec answers on the pod IP.
    let out = cri.exec_sync(
        &ctr,
        &["sh", "-c", "nc -l -p 8080 -e echo pong >/dev/null 2>&1 &"],
        10,
    )?;
    ensure!(
        out.exit_code == 0,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply = connect_and_read(&format!("{ip}:8080"))?;
    assert_eq!(reply.trim(), "pong");

    // `sleep` is PID 1 of its namespace and ignores SIGTERM: Stop escalates to SIGKILL.
    cri.stop_container(&ctr, 1)?;
    let status = cri.container_status(&ctr)?;
    assert_eq!(status.state, ContainerState::ContainerExited as i32);
    assert_eq!(status.exit_code, 137, "killed by SIGKILL after the timeout");
    assert_eq!(status.reason, "Error");
    ensure!(status.finished_at >= status.started_at && status.started_at > 0);
    cri.teardown(&pod, &[ctr])?;
    let mine = Some((ENV_LABEL, node.env.id()));
    ensure!(cri.list_sandboxes(mine)?.is_empty());
    Ok(())
}

fn connect_and_read(addr: &str) -> Result<String> {
    use std::io::Read;
    let mut last = None;
    for _ in 0..50 {
        match std::net::TcpStream::connect(addr) {
            Ok(mut stream) => {
                let mut reply = String::new();
                stream.read_to_string(&mut reply)?;
                return Ok(reply);
            }
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(anyhow::anyhow!("connecting to {addr}: {last:?}"))
}

fn wait_for_log(path: &Path, lines: usize) -> Result<String> {
    for _ in 0..100 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= lines {
            return Ok(text);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

#[test]
fn pod_lifecycle_builtin_executor() -> Result<()> {
    pod_lifecycle(None)
}

#[test]
fn pod_lifecycle_runc() -> Result<()> {
    pod_lifecycle(Some("runc"))
}

#[test]
fn exit_codes_and_reasons() -> Result<()> {
    let node = Node::start()?;
    let cri = node.driver(None)?;
    let sandbox = node
        .env
        .sandbox_config("exits", "capstan-test", "uid-exits")?;
    let pod = cri.run_sandbox(&sandbox)?;
    let ok = cri.create_container(
        &pod,
        &container_config("ok", node.images.busybox(), &["true"]),
        &sandbox,
    )?;
    let bad = cri.create_container(
        &pod,
        &container_config("bad", node.images.busybox(), &["sh", "-c", "exit 7"]),
        &sandbox,
    )?;
    assert_eq!(
        cri.container_status(&ok)?.state,
        ContainerState::ContainerCreated as i32
    );
    cri.start_container(&ok)?;
    cri.start_container(&bad)?;
    for (id, code, reason) in [(&ok, 0, "Completed"), (&bad, 7, "Error")] {
        let mut status = cri.container_status(id)?;
        for _ in 0..100 {
            if status.state == ContainerState::ContainerExited as i32 {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            status = cri.container_status(id)?;
        }
        assert_eq!(status.state, ContainerState::ContainerExited as i32);
        assert_eq!((status.exit_code, status.reason.as_str()), (code, reason));
    }
    cri.teardown(&pod, &[ok, bad])?;
    Ok(())
}
