#!/usr/bin/env bash
# dockerd for `make image` / `make image-test`, as root on a Debian machine.
#
#   .ci/dockerd.sh start   install docker.io and debootstrap (apt) if missing; start dockerd
#                          unless a daemon already answers, and wait until it does
#   .ci/dockerd.sh stop    stop the dockerd that `start` started (none other)
set -euo pipefail

PIDFILE="${DOCKERD_PIDFILE:-/tmp/gradserve-dockerd.pid}"
LOG="${DOCKERD_LOG:-/tmp/gradserve-dockerd.log}"

log() { echo "dockerd: $*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

start() {
    if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
        log "installing Debian packages docker.io and debootstrap"
        export DEBIAN_FRONTEND=noninteractive
        as_root apt-get update -qq
        as_root apt-get install -y -qq --no-install-recommends docker.io debootstrap >/dev/null
    fi
    if docker info >/dev/null 2>&1; then
        return 0
    fi
    log "starting dockerd (log: $LOG)"
    as_root dockerd >"$LOG" 2>&1 &
    echo $! >"$PIDFILE"
    for _ in $(seq 120); do
        if docker info >/dev/null 2>&1; then
            return 0
        fi
        if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
            tail -20 "$LOG" >&2
            log "dockerd exited"
            exit 1
        fi
        sleep 0.5
    done
    tail -20 "$LOG" >&2
    log "dockerd did not answer in 60 s"
    exit 1
}

stop() {
    [ -f "$PIDFILE" ] || return 0
    local pid
    pid="$(cat "$PIDFILE")"
    rm -f "$PIDFILE"
    kill -0 "$pid" 2>/dev/null || return 0
    log "stopping dockerd ($pid)"
    kill "$pid"
    for _ in $(seq 60); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.5
    done
    log "dockerd ($pid) still running after 30 s"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
