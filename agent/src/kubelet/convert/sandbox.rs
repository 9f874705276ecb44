//! `PodSandboxConfig` (`generatePodSandboxConfig`): identity, hostname, logs, DNS, ports,
//! and the Linux part (cgroup, security, sysctls, resources).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use k8s_cri::v1::{
    LinuxPodSandboxConfig, PodSandboxConfig, PodSandboxMetadata, PortMapping, Protocol,
};
use k8s_openapi::api::core::v1::Pod;

use super::dns::pod_dns_config;
use super::error::ConvertError;
use super::labels::{sandbox_annotations, sandbox_labels};
use super::resources::sandbox_resources;
use super::security::sandbox_security_context;
use super::PodContext;

const HOSTNAME_MAX: usize = 63;
const FQDN_MAX: usize = 64;

/// The pod's sandbox config for RunPodSandbox; `attempt` counts sandbox re-creations.
pub fn sandbox_config(
    pod: &Pod,
    ctx: &PodContext,
    attempt: u32,
) -> Result<PodSandboxConfig, ConvertError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    // With the host's network the pod has the host's UTS namespace: no hostname to set.
    let hostname = if host_network {
        String::new()
    } else {
        let (hostname, domain) = pod_hostname_and_domain(pod, &ctx.node.dns.cluster_domain)?;
        kernel_hostname(hostname, &domain, spec.and_then(|s| s.set_hostname_as_fqdn))?
    };
    let sysctls = spec
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.sysctls.as_ref())
        .into_iter()
        .flatten()
        .map(|s| (s.name.clone(), s.value.clone()))
        .collect();
    let (resources, overhead) = sandbox_resources(pod, &ctx.node)?;
    Ok(PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            attempt,
        }),
        hostname,
        log_directory: ctx.pod_log_dir.display().to_string(),
        dns_config: Some(pod_dns_config(pod, &ctx.node.dns, &ctx.node.host_ips)),
        port_mappings: port_mappings(pod),
        labels: sandbox_labels(pod),
        annotations: sandbox_annotations(pod),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: ctx.cgroup_parent.clone(),
            security_context: Some(sandbox_security_context(pod)?),
            sysctls,
            overhead: Some(overhead),
            resources: Some(resources),
        }),
        windows: None,
    })
}

/// `<pod_logs_root>/<ns>_<name>_<uid>`, refusing names that would leave the directory.
pub fn pod_log_directory(pod_logs_root: &Path, pod: &Pod) -> Result<PathBuf, ConvertError> {
    let meta = &pod.metadata;
    let parts = [
        ("metadata.namespace", &meta.namespace),
        ("metadata.name", &meta.name),
        ("metadata.uid", &meta.uid),
    ];
    let mut names = Vec::with_capacity(3);
    for (field, value) in parts {
        let value = value.as_deref().unwrap_or_default();
        if value.is_empty() || value.contains(['/', '\0']) {
            return Err(ConvertError::invalid(
                field,
                format!("{value:?} cannot be part of a log directory name"),
            ));
        }
        names.push(value);
    }
    Ok(pod_logs_root.join(names.join("_")))
}

/// `GeneratePodHostNameAndDomain`: spec.hostname or the pod name (cut to 63 characters),
/// and `<subdomain>.<ns>.svc.<cluster domain>` when spec.subdomain is set.
pub fn pod_hostname_and_domain(
    pod: &Pod,
    cluster_domain: &str,
) -> Result<(String, String), ConvertError> {
    let spec = pod.spec.as_ref();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let hostname = match spec
        .and_then(|s| s.hostname.as_deref())
        .filter(|h| !h.is_empty())
    {
        Some(h) => {
            check_dns_label("spec.hostname", h)?;
            h
        }
        None => name,
    };
    let hostname = if hostname.len() <= HOSTNAME_MAX {
        hostname.to_owned()
    } else {
        let mut cut = HOSTNAME_MAX;
        while !hostname.is_char_boundary(cut) {
            cut -= 1;
        }
        let truncated = hostname[..cut].trim_end_matches(['-', '.']);
        if truncated.is_empty() {
            return Err(ConvertError::invalid(
                "metadata.name",
                format!("hostname for pod {name:?} was invalid: {hostname:?}"),
            ));
        }
        truncated.to_owned()
    };
    let domain = match spec
        .and_then(|s| s.subdomain.as_deref())
        .filter(|d| !d.is_empty())
    {
        Some(sub) => {
            check_dns_label("spec.subdomain", sub)?;
            let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
            format!("{sub}.{namespace}.svc.{cluster_domain}")
        }
        None => String::new(),
    };
    Ok((hostname, domain))
}

/// `GetNodenameForKernel`: the FQDN when setHostnameAsFQDN, if it fits in 64 characters.
fn kernel_hostname(
    hostname: String,
    domain: &str,
    as_fqdn: Option<bool>,
) -> Result<String, ConvertError> {
    if domain.is_empty() || as_fqdn != Some(true) {
        return Ok(hostname);
    }
    let fqdn = format!("{hostname}.{domain}");
    if fqdn.len() > FQDN_MAX {
        return Err(ConvertError::invalid(
            "spec.setHostnameAsFQDN",
            format!(
                "FQDN {fqdn} is too long ({FQDN_MAX} characters is the max, {} characters requested)",
                fqdn.len()
            ),
        ));
    }
    Ok(fqdn)
}

/// RFC 1123 label: lower-case alphanumerics and '-', 1 to 63 characters, alphanumeric ends.
fn check_dns_label(field: &str, value: &str) -> Result<(), ConvertError> {
    let bytes = value.as_bytes();
    let edge_ok = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let ok = value.len() <= HOSTNAME_MAX
        && edge_ok(bytes.first())
        && edge_ok(bytes.last())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ConvertError::invalid(
            field,
            format!("{value:?} is not a valid DNS label"),
        ))
    }
}

/// Every port of the app containers (`MakePortMappings`); runtimes publish those with a
/// hostPort. A port repeated under the same name (or same family/protocol/IP/ports when
/// unnamed) within a container is kept once.
pub fn port_mappings(pod: &Pod) -> Vec<PortMapping> {
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let mut out = Vec::new();
    for container in containers {
        let mut names = HashSet::new();
        for port in container.ports.iter().flatten() {
            let host_ip = port.host_ip.clone().unwrap_or_default();
            let host_port = port.host_port.unwrap_or(0);
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            let family = match host_ip.as_str() {
                "" => "any",
                ip if ip.contains(':') => "v6",
                _ => "v4",
            };
            let name = match port.name.as_deref().filter(|n| !n.is_empty()) {
                Some(n) => n.to_owned(),
                None => format!(
                    "{family}-{protocol}-{host_ip}:{}:{host_port}",
                    port.container_port
                ),
            };
            if !names.insert(name) {
                continue;
            }
            let protocol = match protocol {
                "UDP" => Protocol::Udp,
                "SCTP" => Protocol::Sctp,
                _ => Protocol::Tcp,
            };
            out.push(PortMapping {
                protocol: protocol as i32,
                container_port: port.container_port,
                host_port,
                host_ip,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests;
