#!/bin/sh
# Challenge entry point: segment every case in /workspace/inputs into /workspace/outputs.
# Extra arguments go to `medsam-lite predict` (e.g. --overwrite, --threads 2).
#
# Started as root (the image's default), it runs the work as the owner of /workspace/outputs, so a mounted
# folder that belongs to any host user stays writable and its new files belong to that user; a folder owned
# by root is handed to the non-root user 'medsam' first. Started as any other user, it runs as that user.
set -e
IN=${MEDSAM_LITE_INPUTS:-/workspace/inputs}
OUT=${MEDSAM_LITE_OUTPUTS:-/workspace/outputs}
if [ "$(id -u)" = 0 ] && id medsam >/dev/null 2>&1; then
  mkdir -p "$OUT"
  uid=$(stat -c %u "$OUT")
  gid=$(stat -c %g "$OUT")
  if [ "$uid" = 0 ]; then
    chown medsam:medsam "$OUT"
    uid=$(id -u medsam)
    gid=$(id -g medsam)
  fi
  exec setpriv --reuid="$uid" --regid="$gid" --clear-groups env HOME=/tmp \
    medsam-lite predict -i "$IN" -o "$OUT" "$@"
fi
exec medsam-lite predict -i "$IN" -o "$OUT" "$@"
