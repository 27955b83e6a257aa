#!/usr/bin/env bash
# Installs the command-line tools of the offline Kubernetes checks (tests/k8s) into
# .cache/ of the checkout. Idempotent: a tool already at its pinned version is kept.
#   .cache/bin/kustomize           built from its Go module (needs Go >= 1.24)
#   .cache/tools/checkov/          checkov in a virtualenv of its own: its many pinned
#                                  dependencies must not change the project's .venv
# hadolint, kubernetes-validate and jsonschema come with the project's dev dependencies.
set -euo pipefail

KUSTOMIZE_VERSION="v5.8.2"   # v5.8.3 needs Go 1.27
CHECKOV_VERSION="3.3.30"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$root/.cache/bin"
checkov_env="$root/.cache/tools/checkov"
python="${PYTHON:-python3}"
mkdir -p "$bin"

if [[ "$("$bin/kustomize" version 2>/dev/null || true)" != "$KUSTOMIZE_VERSION" ]]; then
    command -v go >/dev/null || { echo "k8s_tools: Go is needed to build kustomize" >&2; exit 1; }
    echo "k8s_tools: building kustomize $KUSTOMIZE_VERSION"
    GOBIN="$bin" GOFLAGS=-buildvcs=false go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
fi

if [[ "$("$checkov_env/bin/checkov" --version 2>/dev/null || true)" != "$CHECKOV_VERSION" ]]; then
    echo "k8s_tools: installing checkov $CHECKOV_VERSION"
    rm -rf "$checkov_env"
    "$python" -m venv "$checkov_env"
    "$checkov_env/bin/pip" install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION"
fi

echo "k8s_tools: kustomize $("$bin/kustomize" version), checkov $("$checkov_env/bin/checkov" --version)"
