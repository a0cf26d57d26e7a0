#!/bin/sh
# Challenge entry point: segment every case in /workspace/inputs into /workspace/outputs.
# Extra arguments are passed to `medsam-lite predict` (e.g. --overwrite, --threads 2).
set -e
exec medsam-lite predict -i /workspace/inputs -o /workspace/outputs "$@"
