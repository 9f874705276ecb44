//! Per-sandbox files the containers bind-mount: /etc/hosts, /etc/hostname,
//! /etc/resolv.conf, and the pod's shared /dev/shm.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use k8s_cri::v1::DnsConfig;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Size of a pod's /dev/shm (the container runtime default).
const SHM_SIZE: &str = "65536k";

/// Paths of one sandbox's files.
#[derive(Debug, Clone)]
pub struct SandboxFiles {
    /// /etc/hosts.
    pub hosts: PathBuf,
    /// /etc/hostname.
    pub hostname: PathBuf,
    /// /etc/resolv.conf.
    pub resolv_conf: PathBuf,
    /// Mount point of the pod's /dev/shm tmpfs.
    pub shm: PathBuf,
}

impl SandboxFiles {
    /// The files under a sandbox's run directory.
    pub fn under(run_dir: &Path) -> Self {
        let etc = run_dir.join("etc");
        Self {
            hosts: etc.join("hosts"),
            hostname: etc.join("hostname"),
            resolv_conf: etc.join("resolv.conf"),
            shm: run_dir.join("shm"),
        }
    }

    /// Write hosts, hostname and resolv.conf. Host-network pods see the host's hosts file.
    pub fn write(
        &self,
        hostname: &str,
        dns: Option<&DnsConfig>,
        host_network: bool,
    ) -> io::Result<()> {
        if let Some(etc) = self.hosts.parent() {
            std::fs::create_dir_all(etc)?;
        }
        std::fs::write(&self.hostname, format!("{hostname}\n"))?;
        let hosts = if host_network {
            std::fs::read_to_string("/etc/hosts").unwrap_or_else(|_| default_hosts())
        } else {
            default_hosts()
        };
        std::fs::write(&self.hosts, hosts)?;
        let resolv = match dns.filter(|d| !d.servers.is_empty() || !d.searches.is_empty()) {
            Some(dns) => resolv_conf(dns),
            None => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        };
        std::fs::write(&self.resolv_conf, resolv)
    }

    /// Mount the pod's /dev/shm tmpfs.
    pub fn mount_shm(&self) -> io::Result<()> {
        std::fs::create_dir_all(&self.shm)?;
        mount(
            Some("shm"),
            &self.shm,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(format!("mode=1777,size={SHM_SIZE}").as_str()),
        )
        .map_err(|e| io::Error::other(format!("mounting {}: {e}", self.shm.display())))
    }

    /// Unmount /dev/shm; not mounted is fine.
    pub fn unmount_shm(&self) -> io::Result<()> {
        match umount2(&self.shm, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => Ok(()),
            Err(e) => Err(io::Error::other(format!(
                "unmounting {}: {e}",
                self.shm.display()
            ))),
        }
    }
}

fn default_hosts() -> String {
    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n".to_owned()
}

/// resolv.conf from the CRI DNS config.
pub fn resolv_conf(dns: &DnsConfig) -> String {
    let mut out = String::new();
    if !dns.searches.is_empty() {
        let _ = writeln!(out, "search {}", dns.searches.join(" "));
    }
    for server in &dns.servers {
        let _ = writeln!(out, "nameserver {server}");
    }
    if !dns.options.is_empty() {
        let _ = writeln!(out, "options {}", dns.options.join(" "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_lists_search_servers_options() {
        let dns = DnsConfig {
            servers: vec!["10.96.0.10".into(), "1.1.1.1".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(&dns),
            "search default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\nnameserver 1.1.1.1\noptions ndots:5\n"
        );
    }

    #[test]
    fn files_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let files = SandboxFiles::under(dir.path());
        let dns = DnsConfig {
            servers: vec!["10.0.0.10".into()],
            ..Default::default()
        };
        files.write("web-0", Some(&dns), false).unwrap();
        assert_eq!(std::fs::read_to_string(&files.hostname).unwrap(), "web-0\n");
        assert!(std::fs::read_to_string(&files.hosts)
            .unwrap()
            .contains("localhost"));
        assert_eq!(
            std::fs::read_to_string(&files.resolv_conf).unwrap(),
            "nameserver 10.0.0.10\n"
        );
    }
}
