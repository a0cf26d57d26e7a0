#!/usr/bin/env bash
# Build the runtime image and run it exactly as the challenge does, case by case, on the shared cases.
#
# On a fresh Debian machine with root: installs docker.io and debootstrap if missing, starts dockerd on a
# private socket if no engine answers, makes a local Python base image (debootstrap + docker import, with the
# host's CA bundle and pip configuration) when python:3.11-slim cannot be pulled, exports the shared
# checkpoint to OpenVINO IR into a temporary build context, builds with --network host, then for every shared
# case runs
#   docker container run -m 8G --name X --rm -v IN:/workspace/inputs/ -v OUT:/workspace/outputs/ IMAGE:latest \
#       /bin/bash -c "sh predict.sh"
# compares the output with a local run of the CLI (must be identical), and prints per-case wall seconds, the
# peak memory of the container's cgroup, the image size and the start-up time of an empty case. It also
# checks that an output folder owned by another user is written (files owned by that user). Everything it
# started or made is stopped and removed at the end.
#
# Usage: sudo scripts/docker_test.sh [--shared ../shared] [--checkpoint lite_medsam_demo.pth] [--only SUBSTR]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=$(cd "$ROOT/.." && pwd)/shared
CHECKPOINT=lite_medsam_demo.pth
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --shared) SHARED=$(cd "$2" && pwd); shift 2 ;;
    --checkpoint) CHECKPOINT=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "docker_test.sh needs root" >&2; exit 2; }
[ -f "$SHARED/checkpoints/$CHECKPOINT" ] || { echo "missing $SHARED/checkpoints/$CHECKPOINT" >&2; exit 2; }

IMAGE=medsam-lite-test
WORK=$(mktemp -d /tmp/medsam-docker-test.XXXXXX)
STARTED_DOCKERD=""
MADE_IMAGES=()
cleanup() {
  set +e
  docker ps -aq --filter "name=medsam-lite-case-" | xargs -r docker rm -f >/dev/null 2>&1
  for image in "${MADE_IMAGES[@]}"; do docker image rm -f "$image" >/dev/null 2>&1; done
  if [ -n "$STARTED_DOCKERD" ]; then
    kill "$STARTED_DOCKERD" 2>/dev/null
    wait "$STARTED_DOCKERD" 2>/dev/null
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

log() { printf '[docker-test] %s\n' "$*" >&2; }

# 1. Tools.
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. An engine: the default one if it answers, else our own on a private socket.
if ! docker info >/dev/null 2>&1; then
  export DOCKER_HOST=unix://$WORK/docker.sock
  log "starting dockerd on $DOCKER_HOST"
  dockerd --host "$DOCKER_HOST" --data-root /var/lib/medsam-lite-docker --exec-root "$WORK/exec" \
    --pidfile "$WORK/dockerd.pid" --bridge none --iptables=false >"$WORK/dockerd.log" 2>&1 &
  STARTED_DOCKERD=$!
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { cat "$WORK/dockerd.log" >&2; exit 1; }
fi

# 3. A base image: python:3.11-slim if it can be pulled, else a local Debian + Python 3.11 made here.
BASE=python:3.11-slim
if ! docker image inspect "$BASE" >/dev/null 2>&1 && ! timeout 60 docker pull -q "$BASE" >/dev/null 2>&1; then
  BASE=medsam-lite-base:bookworm
  if ! docker image inspect "$BASE" >/dev/null 2>&1; then
    log "python:3.11-slim cannot be pulled; making $BASE with debootstrap (a few minutes)"
    MIRROR=$(grep -rhoE 'https?://[^ ]+' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | head -n 1)
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$WORK/rootfs" \
      "${MIRROR:-http://deb.debian.org/debian}" >"$WORK/debootstrap.log" 2>&1 \
      || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
    chroot "$WORK/rootfs" python3 -m venv /opt/venv
    # The host's CA bundle and pip configuration (a TLS-inspecting proxy may sit between pip and the
    # registry): given to this local test base only, never to the Dockerfile.
    cp /etc/ssl/certs/ca-certificates.crt "$WORK/rootfs/etc/ssl/certs/ca-certificates.crt"
    [ -f /etc/pip.conf ] && cp /etc/pip.conf "$WORK/rootfs/etc/pip.conf"
    rm -rf "$WORK/rootfs/var/cache/apt/archives"/*.deb "$WORK/rootfs/var/lib/apt/lists"/*
    tar -C "$WORK/rootfs" -c . | docker import \
      --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
      --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
    MADE_IMAGES+=("$BASE")
    rm -rf "$WORK/rootfs"
  fi
fi

# 4. Build context: the tracked files, plus the OpenVINO export of the shared checkpoint.
log "exporting $CHECKPOINT and building $IMAGE from $BASE"
mkdir -p "$WORK/context"
git -C "$ROOT" ls-files -z | (cd "$ROOT" && xargs -0 cp --parents -t "$WORK/context")
mkdir -p "$WORK/context/work_dir/LiteMedSAM"
cp "$SHARED/checkpoints/$CHECKPOINT" "$WORK/context/work_dir/LiteMedSAM/lite_medsam.pth"
(cd "$WORK/context" && medsam-lite export --checkpoint work_dir/LiteMedSAM/lite_medsam.pth --out work_dir/openvino >/dev/null)
build_start=$(date +%s.%N)
docker build -q --network host --build-arg BASE_IMAGE="$BASE" -t "$IMAGE:latest" "$WORK/context" >/dev/null
MADE_IMAGES+=("$IMAGE:latest")
build_s=$(awk -v a="$(date +%s.%N)" -v b="$build_start" 'BEGIN { printf "%.0f", a - b }')
size_mb=$(( $(docker image inspect -f '{{.Size}}' "$IMAGE:latest") / 1000000 ))

# The container's memory.peak, read from the host while it runs (cgroup v2; systemd or cgroupfs driver).
watch_peak() {  # $1 container name, $2 file to write the peak (bytes) into
  local name=$1 out=$2 id="" peak=0 file
  for _ in $(seq 600); do
    id=$(docker ps -q --no-trunc --filter "name=^${name}$" 2>/dev/null)
    [ -n "$id" ] && break
    sleep 0.05
  done
  [ -n "$id" ] || { echo 0 >"$out"; return; }
  file=$(ls /sys/fs/cgroup/system.slice/docker-"$id".scope/memory.peak /sys/fs/cgroup/docker/"$id"/memory.peak 2>/dev/null | head -n 1)
  while [ -n "$file" ] && [ -f "$file" ]; do
    peak=$(cat "$file" 2>/dev/null || echo "$peak")
    echo "$peak" >"$out"
    sleep 0.1
  done
  [ -s "$out" ] || echo 0 >"$out"
}

run_case() {  # $1 input folder, $2 output folder, $3 name -> prints "seconds peak_mib"
  local name=medsam-lite-case-$3 start end
  watch_peak "$name" "$WORK/peak" &
  local watcher=$!
  start=$(date +%s.%N)
  docker container run -m 8G --name "$name" --rm -v "$1":/workspace/inputs/ -v "$2":/workspace/outputs/ \
    "$IMAGE":latest /bin/bash -c "sh predict.sh" >"$WORK/run.log" 2>&1 || { cat "$WORK/run.log" >&2; return 1; }
  end=$(date +%s.%N)
  wait "$watcher" 2>/dev/null || true
  printf '%s %d\n' "$(awk -v a="$end" -v b="$start" 'BEGIN { printf "%.2f", a - b }')" \
    "$(( $(cat "$WORK/peak" 2>/dev/null || echo 0) / 1048576 ))"
}

# 5. Start-up: an empty case (no boxes: no encoder pass).
mkdir -p "$WORK/empty/in" "$WORK/empty/out"
python3 -c "import numpy as np; np.savez('$WORK/empty/in/2DBox_empty.npz', imgs=np.zeros((64, 64, 3), np.uint8), boxes=np.zeros((0, 4), np.int64))"
read -r empty_s empty_mib < <(run_case "$WORK/empty/in" "$WORK/empty/out" empty)

# 6. Every shared case, one container run each, against a local run of the CLI on the same export.
printf '%-58s %9s %9s %9s\n' case docker_s peak_MiB identical
failures=0
largest_peak=0
for case in "$SHARED"/cases/imgs/*.npz; do
  name=$(basename "$case")
  [[ "$name" == *"$ONLY"* ]] || continue
  id=$(echo "${name%.npz}" | tr -c 'A-Za-z0-9_.-' '-' | cut -c1-60)
  mkdir -p "$WORK/$id/in" "$WORK/$id/out" "$WORK/$id/local"
  cp "$case" "$WORK/$id/in/"
  chmod -R a+rX "$WORK/$id/in"
  read -r seconds peak < <(run_case "$WORK/$id/in" "$WORK/$id/out" "$id")
  (cd "$WORK/context" && medsam-lite predict -i "$WORK/$id/in" -o "$WORK/$id/local" --engine openvino \
     --export-dir work_dir/openvino --checkpoint work_dir/LiteMedSAM/lite_medsam.pth -q >/dev/null 2>&1)
  same=$(python3 -c "import numpy as np, sys; a = np.load(sys.argv[1])['segs']; b = np.load(sys.argv[2])['segs']; print('yes' if a.dtype == b.dtype and np.array_equal(a, b) else 'NO')" \
         "$WORK/$id/out/$name" "$WORK/$id/local/$name" 2>/dev/null || echo NO)
  [ "$same" = yes ] || failures=$((failures + 1))
  [ "$peak" -gt "$largest_peak" ] && largest_peak=$peak
  printf '%-58s %9s %9s %9s\n' "$name" "$seconds" "$peak" "$same"
done

# 7. An output folder that belongs to another user (uid 4242, mode 0755): written, files owned by 4242.
mkdir -p "$WORK/owner/in" "$WORK/owner/out"
cp "$ROOT/test_demo/imgs/2DBox_Synthetic_ellipses.npz" "$WORK/owner/in/"
chmod -R a+rX "$WORK/owner/in"
chown 4242:4242 "$WORK/owner/out"
chmod 0755 "$WORK/owner/out"
run_case "$WORK/owner/in" "$WORK/owner/out" owner >/dev/null
owner=$(stat -c %u "$WORK/owner/out/2DBox_Synthetic_ellipses.npz" 2>/dev/null || echo none)
[ "$owner" = 4242 ] || failures=$((failures + 1))

printf 'image %s: %d MB (built from %s in %s s)\n' "$IMAGE" "$size_mb" "$BASE" "$build_s"
printf 'start-up, empty case, whole container run: %s s (peak %s MiB)\n' "$empty_s" "$empty_mib"
printf 'largest container memory peak: %s MiB (limit 8 GiB)\n' "$largest_peak"
printf 'output folder owned by uid 4242 (mode 0755): output written, owned by uid %s\n' "$owner"
[ "$size_mb" -le 800 ] || { echo "image larger than 800 MB" >&2; failures=$((failures + 1)); }
echo "$failures failure(s)"
[ "$failures" = 0 ]
