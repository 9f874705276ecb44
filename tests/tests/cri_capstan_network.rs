//! Capstan's CNI plugins driven through Capstan's runtime: two pods on a capstan-bridge +
//! capstan-ipam (+ capstan-portmap) network, IPv4 and IPv6, with real traffic between pods,
//! host and pods, and through a host port (also from the other pod and from the pod itself).
//! Masquerade to outside the bridge is covered per plugin combination in `cni_traffic.rs`.

use std::io::Read;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use k8s_cri::v1::PortMapping;
use tests::binaries::require_root;
use tests::capstan::{CapstanCri, CriConfig};
use tests::cri_driver::CriDriver;
use tests::podnet::Impl;
use tests::pods::{container_config, PodEnv, PodImages, PodNetwork};

/// Read what a listener at `addr` sends, retrying while it starts.
fn read_from(addr: &str) -> Result<String> {
    let mut last = None;
    for _ in 0..50 {
        match std::net::TcpStream::connect(addr) {
            Ok(mut stream) => {
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
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

/// Run `script` in the container and return its stdout, failing on a non-zero exit.
fn sh(cri: &CriDriver, ctr: &str, script: &str) -> Result<String> {
    let out = cri.exec_sync(ctr, &["sh", "-c", script], 20)?;
    ensure!(
        out.exit_code == 0,
        "`{script}` exited {}: {}",
        out.exit_code,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Serve `reply` on `port` in the container, one connection at a time, in the background.
fn serve(cri: &CriDriver, ctr: &str, port: u16, reply: &str) -> Result<()> {
    sh(
        cri,
        ctr,
        &format!("(while true; do nc -l -p {port} -e echo {reply}; done) >/dev/null 2>&1 &"),
    )?;
    Ok(())
}

#[test]
fn capstan_plugins_through_capstan_runtime() -> Result<()> {
    require_root()?;
    let images = PodImages::start()?;
    let net = PodNetwork::new(Impl::Capstan, true)?;
    let env = PodEnv::new()?;
    let cri = CapstanCri::start(
        &env.capstan_config(&net, CriConfig::default().registry(images.registry())),
    )?;
    let driver = CriDriver::connect(&cri.socket())?;
    driver.pull_image(images.busybox())?;

    let host_port = 20_000 + (std::process::id() % 20_000) as i32;
    let mut sandbox_a = env.sandbox_config("net-a", "capstan-test", "uid-net-a")?;
    sandbox_a.port_mappings = vec![PortMapping {
        protocol: 0,
        container_port: 8080,
        host_port,
        host_ip: String::new(),
    }];
    let sandbox_b = env.sandbox_config("net-b", "capstan-test", "uid-net-b")?;
    let mut pods = Vec::new();
    for sandbox in [&sandbox_a, &sandbox_b] {
        let pod = driver.run_sandbox(sandbox)?;
        let ctr = driver.create_container(
            &pod,
            &container_config("main", images.busybox(), &["sleep", "3600"]),
            sandbox,
        )?;
        driver.start_container(&ctr)?;
        driver.wait_running(&ctr, Duration::from_secs(20))?;
        pods.push((pod, ctr));
    }
    let result = (|| -> Result<()> {
        let (pod_a, ctr_a) = &pods[0];
        let (pod_b, ctr_b) = &pods[1];
        let status_a = driver.sandbox_status(pod_a)?;
        let network = status_a.network.context("pod A has no network status")?;
        let ip_a = network.ip.clone();
        ensure!(net.contains(&ip_a), "{ip_a} not in {}", net.subnet());
        let ip6_a = network
            .additional_ips
            .first()
            .map(|p| p.ip.clone())
            .context("pod A has no IPv6 address")?;
        ensure!(ip6_a.contains(':'), "second pod IP {ip6_a} is not IPv6");
        let ip_b = driver.sandbox_ip(pod_b)?;

        serve(&driver, ctr_a, 8080, "from-a")?;
        // host → pod (v4 and v6)
        assert_eq!(read_from(&format!("{ip_a}:8080"))?.trim(), "from-a");
        assert_eq!(read_from(&format!("[{ip6_a}]:8080"))?.trim(), "from-a");
        // pod ↔ pod
        assert_eq!(
            sh(&driver, ctr_b, &format!("nc {ip_a} 8080 </dev/null"))?.trim(),
            "from-a"
        );
        serve(&driver, ctr_b, 8081, "from-b")?;
        assert_eq!(
            sh(&driver, ctr_a, &format!("nc {ip_b} 8081 </dev/null"))?.trim(),
            "from-b"
        );
        // host port from the host, from the other pod, and from the pod itself (hairpin)
        let gateway = sh(&driver, ctr_a, "ip -4 route show default | cut -d' ' -f3")?;
        let gateway = gateway.trim();
        assert_eq!(
            read_from(&format!("127.0.0.1:{host_port}"))?.trim(),
            "from-a"
        );
        assert_eq!(
            sh(
                &driver,
                ctr_b,
                &format!("nc {gateway} {host_port} </dev/null")
            )?
            .trim(),
            "from-a"
        );
        assert_eq!(
            sh(
                &driver,
                ctr_a,
                &format!("nc {gateway} {host_port} </dev/null")
            )?
            .trim(),
            "from-a"
        );
        // pod → host: a listener on the bridge address
        let listener = std::net::TcpListener::bind(format!("{gateway}:0"))?;
        let port = listener.local_addr()?.port();
        let accept = std::thread::spawn(move || -> Result<()> {
            let (mut stream, _) = listener.accept()?;
            std::io::Write::write_all(&mut stream, b"from-host\n")?;
            Ok(())
        });
        assert_eq!(
            sh(&driver, ctr_b, &format!("nc {gateway} {port} </dev/null"))?.trim(),
            "from-host"
        );
        accept
            .join()
            .map_err(|_| anyhow::anyhow!("accept thread panicked"))??;
        Ok(())
    })();
    for (pod, ctr) in &pods {
        driver.teardown(pod, std::slice::from_ref(ctr))?;
    }
    result
}
