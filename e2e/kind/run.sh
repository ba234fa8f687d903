#!/usr/bin/env bash
# Runs Meridian's end-to-end suite on kind, the way a user's CI would:
#   1. create (or reuse) a kind cluster from e2e/kind/kind-config.yaml,
#   2. build the operator and node images (docker/*.Dockerfile) and `kind load` them,
#   3. `helm upgrade --install` charts/meridian with those tags and wait for the rollout,
#   4. run `cargo test -p meridian-e2e` with MERIDIAN_E2E_SKIP_INSTALL=1.
#
# Step 4 runs in a container that shares the network namespace of the kind control-plane
# node: the suite talks to cache nodes by pod IP, and pod IPs are routed only inside kind's
# nodes, not from the host. See e2e/kind/README.md.
#
# Usage: e2e/kind/run.sh [extra arguments for the test binaries, e.g. --nocapture]
# Environment:
#   KIND_CLUSTER_NAME   cluster name (default: meridian)
#   MERIDIAN_IMAGE_TAG  image tag to build and install (default: e2e-<git short hash>)
#   KEEP_CLUSTER=1      keep a cluster this script created (default: delete it at the end)
#   SKIP_BUILD=1        do not build images (they must exist locally with MERIDIAN_IMAGE_TAG)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cluster="${KIND_CLUSTER_NAME:-meridian}"
tag="${MERIDIAN_IMAGE_TAG:-e2e-$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo dev)}"
operator_image="ghcr.io/meridian-dev/meridian-operator:${tag}"
node_image="ghcr.io/meridian-dev/meridian-node:${tag}"
runner_image="meridian-e2e-runner:local"

need() {
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "run.sh: '$1' is required: $2" >&2
        exit 1
    fi
}
need docker "https://docs.docker.com/engine/install/"
need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
need helm "https://helm.sh/docs/intro/install/ (v3)"
need kubectl "https://kubernetes.io/docs/tasks/tools/"

step() { printf '\n==> %s\n' "$*" >&2; }

work="$(mktemp -d)"
created=0
cleanup() {
    local status=$?
    rm -rf "$work"
    if [[ $created == 1 && ${KEEP_CLUSTER:-0} != 1 ]]; then
        step "deleting kind cluster $cluster (KEEP_CLUSTER=1 keeps it)"
        kind delete cluster --name "$cluster" || true
    fi
    exit "$status"
}
trap cleanup EXIT

step "kind cluster $cluster"
existing="$(kind get clusters 2>/dev/null || true)"
if grep -qx "$cluster" <<<"$existing"; then
    echo "reusing the existing cluster" >&2
else
    kind create cluster --name "$cluster" --config "$root/e2e/kind/kind-config.yaml" --wait 180s
    created=1
fi
export KUBECONFIG="$work/kubeconfig"
kind get kubeconfig --name "$cluster" >"$KUBECONFIG"

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    step "building $operator_image and $node_image"
    docker build -f "$root/docker/operator.Dockerfile" -t "$operator_image" "$root"
    docker build -f "$root/docker/node.Dockerfile" -t "$node_image" "$root"
fi
step "loading the images into kind"
kind load docker-image --name "$cluster" "$operator_image" "$node_image"

step "installing the chart"
helm upgrade --install meridian "$root/charts/meridian" \
    -n meridian-system --create-namespace \
    --set "image.tag=$tag,nodeImage.tag=$tag" \
    --wait --timeout 5m
kubectl -n meridian-system rollout status deployment/meridian-operator --timeout=180s

step "building the test runner image"
docker build -t "$runner_image" -f "$root/e2e/kind/runner.Dockerfile" "$root/e2e/kind"

# Inside the control-plane node's network namespace the API server listens on
# 127.0.0.1:6443 (covered by its certificate) and every pod IP is routed.
internal_kubeconfig="$work/kubeconfig.internal"
kind get kubeconfig --name "$cluster" --internal \
    | sed -E 's#server: https://[^[:space:]]+#server: https://127.0.0.1:6443#' >"$internal_kubeconfig"
chmod 0644 "$internal_kubeconfig"

# kubectl and helm come from the host (official release binaries are static).
kubectl_bin="$(readlink -f "$(command -v kubectl)")"
helm_bin="$(readlink -f "$(command -v helm)")"

step "running the e2e suite inside the kind network"
# The suite connects from the control-plane node's address on the kind network: the cache
# pods' NetworkPolicy (kindnet enforces it) must admit that network as a client.
client_cidr=$(docker network inspect kind \
    -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}' | tr ' ' '\n' | grep -m1 '\.')
# Build output and the cargo cache stay in target/kind-e2e, owned by the calling user.
docker run --rm \
    --network "container:${cluster}-control-plane" \
    --user "$(id -u):$(id -g)" \
    -v "$root:/src" -w /src \
    -v "$internal_kubeconfig:/kubeconfig:ro" \
    -v "$kubectl_bin:/usr/local/bin/kubectl:ro" \
    -v "$helm_bin:/usr/local/bin/helm:ro" \
    -e KUBECONFIG=/kubeconfig \
    -e KUBECTL=/usr/local/bin/kubectl \
    -e HELM=/usr/local/bin/helm \
    -e MERIDIAN_E2E_SKIP_INSTALL=1 \
    -e MERIDIAN_E2E_CLIENT_CIDR="$client_cidr" \
    -e CARGO_TARGET_DIR=/src/target/kind-e2e \
    -e CARGO_HOME=/src/target/kind-e2e/cargo-home \
    -e HOME=/tmp \
    "$runner_image" \
    cargo test -p meridian-e2e --locked -- "$@"
