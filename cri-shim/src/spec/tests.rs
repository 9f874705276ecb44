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

const HOST: HostFacts = HostFacts {
    last_cap: 40,
    swap_accounting: true,
    cgroup2: false,
};

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
            &HOST,
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
        ..HOST
    };
    let spec = build_with(&input, &v2).unwrap();
    let ns = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
    assert!(ns.iter().any(|n| n.typ() == LinuxNamespaceType::Cgroup));
    // detection on the real host produces a usable spec too
    build(&input).unwrap();
}
