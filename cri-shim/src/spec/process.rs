//! The process to run: arguments, environment and working directory, merged from the CRI
//! config and the image config.

use k8s_cri::v1::ContainerConfig;
use oci_spec::image::ImageConfiguration;

use super::SpecError;

/// PATH for images that define none.
pub(crate) const DEFAULT_PATH: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `command` replaces the image's Entrypoint (and drops its Cmd); `args` alone replace Cmd;
/// neither keeps Entrypoint + Cmd (the Kubernetes/Docker rules).
pub(crate) fn args(
    container: &ContainerConfig,
    image: &ImageConfiguration,
) -> Result<Vec<String>, SpecError> {
    let config = image.config().as_ref();
    let entrypoint = config
        .and_then(|c| c.entrypoint().as_deref())
        .unwrap_or_default();
    let cmd = config.and_then(|c| c.cmd().as_deref()).unwrap_or_default();
    let args: Vec<String> = if !container.command.is_empty() {
        container
            .command
            .iter()
            .chain(&container.args)
            .cloned()
            .collect()
    } else if !container.args.is_empty() {
        entrypoint.iter().chain(&container.args).cloned().collect()
    } else {
        entrypoint.iter().chain(cmd).cloned().collect()
    };
    if args.is_empty() || args[0].is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(args)
}

/// Default PATH, then the image's Env, HOSTNAME, then the CRI envs; a later variable
/// replaces an earlier one of the same name in place. HOME comes from /etc/passwd when
/// nothing set it (what runc would do; written out so every executor agrees).
pub(crate) fn env(
    container: &ContainerConfig,
    image: &ImageConfiguration,
    hostname: &str,
    home: &str,
) -> Vec<String> {
    let mut env = vec![DEFAULT_PATH.to_owned()];
    let image_env = image
        .config()
        .as_ref()
        .and_then(|c| c.env().as_deref())
        .unwrap_or_default();
    for entry in image_env {
        set_env(&mut env, entry.clone());
    }
    set_env(&mut env, format!("HOSTNAME={hostname}"));
    for kv in &container.envs {
        set_env(&mut env, format!("{}={}", kv.key, kv.value));
    }
    if !env.iter().any(|e| env_key(e) == "HOME") {
        env.push(format!("HOME={home}"));
    }
    env
}

fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

fn set_env(env: &mut Vec<String>, entry: String) {
    let key = env_key(&entry);
    match env.iter_mut().find(|e| env_key(e) == key) {
        Some(existing) => *existing = entry,
        None => env.push(entry),
    }
}

/// CRI working_dir, else the image's WorkingDir, else `/`.
pub(crate) fn cwd(
    container: &ContainerConfig,
    image: &ImageConfiguration,
) -> Result<String, SpecError> {
    if !container.working_dir.is_empty() {
        if !container.working_dir.starts_with('/') {
            return Err(SpecError::field(
                "working_dir",
                format!("{:?} is not an absolute path", container.working_dir),
            ));
        }
        return Ok(container.working_dir.clone());
    }
    let image_dir = image
        .config()
        .as_ref()
        .and_then(|c| c.working_dir().as_deref())
        .unwrap_or_default();
    Ok(match image_dir {
        "" => "/".to_owned(),
        dir if dir.starts_with('/') => dir.to_owned(),
        // Docker treats a relative WORKDIR as relative to /.
        dir => format!("/{dir}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::KeyValue;

    fn image(config: serde_json::Value) -> ImageConfiguration {
        serde_json::from_value(serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
            "config": config,
        }))
        .unwrap()
    }

    fn container(command: &[&str], args: &[&str]) -> ContainerConfig {
        ContainerConfig {
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn command_and_args_precedence() {
        let img = image(serde_json::json!({"Entrypoint": ["/ep"], "Cmd": ["c1", "c2"]}));
        assert_eq!(
            args(&container(&[], &[]), &img).unwrap(),
            ["/ep", "c1", "c2"]
        );
        assert_eq!(args(&container(&[], &["a"]), &img).unwrap(), ["/ep", "a"]);
        assert_eq!(args(&container(&["/cmd"], &[]), &img).unwrap(), ["/cmd"]);
        assert_eq!(
            args(&container(&["/cmd", "x"], &["a"]), &img).unwrap(),
            ["/cmd", "x", "a"]
        );
        let cmd_only = image(serde_json::json!({"Cmd": ["/bin/sh"]}));
        assert_eq!(args(&container(&[], &[]), &cmd_only).unwrap(), ["/bin/sh"]);
        assert_eq!(args(&container(&[], &["/x"]), &cmd_only).unwrap(), ["/x"]);
    }

    #[test]
    fn no_command_is_an_error() {
        let img = image(serde_json::json!({}));
        let err = args(&container(&[], &[]), &img).unwrap_err();
        assert_eq!(err.to_string(), "no command specified");
        let no_config: ImageConfiguration = serde_json::from_value(serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []}
        }))
        .unwrap();
        assert!(matches!(
            args(&container(&[], &[]), &no_config),
            Err(SpecError::NoCommand)
        ));
    }

    #[test]
    fn env_merging() {
        let img = image(serde_json::json!({"Env": ["PATH=/img/bin", "A=1", "B=2"]}));
        let mut c = container(&[], &[]);
        c.envs = vec![
            KeyValue {
                key: "B".into(),
                value: "cri".into(),
            },
            KeyValue {
                key: "C".into(),
                value: "x=y".into(),
            },
        ];
        let env = env(&c, &img, "pod-1", "/root");
        assert_eq!(
            env,
            [
                "PATH=/img/bin",
                "A=1",
                "B=cri",
                "HOSTNAME=pod-1",
                "C=x=y",
                "HOME=/root"
            ]
        );
    }

    #[test]
    fn env_defaults_and_home_override() {
        let img = image(serde_json::json!({}));
        let mut c = container(&[], &[]);
        c.envs = vec![KeyValue {
            key: "HOME".into(),
            value: "/data".into(),
        }];
        let env = env(&c, &img, "h", "/root");
        assert_eq!(env, [DEFAULT_PATH, "HOSTNAME=h", "HOME=/data"]);
    }

    #[test]
    fn working_directory() {
        let img = image(serde_json::json!({"WorkingDir": "/srv"}));
        assert_eq!(cwd(&container(&[], &[]), &img).unwrap(), "/srv");
        let mut c = container(&[], &[]);
        c.working_dir = "/work".into();
        assert_eq!(cwd(&c, &img).unwrap(), "/work");
        c.working_dir = "rel".into();
        assert!(cwd(&c, &img)
            .unwrap_err()
            .to_string()
            .contains("working_dir"));
        let img = image(serde_json::json!({}));
        assert_eq!(cwd(&container(&[], &[]), &img).unwrap(), "/");
        let img = image(serde_json::json!({"WorkingDir": "app"}));
        assert_eq!(cwd(&container(&[], &[]), &img).unwrap(), "/app");
    }
}
