//! End-to-end tests of `build`: a full spec from CRI + image config + a temp rootfs.

use std::io::Write;
use std::path::Path;

use k8s_cri::v1::{
    security_profile::ProfileType, Capability, ContainerConfig, ContainerMetadata, Int64Value,
    KeyValue, LinuxContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, Mount as CriMount, PodSandboxConfig,
    PodSandboxMetadata, SecurityProfile,
};
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{Capability as Cap, LinuxNamespaceType, LinuxSeccompAction, Spec};

use super::*;

fn host() -> HostFacts {
    HostFacts {
        capabilities: capabilities::every_capability(),
        swap_accounting: true,
        cgroup2: false,
        nofile: DEFAULT_NOFILE,
    }
}

struct Fixture {
    rootfs: tempfile::TempDir,
    container: ContainerConfig,
    sandbox: PodSandboxConfig,
    image: ImageConfiguration,
    namespaces: SandboxNamespaces,
    files: SandboxFiles,
}

impl Fixture {
    fn new() -> Self {
        let rootfs = tempfile::tempdir().unwrap();
        std::fs::create_dir(rootfs.path().join("etc")).unwrap();
        std::fs::write(
            rootfs.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nweb:x:33:33::/var/www:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            rootfs.path().join("etc/group"),
            "root:x:0:\nweb:x:33:\nlog:x:4:web\n",
        )
        .unwrap();
        let image = serde_json::from_value(serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
            "config": {
                "User": "web",
                "Env": ["PATH=/usr/bin:/bin", "LANG=C"],
                "Entrypoint": ["/bin/sh", "-c"],
                "Cmd": ["echo hi"],
                "WorkingDir": "/srv"
            }
        }))
        .unwrap();
        let container = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            annotations: [("user.example/x".to_owned(), "1".to_owned())].into(),
            linux: Some(LinuxContainerConfig {
                resources: Some(LinuxContainerResources {
                    cpu_shares: 256,
                    memory_limit_in_bytes: 32 << 20,
                    oom_score_adj: 500,
                    ..Default::default()
                }),
                security_context: Some(LinuxContainerSecurityContext::default()),
            }),
            ..Default::default()
        };
        let sandbox = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "pod".into(),
                uid: "uid-1".into(),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: "pod-host".into(),
            ..Default::default()
        };
        Self {
            rootfs,
            container,
            sandbox,
            image,
            namespaces: SandboxNamespaces {
                network: Some("/run/capstan/sb/ns/net".into()),
                ipc: Some("/run/capstan/sb/ns/ipc".into()),
                uts: Some("/run/capstan/sb/ns/uts".into()),
                pid: PidNamespace::Container,
            },
            files: SandboxFiles {
                hosts: Some("/run/capstan/sb/etc/hosts".into()),
                hostname: Some("/run/capstan/sb/etc/hostname".into()),
                resolv_conf: Some("/run/capstan/sb/etc/resolv.conf".into()),
                shm: Some("/run/capstan/sb/shm".into()),
            },
        }
    }

    fn sc(&mut self) -> &mut LinuxContainerSecurityContext {
        self.container
            .linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap()
    }

    fn privileged_sandbox(&mut self) {
        self.sandbox.linux = Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                privileged: true,
                ..Default::default()
            }),
            ..Default::default()
        });
    }

    fn build(&self) -> Result<Spec, SpecError> {
        build_with(
            &SpecInput {
                container_id: "c1",
                container: &self.container,
                sandbox: &self.sandbox,
                sandbox_id: "sb1",
                image: &self.image,
                image_ref: "docker.io/library/web:1",
                rootfs: self.rootfs.path(),
                namespaces: self.namespaces.clone(),
                sandbox_files: self.files.clone(),
                cgroups_path: "/capstan/pod-sb1/c1".into(),
            },
            &host(),
        )
    }
}

#[test]
fn full_spec_serializes_with_expected_keys() {
    let spec = Fixture::new().build().unwrap();
    let json = serde_json::to_value(&spec).unwrap();
    assert_eq!(json["ociVersion"], OCI_VERSION);
    assert_eq!(json["root"]["path"], "rootfs");
    assert_eq!(json["root"]["readonly"], false);
    assert_eq!(json["hostname"], "pod-host");
    let p = &json["process"];
    assert_eq!(p["args"], serde_json::json!(["/bin/sh", "-c", "echo hi"]));
    assert_eq!(p["cwd"], "/srv");
    assert_eq!(p["terminal"], false);
    assert_eq!(p["user"]["uid"], 33);
    assert_eq!(p["user"]["gid"], 33);
    assert_eq!(p["user"]["additionalGids"], serde_json::json!([33, 4]));
    assert_eq!(
        p["env"],
        serde_json::json!([
            "PATH=/usr/bin:/bin",
            "LANG=C",
            "HOSTNAME=pod-host",
            "HOME=/var/www"
        ])
    );
    assert_eq!(p["oomScoreAdj"], 500);
    assert_eq!(p["noNewPrivileges"], false);
    assert_eq!(
        p["rlimits"],
        serde_json::json!([{"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576}])
    );
    assert!(p["capabilities"]["bounding"]
        .as_array()
        .unwrap()
        .contains(&"CAP_NET_BIND_SERVICE".into()));
    let linux = &json["linux"];
    assert_eq!(linux["cgroupsPath"], "/capstan/pod-sb1/c1");
    assert_eq!(linux["resources"]["cpu"]["shares"], 256);
    assert_eq!(linux["resources"]["memory"]["limit"], 32 << 20);
    assert_eq!(linux["resources"]["devices"][0]["allow"], false);
    assert_eq!(linux["namespaces"][0], serde_json::json!({"type": "pid"}));
    assert_eq!(
        linux["namespaces"][1],
        serde_json::json!({"type": "network", "path": "/run/capstan/sb/ns/net"})
    );
    assert_eq!(linux["maskedPaths"].as_array().unwrap().len(), 11);
    assert_eq!(linux["readonlyPaths"][3], "/proc/sys");
    assert!(linux.get("seccomp").is_none());
    assert!(linux.get("sysctl").is_none());
    let mounts = json["mounts"].as_array().unwrap();
    assert_eq!(mounts[0]["destination"], "/proc");
    assert!(mounts
        .iter()
        .any(|m| m["destination"] == "/etc/resolv.conf" && m["type"] == "bind"));
    let ann = &json["annotations"];
    assert_eq!(ann["io.kubernetes.cri.container-type"], "container");
    assert_eq!(ann["io.kubernetes.cri.sandbox-id"], "sb1");
    assert_eq!(ann["io.kubernetes.cri.container-name"], "app");
    assert_eq!(
        ann["io.kubernetes.cri.image-name"],
        "docker.io/library/web:1"
    );
    assert_eq!(ann["io.kubernetes.cri.sandbox-namespace"], "default");
    assert_eq!(ann["user.example/x"], "1");

    // And it round-trips as a config.json the executor reads back.
    let text = serde_json::to_string_pretty(&spec).unwrap();
    let back: Spec = serde_json::from_str(&text).unwrap();
    assert_eq!(back, spec);
}

#[test]
fn cri_overrides_image_settings() {
    let mut f = Fixture::new();
    f.container.command = vec!["/app".into()];
    f.container.args = vec!["--flag".into()];
    f.container.working_dir = "/data".into();
    f.container.tty = true;
    f.container.envs = vec![KeyValue {
        key: "LANG".into(),
        value: "en_US.UTF-8".into(),
    }];
    f.sc().run_as_user = Some(Int64Value { value: 0 });
    f.sc().no_new_privs = true;
    f.sc().readonly_rootfs = true;
    let spec = f.build().unwrap();
    let p = spec.process().as_ref().unwrap();
    assert_eq!(
        p.args().as_deref(),
        Some(&["/app".to_owned(), "--flag".into()][..])
    );
    assert_eq!(p.cwd(), Path::new("/data"));
    assert_eq!(p.terminal(), Some(true));
    assert_eq!(p.no_new_privileges(), Some(true));
    assert!(p
        .env()
        .as_ref()
        .unwrap()
        .contains(&"LANG=en_US.UTF-8".to_owned()));
    assert_eq!((p.user().uid(), p.user().gid()), (0, 0));
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
}

#[test]
fn annotations_cannot_forge_runtime_keys() {
    let mut f = Fixture::new();
    f.container
        .annotations
        .insert(ANNOTATION_CONTAINER_TYPE.into(), "sandbox".into());
    let spec = f.build().unwrap();
    assert_eq!(
        spec.annotations().as_ref().unwrap()[ANNOTATION_CONTAINER_TYPE],
        "container"
    );
}

#[test]
fn host_namespaces_and_hostname() {
    let mut f = Fixture::new();
    f.namespaces = SandboxNamespaces {
        network: None,
        ipc: None,
        uts: None,
        pid: PidNamespace::Node,
    };
    let spec = f.build().unwrap();
    assert_eq!(spec.hostname(), &None);
    let ns = spec
        .linux()
        .as_ref()
        .unwrap()
        .namespaces()
        .as_ref()
        .unwrap();
    assert_eq!(ns.len(), 1);
    assert_eq!(ns[0].typ(), LinuxNamespaceType::Mount);
    assert!(spec
        .process()
        .as_ref()
        .unwrap()
        .env()
        .as_ref()
        .unwrap()
        .contains(&"HOSTNAME=pod-host".to_owned()));
}

#[test]
fn masked_and_readonly_overrides() {
    let mut f = Fixture::new();
    f.sc().masked_paths = vec!["/proc/custom".into()];
    f.sc().readonly_paths = vec!["/proc/ro".into()];
    let spec = f.build().unwrap();
    let linux = spec.linux().as_ref().unwrap();
    assert_eq!(
        linux.masked_paths().as_deref(),
        Some(&["/proc/custom".to_owned()][..])
    );
    assert_eq!(
        linux.readonly_paths().as_deref(),
        Some(&["/proc/ro".to_owned()][..])
    );
}

#[test]
fn privileged_container() {
    let mut f = Fixture::new();
    f.sc().privileged = true;
    f.sc().seccomp = Some(SecurityProfile {
        profile_type: ProfileType::RuntimeDefault as i32,
        localhost_ref: String::new(),
    });
    f.sc().capabilities = Some(Capability {
        drop_capabilities: vec!["ALL".into()],
        ..Default::default()
    });
    // A privileged container needs a privileged sandbox.
    let err = f.build().unwrap_err();
    assert!(err.to_string().contains("privileged"), "{err}");
    f.privileged_sandbox();
    let spec = f.build().unwrap();
    let linux = spec.linux().as_ref().unwrap();
    assert!(linux.masked_paths().is_none() && linux.readonly_paths().is_none());
    assert!(linux.seccomp().is_none());
    let caps = spec
        .process()
        .as_ref()
        .unwrap()
        .capabilities()
        .clone()
        .unwrap();
    assert_eq!(caps.bounding().as_ref().unwrap().len(), 41);
    assert!(caps.effective().as_ref().unwrap().contains(&Cap::SysAdmin));
    let devices = linux.devices().as_ref().unwrap();
    assert!(devices.iter().any(|d| d.path() == Path::new("/dev/null")));
    let rules = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .as_ref()
        .unwrap();
    assert!(rules.len() == 1 && rules[0].allow());
    let sys = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new("/sys"))
        .unwrap();
    assert!(!sys.options().as_ref().unwrap().contains(&"ro".to_owned()));
}

#[test]
fn seccomp_modes() {
    let mut f = Fixture::new();
    f.sc().seccomp = Some(SecurityProfile {
        profile_type: ProfileType::RuntimeDefault as i32,
        localhost_ref: String::new(),
    });
    let spec = f.build().unwrap();
    let seccomp = spec.linux().as_ref().unwrap().seccomp().clone().unwrap();
    assert_eq!(seccomp.default_action(), LinuxSeccompAction::ScmpActAllow);
    assert!(!seccomp.syscalls().as_ref().unwrap().is_empty());

    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(br#"{"defaultAction": "SCMP_ACT_LOG", "syscalls": [{"names": ["reboot"], "action": "SCMP_ACT_ERRNO"}]}"#)
        .unwrap();
    f.sc().seccomp = Some(SecurityProfile {
        profile_type: ProfileType::Localhost as i32,
        localhost_ref: file.path().display().to_string(),
    });
    let spec = f.build().unwrap();
    let seccomp = spec.linux().as_ref().unwrap().seccomp().clone().unwrap();
    assert_eq!(seccomp.default_action(), LinuxSeccompAction::ScmpActLog);

    f.sc().seccomp = Some(SecurityProfile {
        profile_type: ProfileType::Localhost as i32,
        localhost_ref: "/nonexistent/capstan-seccomp.json".into(),
    });
    let err = f.build().unwrap_err();
    assert!(
        err.to_string()
            .contains("/nonexistent/capstan-seccomp.json"),
        "{err}"
    );

    f.sc().seccomp = Some(SecurityProfile {
        profile_type: ProfileType::Unconfined as i32,
        localhost_ref: String::new(),
    });
    assert!(f
        .build()
        .unwrap()
        .linux()
        .as_ref()
        .unwrap()
        .seccomp()
        .is_none());
}

#[test]
fn cri_mount_and_errors_surface() {
    let mut f = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    f.container.mounts = vec![CriMount {
        container_path: "/data".into(),
        host_path: dir.path().display().to_string(),
        readonly: true,
        ..Default::default()
    }];
    let spec = f.build().unwrap();
    let data = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new("/data"))
        .unwrap()
        .clone();
    assert_eq!(
        data.options().as_ref().unwrap(),
        &["rbind", "rprivate", "ro"]
    );

    f.container.mounts[0].host_path = "/nonexistent/capstan-vol".into();
    assert_eq!(
        f.build().unwrap_err().to_string(),
        "mount source /nonexistent/capstan-vol does not exist"
    );
}

#[test]
fn user_and_command_errors_surface() {
    let mut f = Fixture::new();
    f.sc().run_as_username = "nobody-in-image".into();
    assert!(matches!(f.build(), Err(SpecError::UnknownUser(n)) if n == "nobody-in-image"));

    let mut f = Fixture::new();
    f.image = serde_json::from_value(serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []}
    }))
    .unwrap();
    assert!(matches!(f.build(), Err(SpecError::NoCommand)));
}

#[test]
fn cgroup_namespace_on_cgroup2_hosts() {
    let f = Fixture::new();
    let input = SpecInput {
        container_id: "c1",
        container: &f.container,
        sandbox: &f.sandbox,
        sandbox_id: "sb1",
        image: &f.image,
        image_ref: "img",
        rootfs: f.rootfs.path(),
        namespaces: f.namespaces.clone(),
        sandbox_files: f.files.clone(),
        cgroups_path: "/x".into(),
    };
    let v2 = HostFacts {
        cgroup2: true,
        ..host()
    };
    let spec = build_with(&input, &v2).unwrap();
    let ns = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
    assert!(ns.iter().any(|n| n.typ() == LinuxNamespaceType::Cgroup));
    // detection on the real host produces a usable spec too
    build(&input).unwrap();
}

#[test]
fn nofile_limit_is_grantable() {
    let nofile = HostFacts::detect().nofile;
    assert!(nofile > 0 && nofile <= DEFAULT_NOFILE);
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let can_raise = caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_RESOURCE,
    )
    .unwrap();
    if !can_raise {
        assert!(nofile <= hard);
    }
}

/// Removes the runc container (and so its cgroup) even when the test fails.
struct RuncContainer {
    state_root: std::path::PathBuf,
    id: String,
}

impl Drop for RuncContainer {
    fn drop(&mut self) {
        let _ = std::process::Command::new("runc")
            .arg("--root")
            .arg(&self.state_root)
            .args(["delete", "--force", &self.id])
            .output();
    }
}

fn runc_available() -> bool {
    let runc_present = std::process::Command::new("runc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let ok = runc_present && Path::new("/bin/busybox").exists() && nix::unistd::geteuid().is_root();
    if !ok {
        eprintln!("skipping: needs root, runc and /bin/busybox");
    }
    ok
}

/// Build the spec of `f` with `script` as its command over a busybox rootfs, run it with
/// runc and return its stdout.
fn run_with_runc(mut f: Fixture, script: &str) -> String {
    let bundle = tempfile::tempdir().unwrap();
    let rootfs = bundle.path().join("rootfs");
    for dir in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(rootfs.join(dir)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "id", "grep", "cat", "unshare", "mount", "ls"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nweb:x:33:33::/:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(rootfs.join("etc/group"), "web:x:33:\nlog:x:4:web\n").unwrap();
    let pod = bundle.path().join("pod");
    std::fs::create_dir_all(pod.join("shm")).unwrap();
    std::fs::write(pod.join("hosts"), "127.0.0.1 localhost\n").unwrap();
    std::fs::write(pod.join("hostname"), "pod-host\n").unwrap();
    std::fs::write(pod.join("resolv.conf"), "nameserver 127.0.0.1\n").unwrap();

    f.container.command = vec!["/bin/sh".into(), "-c".into(), script.into()];
    let id = format!(
        "capstan-spec-test-{}-{}",
        std::process::id(),
        bundle.path().file_name().unwrap().to_string_lossy()
    );
    let input = SpecInput {
        container_id: &id,
        container: &f.container,
        sandbox: &f.sandbox,
        sandbox_id: "sb",
        image: &f.image,
        image_ref: "busybox",
        rootfs: &rootfs,
        namespaces: SandboxNamespaces {
            network: None,
            ipc: None,
            uts: None,
            pid: PidNamespace::Container,
        },
        sandbox_files: SandboxFiles {
            hosts: Some(pod.join("hosts")),
            hostname: Some(pod.join("hostname")),
            resolv_conf: Some(pod.join("resolv.conf")),
            shm: Some(pod.join("shm")),
        },
        cgroups_path: format!("/{id}"),
    };
    let spec = build(&input).unwrap();
    std::fs::write(
        bundle.path().join("config.json"),
        serde_json::to_vec_pretty(&spec).unwrap(),
    )
    .unwrap();

    let state_root = bundle.path().join("runc-state");
    let _guard = RuncContainer {
        state_root: state_root.clone(),
        id: id.clone(),
    };
    let out = std::process::Command::new("runc")
        .arg("--root")
        .arg(&state_root)
        .args(["run", "--bundle"])
        .arg(bundle.path())
        .arg(&id)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "runc failed: {stderr}\n{stdout}");
    stdout
}

/// The spec is complete enough for runc itself: a busybox shell runs as the image user
/// under the default seccomp profile, which blocks user namespaces and mounts.
#[test]
fn runc_runs_the_generated_spec() {
    if !runc_available() {
        return;
    }
    let mut f = Fixture::new();
    f.image = serde_json::from_value(serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
        "config": {"User": "web"}
    }))
    .unwrap();
    f.sc().seccomp = Some(SecurityProfile {
        profile_type: ProfileType::RuntimeDefault as i32,
        localhost_ref: String::new(),
    });
    let stdout = run_with_runc(
        f,
        "id -u; id -G; grep '^Seccomp:' /proc/self/status; cat /etc/hostname; \
         unshare -U true 2>/dev/null && echo unshare-ok || echo unshare-denied; \
         cat /proc/kcore 2>/dev/null | grep -c . ; echo done",
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "33",
            "33 4",
            "Seccomp:\t2",
            "pod-host",
            "unshare-denied",
            "0",
            "done"
        ]
    );
}

/// A privileged container runs unconfined with every capability and the host's devices.
#[test]
fn runc_runs_a_privileged_spec() {
    if !runc_available() {
        return;
    }
    let mut f = Fixture::new();
    f.privileged_sandbox();
    f.sc().privileged = true;
    f.sc().run_as_user = Some(Int64Value { value: 0 });
    let stdout = run_with_runc(
        f,
        "grep -E '^(Seccomp|CapEff):' /proc/self/status; \
         mount -t tmpfs none /tmp && echo mount-ok; ls /dev/null >/dev/null && echo dev-ok",
    );
    let lines: Vec<&str> = stdout.lines().collect();
    // Every capability the runtime holds (here this test process).
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let bnd = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim();
    assert_eq!(lines[0], format!("CapEff:\t{bnd}"));
    assert_eq!(lines[1..], ["Seccomp:\t0", "mount-ok", "dev-ok"]);
}
