"""The cluster recipes in deploy/ run the shards they say: the SLURM array script and the Kubernetes Indexed
Job's command, each executed here for every index on test_demo."""
from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import yaml

from .conftest import ROOT

DEMO = ROOT / "test_demo"
CASES = sorted(p.name for p in (DEMO / "imgs").glob("*.npz"))


def _env(checkpoint_path, exports, **extra) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "MEDSAM_LITE": f"{sys.executable} -m medsam_lite",
            "MEDSAM_LITE_CHECKPOINT": str(checkpoint_path("seeded")), "MEDSAM_LITE_EXPORT_DIR": str(exports("seeded")),
            **extra}


def test_slurm_array_tasks_write_every_case_once(tmp_path, checkpoint_path, exports):
    out = tmp_path / "segs"
    script = ROOT / "deploy/slurm/predict-array.sh"
    for task in range(3):
        env = _env(checkpoint_path, exports, SLURM_ARRAY_TASK_ID=str(task), SLURM_ARRAY_TASK_COUNT="3",
                   SLURM_ARRAY_TASK_MIN="0", SLURM_CPUS_PER_TASK="1")
        done = subprocess.run(["bash", script, DEMO / "imgs", out, "-q"], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == CASES
    written = []
    for task in range(3):
        timing = tmp_path / "segs.timing" / f"shard-{task}-of-3.csv"
        if timing.exists():  # a shard with no case writes no CSV
            with open(timing) as handle:
                written += [row["case"] for row in csv.DictReader(handle)]
    assert sorted(written) == CASES
    env = _env(checkpoint_path, exports, SLURM_ARRAY_TASK_ID="1", SLURM_ARRAY_TASK_COUNT="2", SLURM_ARRAY_TASK_MIN="1")
    done = subprocess.run(["bash", script, DEMO / "imgs", tmp_path / "other"], capture_output=True, text=True, env=env)
    assert done.returncode == 2 and "the array must start at 0" in done.stderr


def test_kubernetes_indexed_job_runs_each_index_with_the_challenge_entry_point(tmp_path, checkpoint_path, exports):
    job = yaml.safe_load((ROOT / "deploy/kubernetes/predict-job.yaml").read_text())
    spec = job["spec"]
    assert job["kind"] == "Job" and spec["completionMode"] == "Indexed"
    count = spec["completions"]
    assert spec["parallelism"] == count
    container = spec["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["memory"] == "8Gi"
    (command,) = container["args"]
    assert f'--shard "${{JOB_COMPLETION_INDEX}}/{count}"' in command and "predict.sh" in command
    env = {e["name"]: e["value"] for e in container["env"]}

    # Run each index's command as the pod would, with predict.sh from this checkout and local folders.
    inputs, out = tmp_path / "imgs", tmp_path / "segs"
    inputs.mkdir()
    for name in CASES:
        (inputs / name).symlink_to(DEMO / "imgs" / name)
    local = command.replace("/workspace/predict.sh", str(ROOT / "predict.sh"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "medsam-lite").write_text(f'#!/bin/sh\nexec {sys.executable} -m medsam_lite "$@"\n')
    (bin_dir / "medsam-lite").chmod(0o755)
    for index in range(count):
        pod_env = _env(checkpoint_path, exports, JOB_COMPLETION_INDEX=str(index), PATH=f"{bin_dir}:{os.environ['PATH']}",
                       **{k: str(tmp_path / os.path.basename(v)) for k, v in env.items()})
        done = subprocess.run([*container["command"], local], capture_output=True, text=True, env=pod_env)
        assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == CASES
    for name in CASES:
        assert np.load(out / name)["segs"].shape == np.load(DEMO / "gts" / name)["gts"].shape
