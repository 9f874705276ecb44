//! Node facts that rarely change: addresses, nodeInfo (IDs and versions), the default
//! labels, and the image list from the runtime.

use std::collections::BTreeMap;
use std::fs;
use std::net::IpAddr;

use k8s_cri::v1::Image;
use k8s_openapi::api::core::v1::{ContainerImage, NodeAddress, NodeSystemInfo};

/// The version the Node reports as its kubelet's.
pub const KUBELET_VERSION: &str = concat!("v1.33.0-capstan.", env!("CARGO_PKG_VERSION"));

/// Images listed in `status.images` at most (the kubelet's `nodeStatusMaxImages`).
const MAX_IMAGES: usize = 50;

/// Names listed per image at most (the kubelet's `maxNamesPerImageInNodeStatus`).
const MAX_NAMES_PER_IMAGE: usize = 5;

/// The OS pods run on (Go's `runtime.GOOS`).
pub const OS: &str = "linux";

/// The architecture in Go's naming (`GOARCH`), as node labels and nodeInfo use it.
pub fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// The labels the kubelet sets on its Node and keeps set.
pub fn default_labels(node_name: &str) -> BTreeMap<String, String> {
    [
        ("kubernetes.io/hostname", node_name),
        ("kubernetes.io/os", OS),
        ("kubernetes.io/arch", architecture()),
        ("beta.kubernetes.io/os", OS),
        ("beta.kubernetes.io/arch", architecture()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The node's IP: the first global IPv4 address of the interface holding the default route.
pub fn host_ip() -> Option<IpAddr> {
    let routes = fs::read_to_string("/proc/net/route").ok()?;
    let interface = routes.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&"00000000")).then(|| fields[0].to_owned())
    });
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    let v4 = addrs.filter_map(|a| {
        let ip = a.address?.as_sockaddr_in()?.ip();
        Some((a.interface_name, ip))
    });
    let candidates: Vec<_> = v4.filter(|(_, ip)| !ip.is_loopback()).collect();
    let chosen = match &interface {
        Some(name) => candidates.iter().find(|(n, _)| n == name),
        None => None,
    };
    chosen.or(candidates.first()).map(|(_, ip)| IpAddr::V4(*ip))
}

/// InternalIP (when known) and Hostname.
pub fn addresses(ip: Option<IpAddr>, hostname: &str) -> Vec<NodeAddress> {
    let internal = ip.map(|ip| NodeAddress {
        type_: "InternalIP".to_owned(),
        address: ip.to_string(),
    });
    let host = NodeAddress {
        type_: "Hostname".to_owned(),
        address: hostname.to_owned(),
    };
    internal.into_iter().chain([host]).collect()
}

/// `PRETTY_NAME` of an os-release file ("Linux" when there is none, as cadvisor reports).
fn os_image(os_release: Option<&str>) -> String {
    let pretty = os_release.and_then(|text| {
        text.lines().find_map(|line| {
            let value = line.strip_prefix("PRETTY_NAME=")?;
            Some(value.trim().trim_matches('"').trim_matches('\'').to_owned())
        })
    });
    pretty.unwrap_or_else(|| "Linux".to_owned())
}

fn read_trimmed(path: &str) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// nodeInfo from the host and the runtime's `<name>://<version>`.
pub fn system_info(container_runtime_version: &str) -> NodeSystemInfo {
    let release = fs::read_to_string("/etc/os-release")
        .or_else(|_| fs::read_to_string("/usr/lib/os-release"))
        .ok();
    NodeSystemInfo {
        machine_id: read_trimmed("/etc/machine-id"),
        system_uuid: read_trimmed("/sys/class/dmi/id/product_uuid").to_lowercase(),
        boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
        kernel_version: read_trimmed("/proc/sys/kernel/osrelease"),
        os_image: os_image(release.as_deref()),
        container_runtime_version: container_runtime_version.to_owned(),
        kubelet_version: KUBELET_VERSION.to_owned(),
        operating_system: OS.to_owned(),
        architecture: architecture().to_owned(),
        ..NodeSystemInfo::default()
    }
}

/// `status.images`: largest first, at most 50, each with its digests then tags (at most 5
/// names); images without a name are left out.
pub fn images(mut list: Vec<Image>) -> Vec<ContainerImage> {
    list.sort_by_key(|image| std::cmp::Reverse(image.size));
    list.into_iter()
        .filter_map(|image| {
            let names: Vec<String> = image
                .repo_digests
                .into_iter()
                .chain(image.repo_tags)
                .take(MAX_NAMES_PER_IMAGE)
                .collect();
            (!names.is_empty()).then(|| ContainerImage {
                names: Some(names),
                size_bytes: i64::try_from(image.size).ok(),
            })
        })
        .take(MAX_IMAGES)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_pretty_name() {
        let text = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(os_image(Some(text)), "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(os_image(Some("NAME=x\n")), "Linux");
        assert_eq!(os_image(None), "Linux");
    }

    #[test]
    fn images_are_largest_first_capped_and_named() {
        let image = |size: u64, tags: usize| Image {
            id: format!("sha256:{size}"),
            repo_tags: (0..tags).map(|i| format!("r/{size}:{i}")).collect(),
            repo_digests: vec![format!("r/{size}@sha256:abc")],
            size,
            ..Image::default()
        };
        let mut list: Vec<Image> = (1..=60).map(|i| image(i, 1)).collect();
        list.push(image(1000, 9));
        list.push(Image {
            size: 5000,
            ..Image::default()
        });
        let out = images(list);
        assert_eq!(out.len(), 50);
        assert_eq!(out[0].size_bytes, Some(1000));
        let names = out[0].names.as_deref().unwrap();
        assert_eq!(names.len(), 5);
        assert_eq!(names[0], "r/1000@sha256:abc");
        assert_eq!(out[1].size_bytes, Some(60));
        assert_eq!(out[49].size_bytes, Some(12));
    }

    #[test]
    fn labels_addresses_and_system_info() {
        let labels = default_labels("n1");
        assert_eq!(labels["kubernetes.io/hostname"], "n1");
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert_eq!(labels["beta.kubernetes.io/arch"], architecture());
        let list = addresses(Some("10.0.0.5".parse().unwrap()), "n1");
        assert_eq!(list[0].type_, "InternalIP");
        assert_eq!(list[0].address, "10.0.0.5");
        assert_eq!(list[1].type_, "Hostname");
        assert_eq!(addresses(None, "n1").len(), 1);
        let info = system_info("capstan://0.1.0");
        assert_eq!(info.container_runtime_version, "capstan://0.1.0");
        assert!(info.kubelet_version.starts_with("v1.33.0-capstan"));
        assert!(!info.kernel_version.is_empty());
        assert!(!info.boot_id.is_empty());
    }
}
