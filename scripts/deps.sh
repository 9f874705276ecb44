# Shared set-up for the README's commands: Debian packages and a built workspace.
# Sourced, not run. Idempotent: installs only what is missing.

CAPSTAN_PACKAGES=(
  protobuf-compiler   # protoc, for the CRI and admin gRPC code
  libseccomp-dev pkg-config  # the seccomp BPF compiler the executor links
  docker-registry     # the real OCI registry the tests pull from
  busybox-static      # the test images' rootfs
  skopeo              # a second registry client the tests check against
  containerd runc     # the peer runtime the image-pull benchmark measures against
  nftables iproute2   # networking tests
  containernetworking-plugins  # the reference CNI plugins Capstan's are checked against
  iptables            # the reference bridge plugin's masquerade rules
  kubectl             # the real client the API test server is checked against
  dnsutils unbound    # dig, and the real upstream resolver the cluster DNS forwards to
  zstd openssl ca-certificates curl
)

capstan_install_deps() {
  if [ "$(id -u)" != 0 ]; then
    echo "error: run as root (Capstan manages namespaces, mounts and cgroups)" >&2
    return 1
  fi
  local missing=()
  for pkg in "${CAPSTAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  # Debian starts containerd as a service; the benchmark runs its own instance.
  systemctl disable --now containerd >/dev/null 2>&1 || true
  if ! command -v cargo >/dev/null; then
    echo "error: cargo not found; install a Rust toolchain (rustup) first" >&2
    return 1
  fi
}
