#!/usr/bin/env bash
# Build the gradserve image where no registry of base images is reachable, only Debian's
# package mirror and a Python package index (as in CI). As root, with dockerd running:
#
#   deploy/docker/build-offline.sh [IMAGE]        (default gradserve:<version>)
#
# 1. A Debian bookworm base with python3 and python3-venv is made with debootstrap, from
#    the mirror this machine's apt uses, and imported with `docker import` as $BASE_IMAGE
#    (default gradserve-base:bookworm). Skipped when that image exists: delete it to
#    remake it. The base gets this machine's CA bundle and pip configuration
#    (/etc/pip.conf, /etc/xdg/pip/, the PIP_* environment), so that pip in the build
#    reaches the same index the same way.
# 2. deploy/docker/Dockerfile is built with PYTHON_IMAGE=$BASE_IMAGE, on the host's
#    network (the build resolves and connects as this machine does).
set -euo pipefail
cd "$(dirname "$0")/../.."

VERSION="$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
IMAGE="${1:-gradserve:$VERSION}"
BASE_IMAGE="${BASE_IMAGE:-gradserve-base:bookworm}"
SUITE=bookworm
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

log() { echo "build-offline: $*" >&2; }

# The Debian mirror this machine's apt uses for $SUITE (deb822 .sources or one-line .list).
apt_mirror() {
    python3 - "$SUITE" <<'PY'
import glob
import sys

suite = sys.argv[1]
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in open(path).read().split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if ":" in line and not line.startswith(("#", " ")):
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.split()
        if suite in fields.get("suites", []) and "deb" in fields.get("types", []):
            print(fields["uris"][0])
            sys.exit(0)
for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
    try:
        lines = open(path).read().splitlines()
    except FileNotFoundError:
        continue
    for line in lines:
        words = [w for w in line.split() if not w.startswith("[")]
        if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
            print(words[1])
            sys.exit(0)
sys.exit(f"no apt source for {suite} in /etc/apt")
PY
}

# The base's /etc/pip.conf: this machine's, with the PIP_* environment added as pip reads
# it (PIP_DEFAULT_TIMEOUT=60 is `default-timeout = 60` in [global]; the environment wins).
# A value naming a local path that the root $1 lacks (a wheel directory of this machine)
# is left out.
pip_conf() {
    python3 - "$1" <<'PY'
import configparser
import os
import sys

root = sys.argv[1]
conf = configparser.RawConfigParser()
conf.read(["/etc/xdg/pip/pip.conf", "/etc/pip.conf"])
if not conf.has_section("global"):
    conf.add_section("global")
for name, value in sorted(os.environ.items()):
    if name.startswith("PIP_") and name != "PIP_CONFIG_FILE":
        if value.startswith("/") and not os.path.exists(root + value):
            continue
        conf.set("global", name[4:].lower().replace("_", "-"), value)
conf.write(sys.stdout)
PY
}

# debootstrap mounts /proc and /sys (and may bind /dev) inside the root: unmount whatever
# is still mounted there before removing it, and never cross into another file system.
ROOTFS=""
remove_rootfs() {
    [ -n "$ROOTFS" ] || return 0
    awk -v root="$ROOTFS/" 'index($2, root) == 1 { print $2 }' /proc/mounts | sort -r \
        | while read -r m; do umount -l "$m" || true; done
    rm -rf --one-file-system "$ROOTFS" "$ROOTFS.log"
}

make_base() {
    local mirror
    mirror="$(apt_mirror)"
    ROOTFS="$(mktemp -d /tmp/gradserve-base.XXXXXX)"
    trap remove_rootfs EXIT
    log "debootstrap $SUITE (python3, python3-venv) into $ROOTFS"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        "$SUITE" "$ROOTFS" "$mirror" >"$ROOTFS.log" 2>&1 \
        || { tail -20 "$ROOTFS.log" >&2; exit 1; }
    cp "$CA_BUNDLE" "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
    if [ -d /etc/xdg/pip ]; then
        mkdir -p "$ROOTFS/etc/xdg"
        cp -r /etc/xdg/pip "$ROOTFS/etc/xdg/pip"
        rm -f "$ROOTFS/etc/xdg/pip/pip.conf"
    fi
    pip_conf "$ROOTFS" >"$ROOTFS/etc/pip.conf"
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
    log "docker import as $BASE_IMAGE"
    tar -C "$ROOTFS" --numeric-owner --one-file-system -c . \
        | docker import --change 'CMD ["python3"]' - "$BASE_IMAGE" >/dev/null
    remove_rootfs
}

if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "base $BASE_IMAGE exists (docker rmi it to remake it)"
else
    make_base
fi

log "docker build $IMAGE from $BASE_IMAGE"
DOCKER_BUILDKIT=0 docker build --network host --build-arg "PYTHON_IMAGE=$BASE_IMAGE" \
    -f deploy/docker/Dockerfile -t "$IMAGE" .
