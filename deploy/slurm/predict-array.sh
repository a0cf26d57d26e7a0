#!/usr/bin/env bash
# medsam-lite on a SLURM cluster: one array task per shard, all on one shared folder.
#
#   sbatch --array=0-7 deploy/slurm/predict-array.sh /shared/imgs /shared/segs
#
# Task K of N runs `medsam-lite predict --shard K/N`: a case belongs to the shard given by a hash of its file
# name, so the N tasks split the folder without overlap, and a task that is re-run (after a node failure or a
# time limit) skips what it already wrote and finishes the rest. Re-submitting the whole array after adding
# files is safe too: existing outputs are skipped. The array must start at 0 (--array=0-(N-1)).
#
# Each task gets 2 CPUs and 8 GB, what the challenge's `docker run -m 8G` gives a container; medsam-lite
# refuses (with one line) a case whose arrays cannot fit in the job's memory before reading it, and goes on.
# In a container runtime: MEDSAM_LITE="apptainer exec medsam-lite.sif medsam-lite" sbatch ...
#SBATCH --job-name=medsam-lite
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=04:00:00
#SBATCH --output=medsam-lite-%A_%a.log
set -euo pipefail

INPUTS=${1:?usage: sbatch --array=0-(N-1) predict-array.sh INPUT_DIR OUTPUT_DIR [predict options...]}
OUTPUTS=${2:?usage: sbatch --array=0-(N-1) predict-array.sh INPUT_DIR OUTPUT_DIR [predict options...]}
shift 2
TASK=${SLURM_ARRAY_TASK_ID:?not a SLURM array task: submit with sbatch --array=0-(N-1)}
COUNT=${SLURM_ARRAY_TASK_COUNT:?SLURM_ARRAY_TASK_COUNT is not set}
if [ "${SLURM_ARRAY_TASK_MIN:-0}" != 0 ]; then
  echo "error: the array must start at 0 (--array=0-$((COUNT - 1))), not ${SLURM_ARRAY_TASK_MIN}" >&2
  exit 2
fi
TIMING_DIR=${TIMING_DIR:-$OUTPUTS.timing}   # per-shard timing CSVs, beside (not inside) the outputs
mkdir -p "$OUTPUTS" "$TIMING_DIR"
# shellcheck disable=SC2086  # MEDSAM_LITE may hold a command with arguments
exec ${MEDSAM_LITE:-medsam-lite} predict -i "$INPUTS" -o "$OUTPUTS" --shard "$TASK/$COUNT" \
  --threads "${SLURM_CPUS_PER_TASK:-2}" --timing-csv "$TIMING_DIR/shard-$TASK-of-$COUNT.csv" "$@"
