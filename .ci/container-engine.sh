#!/usr/bin/env bash
# Make a Docker-compatible container engine answer on a unix socket for the Docker runtime's tests:
# podman's API service (no Docker daemon can run in this sandbox; see docs/runtimes.md, The Docker runtime).
# Idempotent: on a second run every step is a quick check.
set -euo pipefail

SOCK_URL="${TASKBROKER_TEST_DOCKER_HOST:-unix:///tmp/podman.sock}"
SOCK="${SOCK_URL#unix://}"
CONF=/tmp/taskbroker-containers.conf
IMAGE=localhost/busybox:latest
export CONTAINERS_CONF="$CONF"

if ! command -v podman >/dev/null || ! command -v runc >/dev/null || [ ! -x /bin/busybox ]; then
  echo "installing podman, runc, busybox-static"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman runc busybox-static
fi

# The sandbox cannot apply cgroups v2 limits or high ulimits, and containers get no network.
cat > "$CONF" <<'CONF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
netns = "none"
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
CONF

if ! podman image exists "$IMAGE"; then
  echo "importing $IMAGE from the static busybox"
  rootfs="$(mktemp -d)"
  mkdir -p "$rootfs/bin" "$rootfs/tmp"
  cp /bin/busybox "$rootfs/bin/"
  for c in sh echo sleep cat ls env pwd printf true false; do ln -sf busybox "$rootfs/bin/$c"; done
  tar -C "$rootfs" -cf "$rootfs.tar" .
  podman import "$rootfs.tar" "$IMAGE"
  rm -rf "$rootfs" "$rootfs.tar"
fi

answers() { curl -fsS --max-time 3 --unix-socket "$SOCK" http://d/v1.41/_ping >/dev/null 2>&1; }

# A service left by an earlier run can still answer _ping yet fail to start containers ("write
# child: broken pipe", seen here after another run's session ended): each run starts its own,
# stopping the one an earlier run started (by its pid file; never any other engine).
PIDFILE=/tmp/podman-service.pid
if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "stopping the podman service an earlier run started (pid $(cat "$PIDFILE"))"
  kill "$(cat "$PIDFILE")" 2>/dev/null || true
  for _ in $(seq 1 20); do kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break; sleep 0.5; done
fi
if ! answers; then
  echo "starting podman system service on $SOCK_URL"
  rm -f "$SOCK"
  setsid nohup podman system service --time=0 "$SOCK_URL" >/tmp/podman-service.log 2>&1 </dev/null &
  echo $! > "$PIDFILE"
  for _ in $(seq 1 60); do answers && break; sleep 1; done
fi
if answers; then
  echo "container engine answers on $SOCK_URL"
else
  echo "container engine does NOT answer on $SOCK_URL (see /tmp/podman-service.log)" >&2
  exit 1
fi
