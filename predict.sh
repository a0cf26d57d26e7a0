#!/bin/sh
# Challenge entry point: segment every case in /workspace/inputs into /workspace/outputs.
# Extra arguments go to `medsam-lite predict` (e.g. --overwrite, --threads 2).
#
# Started as root (the image's default), it runs the work as the owner of /workspace/outputs, so a mounted
# folder that belongs to any host user stays writable and its new files belong to that user. A folder owned
# by root (e.g. made by `docker run -v` itself) is handed to the image's non-root user 'medsam' first; only
# if that is refused (a root-squashing network mount) does the work run as root. Started as any other user,
# it runs as that user.
set -e
IN=${MEDSAM_LITE_INPUTS:-/workspace/inputs}
OUT=${MEDSAM_LITE_OUTPUTS:-/workspace/outputs}
if [ "$(id -u)" = 0 ] && id medsam >/dev/null 2>&1; then
  mkdir -p "$OUT"
  uid=$(stat -c %u "$OUT")
  gid=$(stat -c %g "$OUT")
  if [ "$uid" = 0 ]; then
    if chown medsam:medsam "$OUT" 2>/dev/null; then
      uid=$(id -u medsam)
      gid=$(id -g medsam)
    else
      echo "note: $OUT belongs to root and cannot be handed to user medsam; running as root" >&2
      exec medsam-lite predict -i "$IN" -o "$OUT" "$@"
    fi
  fi
  exec setpriv --reuid="$uid" --regid="$gid" --clear-groups env HOME=/tmp \
    medsam-lite predict -i "$IN" -o "$OUT" "$@"
fi
exec medsam-lite predict -i "$IN" -o "$OUT" "$@"
