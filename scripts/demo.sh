#!/usr/bin/env bash
# The README's main command. Starts a local OCI registry holding a busybox demo image and
# Capstan's in-memory stand-in for kube-apiserver (the API test server: a local single-node
# control plane), joins this machine with `capstan join`, then runs `capstan agent` (kubelet,
# built-in CRI runtime and node-local cluster DNS in one process) with two example static
# pods — a web server with a readiness probe and a host port, and a pod whose init container
# and sidecar share an emptyDir with the app — and, through the real `kubectl`, two web pods
# behind a Service. Waits for everything to be Ready and prints how to reach it. Ctrl-C stops
# the agent; the pods, the DNS address and its rules are then removed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
capstan_install_deps

echo "==> building"
cargo build --release --locked -p agent -p tests --bins
bin=$PWD/target/release

work=$(mktemp -d /tmp/capstan-demo.XXXXXX)
pids=()
cleanup() {
  set +e
  if [ -n "${agent_pid:-}" ]; then
    # Remove the manifests so the agent stops the pods, then stop the agent.
    rm -f "$work"/manifests/*.yaml
    for _ in $(seq 100); do
      [ -z "$("$bin/capstan" pods -A --agent-socket "$work/agent.sock" 2>/dev/null | tail -n +2)" ] && break
      sleep 0.2
    done
  fi
  if [ -n "${kubeconfig:-}" ]; then
    kubectl --kubeconfig "$kubeconfig" delete pods -l app=hello --wait=false >/dev/null 2>&1
    for _ in $(seq 100); do
      [ -z "$("$bin/capstan" pods -A --agent-socket "$work/agent.sock" 2>/dev/null | grep hello)" ] && break
      sleep 0.2
    done
  fi
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  wait 2>/dev/null
  "$bin/capstan" dns --cleanup --config "$work/config.yaml" 2>/dev/null
  ip link del capstan-demo0 2>/dev/null
  umount -R "$work" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

echo "==> starting a local registry with demo/busybox:latest"
"$bin/testbed" registry --push-demo --ignore-stdin </dev/null >"$work/registry.out" 2>"$work/registry.log" &
pids+=($!)
for _ in $(seq 300); do grep -q '^READY' "$work/registry.out" 2>/dev/null && break; sleep 0.1; done
registry=$(awk '/^REGISTRY /{print $2}' "$work/registry.out")
image=$(awk '/^IMAGE /{print $2}' "$work/registry.out")
[ -n "$image" ] || { cat "$work/registry.log"; echo "registry did not start" >&2; exit 1; }

echo "==> starting the API test server (Capstan's in-memory stand-in for kube-apiserver)"
# It runs until its stdin closes: a FIFO this shell holds open for as long as it runs.
mkfifo "$work/apiserver.stdin"
"$bin/capstan-apiserver" <"$work/apiserver.stdin" >"$work/apiserver.out" 2>"$work/apiserver.log" &
exec 3>"$work/apiserver.stdin"
pids+=($!)
for _ in $(seq 300); do grep -q '^CA_HASH' "$work/apiserver.out" 2>/dev/null && break; sleep 0.1; done
server=$(awk '/^URL /{print $2}' "$work/apiserver.out")
token=$(awk '/^TOKEN /{print $2}' "$work/apiserver.out")
ca_hash=$(awk '/^CA_HASH /{print $2}' "$work/apiserver.out")
admin=$(awk '/^KUBECONFIG /{print $2}' "$work/apiserver.out")
[ -n "$ca_hash" ] || { cat "$work/apiserver.log"; echo "the API server did not start" >&2; exit 1; }

echo "==> capstan join $server"
"$bin/capstan" join --server "$server" --token "$token" --discovery-token-ca-cert-hash "$ca_hash" \
  --kubeconfig "$work/kubeconfig" --pki-dir "$work/pki" >"$work/join.log" 2>&1 \
  || { cat "$work/join.log"; echo "join failed" >&2; exit 1; }
kubeconfig=$admin

mkdir -p "$work/cni" "$work/manifests"
cat >"$work/cni/10-capstan-demo.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "capstan-demo",
  "plugins": [
    {"type": "bridge", "bridge": "capstan-demo0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.77.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}],
              "dataDir": "$work/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON

cat >"$work/config.yaml" <<YAML
runtime:
  root: $work/runtime
  socket: $work/cri.sock
  runRoot: $work/run
  cni:
    confDir: $work/cni
    binDirs: [/usr/lib/cni]
    cacheDir: $work/cni-cache
  registries:
    "$registry":
      insecure: true
kubelet:
  staticPodPath: $work/manifests
  rootDir: $work/kubelet
  podLogsDir: $work/logs
  localApiSocket: $work/agent.sock
dns:
  # Names outside the cluster go to this machine's resolvers.
  healthBindAddress: ""
YAML

cat >"$work/manifests/web.yaml" <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: web
    image: $image
    imagePullPolicy: IfNotPresent
    command: [sh, -c]
    args: ['mkdir -p /www && echo "Hello from \$(POD_NAME) on \$(NODE_NAME)" > /www/index.html && echo serving on :8080 && exec httpd -f -v -p 8080 -h /www']
    env:
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
    ports: [{containerPort: 8080, hostPort: 30080}]
    readinessProbe:
      httpGet: {path: /index.html, port: 8080}
      periodSeconds: 2
YAML

cat >"$work/manifests/shared.yaml" <<YAML
apiVersion: v1
kind: Pod
metadata: {name: shared}
spec:
  terminationGracePeriodSeconds: 2
  volumes:
  - {name: data, emptyDir: {}}
  initContainers:
  - name: prepare
    image: $image
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'echo "written by the init container" > /data/init.txt']
    volumeMounts: [{name: data, mountPath: /data}]
  - name: ticker
    image: $image
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    command: [sh, -c, 'trap "exit 0" TERM; while true; do date > /data/now.txt; sleep 1; done']
    volumeMounts: [{name: data, mountPath: /data}]
  containers:
  - name: app
    image: $image
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'trap "exit 0" TERM; cat /data/init.txt; while true; do echo "sidecar says: \$(cat /data/now.txt)"; sleep 5; done']
    volumeMounts: [{name: data, mountPath: /data}]
YAML

echo "==> starting capstan agent (joined: static pods from $work/manifests, API pods, cluster DNS)"
"$bin/capstan" agent --config "$work/config.yaml" --kubeconfig "$work/kubeconfig" 2>"$work/agent.log" &
agent_pid=$!
pids+=($agent_pid)
export CAPSTAN_AGENT_SOCKET=$work/agent.sock
ready=
for _ in $(seq 600); do
  if "$bin/capstan" pods 2>/dev/null | awk 'NR>1 {split($2, r, "/"); if (r[1] == r[2]) n++} END {exit n==2 ? 0 : 1}'; then ready=1; break; fi
  kill -0 "$agent_pid" 2>/dev/null || { cat "$work/agent.log"; echo "the agent exited" >&2; exit 1; }
  sleep 0.2
done
"$bin/capstan" pods -o wide
[ -n "$ready" ] || { tail -30 "$work/agent.log"; echo "pods did not become Ready" >&2; exit 1; }

node=$("$bin/capstan" pods -o json | awk -F'"' '/"nodeName"/ {print $4; exit}')

echo "==> kubectl: two web pods and a Service for them"
cat >"$work/hello.yaml" <<YAML
apiVersion: v1
kind: Service
metadata: {name: hello, namespace: default}
spec:
  selector: {app: hello}
  ports: [{name: http, port: 80, targetPort: http}]
YAML
for i in 1 2; do
  cat >>"$work/hello.yaml" <<YAML
---
apiVersion: v1
kind: Pod
metadata: {name: hello-$i, namespace: default, labels: {app: hello}}
spec:
  nodeName: $node
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: $image
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www']
    ports: [{containerPort: 8080, name: http}]
    readinessProbe: {httpGet: {path: /index.html, port: 8080}, periodSeconds: 1}
YAML
done
kubectl --kubeconfig "$kubeconfig" apply -f "$work/hello.yaml"
kubectl --kubeconfig "$kubeconfig" wait --for=condition=Ready pod/hello-1 pod/hello-2 --timeout=120s
kubectl --kubeconfig "$kubeconfig" get pods,services,endpointslices -o wide
cluster_ip=$(kubectl --kubeconfig "$kubeconfig" get service hello -o jsonpath='{.spec.clusterIP}')
echo
echo "==> dig @169.254.20.10 hello.default.svc.cluster.local (the node-local cluster DNS)"
dig +short @169.254.20.10 hello.default.svc.cluster.local
echo "==> from pod hello-1: nslookup hello.default.svc.cluster.local"
"$bin/capstan" exec hello-1 -- nslookup hello.default.svc.cluster.local
ip=$("$bin/capstan" pods -o json | python3 -c 'import json,sys; print([p["status"]["podIP"] for p in json.load(sys.stdin)["items"] if p["metadata"]["name"].startswith("web-")][0])')
echo
echo "==> curl http://$ip:8080/"
curl -s "http://$ip:8080/"

cat <<TXT

Capstan is running, joined to a local API test server (node $node; state in $work, agent
log in $work/agent.log). The static web server pod answers on its pod IP and on a host port:
  curl http://$ip:8080/
  curl http://<this host's IP>:30080/
The cluster: Service hello ($cluster_ip) in front of pods hello-1 and hello-2:
  export KUBECONFIG=$kubeconfig
  kubectl get pods,services,endpointslices -o wide
  dig @169.254.20.10 hello.default.svc.cluster.local      # cluster DNS on the node-local address
  $bin/capstan exec hello-1 -- nslookup hello.default.svc.cluster.local
See pods, logs and run commands (in another shell):
  export CAPSTAN_AGENT_SOCKET=$work/agent.sock
  $bin/capstan pods
  $bin/capstan pods describe web
  $bin/capstan logs web -f
  $bin/capstan logs shared -c app
  $bin/capstan exec shared -c app -- ls /data
Add, change or remove manifests in $work/manifests and the agent follows.
Press Ctrl-C to stop (the demo's pods are removed first).
TXT
wait "$agent_pid"
