//! The pod harness itself, checked against containerd's CRI plugin (the peer runtime): a
//! pod started through `CriDriver` gets an address on the `PodNetwork`, runs commands with
//! ExecSync, and leaves nothing behind (sandboxes, cgroups, bridge) once torn down.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Result};
use tests::binaries::require_root;
use tests::containerd::Containerd;
use tests::cri_driver::CriDriver;
use tests::podnet::Impl;
use tests::pods::{PodEnv, PodImages, PodNetwork, ENV_LABEL};

#[test]
fn containerd_runs_a_pod_on_the_reference_network() -> Result<()> {
    require_root()?;
    let images = PodImages::start()?;
    let net = PodNetwork::reference()?;
    let env = PodEnv::new()?;
    let bridge = net.bridge().to_owned();
    let cgroup = Path::new("/sys/fs/cgroup/memory").join(env.id());
    {
        let containerd = Containerd::start_pods(&[images.registry().host()], &net, images.pause())?;
        let cri = CriDriver::connect(&containerd.socket())?;
        assert_eq!(cri.version()?.runtime_name, "containerd");
        cri.pull_image(images.busybox())?;
        cri.pull_image(images.pause())?;

        let (pod, ctr) = cri.start_pod(&env, "harness", images.busybox(), &["sleep", "3600"])?;
        let ip = cri.sandbox_ip(&pod)?;
        assert!(net.contains(&ip), "{ip} not in {}", net.subnet());
        assert!(
            cgroup.is_dir(),
            "pod cgroups are not under {}",
            cgroup.display()
        );

        let out = cri.exec_sync(&ctr, &["ip", "-4", "addr", "show", "eth0"], 10)?;
        assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
        let addrs = String::from_utf8_lossy(&out.stdout);
        assert!(addrs.contains(&format!("inet {ip}/24")), "{addrs}");
        let out = cri.exec_sync(&ctr, &["sh", "-c", "echo out; echo err >&2; exit 3"], 10)?;
        assert_eq!(
            (out.exit_code, &out.stdout[..], &out.stderr[..]),
            (3, &b"out\n"[..], &b"err\n"[..])
        );

        let mine = Some((ENV_LABEL, env.id()));
        assert_eq!(cri.list_sandboxes(mine)?.len(), 1);
        assert_eq!(cri.list_containers(Some(&pod))?.len(), 1);
        cri.teardown(&pod, &[ctr])?;
        assert!(cri.list_sandboxes(mine)?.is_empty());

        let took = cri.cycle(&env, images.busybox())?;
        ensure!(
            took > Duration::ZERO && took < Duration::from_secs(30),
            "cycle took {took:?}"
        );
        assert!(cri.list_sandboxes(mine)?.is_empty());
        assert!(cri.list_containers(None)?.is_empty());
    }
    assert!(
        tests::netns::link_exists(&bridge),
        "the bridge was never made"
    );
    drop(env);
    assert!(!cgroup.exists(), "{} left behind", cgroup.display());
    drop(net);
    assert!(
        !tests::netns::link_exists(&bridge),
        "bridge {bridge} left behind"
    );
    Ok(())
}

#[test]
fn pod_network_conflist_names_unique_resources() -> Result<()> {
    let a = PodNetwork::reference()?;
    let b = PodNetwork::reference()?;
    assert_ne!(a.bridge(), b.bridge());
    assert_ne!(a.subnet(), b.subnet());
    let files: Vec<_> = std::fs::read_dir(a.conf_dir())?.collect::<Result<_, _>>()?;
    assert_eq!(files.len(), 1);
    let conflist: serde_json::Value = serde_json::from_slice(&std::fs::read(files[0].path())?)?;
    assert_eq!(conflist["plugins"][0]["bridge"], a.bridge());
    assert_eq!(
        conflist["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
        a.subnet()
    );
    assert_eq!(conflist["plugins"][1]["capabilities"]["portMappings"], true);
    let host = a.subnet().trim_end_matches("0/24");
    assert!(a.contains(&format!("{host}7")));
    assert!(!a.contains(&format!("{host}0")) && !a.contains(&format!("{host}255")));
    assert!(!a.contains(&format!("{}7", b.subnet().trim_end_matches("0/24"))));
    assert_eq!(
        conflist["plugins"][0]["ipam"]["ranges"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    let dual = PodNetwork::new(Impl::Reference, true)?;
    let v6 = dual
        .subnet_v6()
        .expect("a dual-stack network has an IPv6 subnet");
    let ipam = &dual.conflist()["plugins"][0]["ipam"];
    assert_eq!(ipam["ranges"][1][0]["subnet"], v6);
    assert_eq!(ipam["routes"][1]["dst"], "::/0");
    Ok(())
}
