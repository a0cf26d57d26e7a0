"""The predict command end to end on test_demo: outputs, timing CSV, overlays, reruns, checkpoint lookup; the other
commands stopped by a signal."""
from __future__ import annotations

import csv
import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from medsam_lite.cli import main

from .conftest import ROOT

DEMO = ROOT / "test_demo"


def _predict(args, env=None):
    return CliRunner().invoke(main, ["predict", *map(str, args)], env=env)


def test_test_demo_end_to_end(tmp_path, checkpoint_path):
    out, overlays, timing = tmp_path / "segs", tmp_path / "png", tmp_path / "timing.csv"
    result = _predict(["-i", DEMO / "imgs", "-o", out, "--checkpoint", checkpoint_path("seeded"),
                       "--save-overlay", overlays, "--timing-csv", timing, "--threads", 2])
    assert result.exit_code == 0, result.stderr
    for name in ("2DBox_Synthetic_ellipses.npz", "3DBox_Synthetic_ellipsoids.npz"):
        gts = np.load(DEMO / "gts" / name)["gts"]
        segs = np.load(out / name)["segs"]
        assert segs.shape == gts.shape and segs.dtype == np.uint8
        assert set(np.unique(segs)) <= {0, 1, 2}
        assert (overlays / name.replace(".npz", ".png")).stat().st_size > 1000
    with open(timing) as handle:
        rows = {r["case"]: r for r in csv.DictReader(handle)}
    assert list(rows) == ["2DBox_Synthetic_ellipses.npz", "3DBox_Synthetic_ellipsoids.npz"]
    assert rows["2DBox_Synthetic_ellipses.npz"]["slices_encoded"] == "1"
    boxes = np.load(DEMO / "imgs/3DBox_Synthetic_ellipsoids.npz")["boxes"]
    covered = {z for b in boxes for z in range(b[2], b[5] + 1)}
    assert rows["3DBox_Synthetic_ellipsoids.npz"]["slices_encoded"] == str(len(covered))
    assert rows["3DBox_Synthetic_ellipsoids.npz"]["boxes"] == "2"
    assert float(rows["3DBox_Synthetic_ellipsoids.npz"]["seconds"]) > 0
    first, second = rows.values()
    assert float(first["startup_s"]) > 0 and float(second["startup_s"]) == 0  # the process's, on its first case
    for row in rows.values():
        assert row["model"] == "torch" and row["precision"] == "f32"
        stages = {k: float(v) for k, v in row.items() if k.endswith("_s")}
        assert all(stages[f"{s}_s"] > 0 for s in ("load", "preprocess", "encoder", "decoder", "postprocess", "write"))
        assert sum(stages.values()) - stages["startup_s"] <= float(row["seconds"]) + 1e-3


def test_rerun_skips_existing_outputs_unless_overwrite(tmp_path, checkpoint_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    shutil.copy(DEMO / "imgs/2DBox_Synthetic_ellipses.npz", inputs / "2DBox_a.npz")
    shutil.copy(DEMO / "imgs/2DBox_Synthetic_ellipses.npz", inputs / "2DBox_b.npz")
    assert _predict(["-i", inputs, "-o", out, "--checkpoint", checkpoint_path("seeded")]).exit_code == 0
    (out / "2DBox_b.npz").unlink()  # as if the run had crashed before b
    kept = (out / "2DBox_a.npz").stat().st_mtime_ns
    result = _predict(["-i", inputs, "-o", out, "--checkpoint", checkpoint_path("seeded")])
    assert "1 written, 1 skipped (output exists), 0 failed" in result.stderr
    assert (out / "2DBox_b.npz").exists() and (out / "2DBox_a.npz").stat().st_mtime_ns == kept
    result = _predict(["-i", inputs, "-o", out, "--checkpoint", checkpoint_path("seeded"), "--overwrite", "-q"])
    assert "2 written, 0 skipped" in result.stderr
    assert (out / "2DBox_a.npz").stat().st_mtime_ns != kept
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_missing_checkpoint_is_one_paragraph_with_where_to_get_it(tmp_path):
    env = {"MEDSAM_LITE_CHECKPOINT": str(tmp_path / "nowhere.pth")}
    result = _predict(["-i", DEMO / "imgs", "-o", tmp_path / "out"], env=env)
    assert result.exit_code == 2
    message = result.stderr.strip()
    assert message.count("\n") == 0
    assert "nowhere.pth" in message and "work_dir/LiteMedSAM/lite_medsam.pth" in message and "MedSAM" in message
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_checkpoint_from_environment(tmp_path, checkpoint_path):
    env = {"MEDSAM_LITE_CHECKPOINT": str(checkpoint_path("seeded"))}
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(DEMO / "imgs/2DBox_Synthetic_ellipses.npz", inputs)
    result = _predict(["-i", inputs, "-o", tmp_path / "out"], env=env)
    assert result.exit_code == 0 and str(checkpoint_path("seeded")) in result.stderr


def test_auto_engine_says_why_it_runs_torch_where_the_export_folder_is_empty(tmp_path, checkpoint_path):
    folder = tmp_path / "my-export"
    folder.mkdir()
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(DEMO / "imgs/2DBox_Synthetic_ellipses.npz", inputs)
    result = _predict(["-i", inputs, "-o", tmp_path / "out", "--checkpoint", checkpoint_path("seeded"),
                       "--export-dir", folder])
    assert result.exit_code == 0, result.stderr
    assert (f"note: {folder} holds no OpenVINO export, so the torch engine runs; `medsam-lite export --checkpoint "
            f"{checkpoint_path('seeded')} --out {folder}` once gives the faster OpenVINO engine") in result.stderr
    assert "torch engine" in result.stderr and not any(folder.iterdir())  # nothing written there unasked
    explicit = _predict(["-i", inputs, "-o", tmp_path / "out2", "--checkpoint", checkpoint_path("seeded"),
                         "--engine", "torch", "--export-dir", folder])
    assert explicit.exit_code == 0 and "holds no OpenVINO export" not in explicit.stderr  # torch was asked for


def test_console_script_and_module_entry_point(tmp_path):
    """Both entry points end the process at once (os._exit) with main's exit code and its output flushed."""
    for command in (["medsam-lite"], [sys.executable, "-m", "medsam_lite"]):
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run([*command, "predict", "--help"], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        assert "--save-overlay" in done.stdout and "--timing-csv" in done.stdout
        done = subprocess.run([*command, "predict", "-i", DEMO / "imgs", "-o", DEMO / "imgs"], capture_output=True,
                              text=True, env=env)
        assert done.returncode == 2 and "the output folder" in done.stderr and "is the input folder" in done.stderr
        done = subprocess.run([*command, "predict", "-i", tmp_path / "none", "-o", tmp_path], capture_output=True,
                              text=True, env=env)
        assert done.returncode == 2 and "does not exist" in done.stderr


def test_readme_flow_export_predict_evaluate_on_test_demo(tmp_path, checkpoint_path):
    """The README's first commands on test_demo: export, predict (picks the export), evaluate."""
    export_dir, segs, metrics = tmp_path / "openvino", tmp_path / "segs", tmp_path / "metrics.csv"
    runner = CliRunner()
    done = runner.invoke(main, ["export", "--checkpoint", str(checkpoint_path("seeded")), "--out", str(export_dir)])
    assert done.exit_code == 0, done.stderr
    assert "max abs difference" in done.stderr and (export_dir / "manifest.json").is_file()
    done = _predict(["-i", DEMO / "imgs", "-o", segs, "--checkpoint", checkpoint_path("seeded"), "--export-dir", export_dir])
    assert done.exit_code == 0, done.stderr
    assert "openvino f32 engine" in done.stderr and "2 written, 0 skipped" in done.stderr
    done = runner.invoke(main, ["evaluate", "-s", str(segs), "-g", str(DEMO / "gts"), "-o", str(metrics), "-q"])
    assert done.exit_code == 0, done.stderr
    with open(metrics) as handle:
        rows = {r["case"]: r for r in csv.DictReader(handle)}
    assert sorted(rows) == ["2DBox_Synthetic_ellipses.npz", "3DBox_Synthetic_ellipsoids.npz"]
    for row in rows.values():
        assert 0.0 < float(row["dsc"]) <= 1.0 and 0.0 <= float(row["nsd"]) <= 1.0


def _wait_for(condition, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"no {what} in {seconds} s"
        time.sleep(0.02)


def test_an_export_stopped_by_sigterm_removes_its_temporary_folder_and_says_so(tmp_path, checkpoint_path):
    """A SIGTERM (a scheduler's limit, docker stop) during a command that does not report stops of its own: one
    line, exit 143, and the temporary folder under way removed (the unhandled signal killed it and left it)."""
    out = tmp_path / "export"
    process = subprocess.Popen([sys.executable, "-m", "medsam_lite", "export", "--checkpoint",
                                str(checkpoint_path("seeded")), "--out", str(out)],
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        _wait_for(lambda: out.is_dir() and any(p.is_dir() for p in out.iterdir()), "temporary folder in the export")
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 143
    finally:
        process.kill()
    assert process.stderr.read().splitlines()[-1] == ("stopped by SIGTERM before it finished; nothing half-written "
                                                      "was left (run the same command again)")
    assert [p.name for p in out.iterdir() if p.is_dir()] == []
    assert not (out / "manifest.json").exists()  # not taken for a whole export


def test_evaluate_with_workers_stopped_by_ctrl_c_says_one_line(tmp_path):
    """Ctrl+C in a terminal reaches every process of the group: the pool's workers leave the stop to the parent
    (each printed a traceback), which ends with one line and exit 130, and no CSV."""
    for folder, key in (("segs", "segs"), ("gts", "gts")):
        (tmp_path / folder).mkdir()
        labels = np.zeros((60, 256, 256), np.uint8)
        labels[10:50, 40:200, 50:210 if key == "gts" else 205] = 1
        np.savez(tmp_path / folder / "3DBox_CT_0.npz", **{key: labels}, spacing=np.array([1.0, 1.0, 1.0]))
        for k in range(1, 200):  # far more than the second the test lets it run
            os.symlink("3DBox_CT_0.npz", tmp_path / folder / f"3DBox_CT_{k}.npz")
    process = subprocess.Popen([sys.executable, "-m", "medsam_lite", "evaluate", "-s", str(tmp_path / "segs"), "-g",
                                str(tmp_path / "gts"), "-o", str(tmp_path / "metrics.csv"), "--workers", "2", "-q"],
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                               preexec_fn=lambda: (os.setsid(), signal.signal(signal.SIGINT, signal.SIG_DFL)))
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    try:
        _wait_for(lambda: len(children.read_text().split()) >= 2, "pool workers")
        time.sleep(0.3)  # the workers are scoring
        os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl+C
        assert process.wait(60) == 130
    finally:
        process.kill()
    said = process.stderr.read()
    assert "Traceback" not in said and said.splitlines() == [
        "stopped by Ctrl+C before it finished; nothing half-written was left (run the same command again)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gts", "segs"]


def test_an_export_onto_a_full_disk_says_so_in_one_line(tmp_path, checkpoint_path, monkeypatch):
    import torch

    def full_disk(module, inputs, path, **options):
        Path(path).write_bytes(b"x" * 1000)  # part of a graph, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch.onnx, "export", full_disk)
    out = tmp_path / "export"
    dead = out / ".medsam-lite-export-dead"  # the temporary folder of an export killed two hours ago
    dead.mkdir(parents=True)
    (dead / "image_encoder.onnx").write_bytes(bytes(1000))
    os.utime(dead, (time.time() - 7200, time.time() - 7200))
    result = CliRunner().invoke(main, ["export", "--checkpoint", str(checkpoint_path("seeded")), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines()[-1] == (f"error: cannot write the export to {out}: no space left on device (it "
                                              f"needs about 200 MB; the folder is not a usable export)")
    assert list(out.iterdir()) == []  # the temporary folder with the part written is gone, and the dead one


def test_openvinos_iostream_error_on_a_full_disk_is_taken_for_one(tmp_path, monkeypatch):
    """OpenVINO's save_model ends a full disk with "RuntimeError: basic_ios::clear: iostream error": with little
    room left that is ENOSPC (one line from export); with room, some other fault, raised as it came."""
    import shutil as shutil_module
    from collections import namedtuple

    from medsam_lite.engines.export import _save_ir

    class FakeOpenVINO:
        def save_model(self, model, path, compress_to_fp16):
            Path(path).write_bytes(b"<?xml")
            raise RuntimeError("basic_ios::clear: iostream error")

    usage = namedtuple("usage", "total used free")
    for free, raised in [(10 * 2**20, OSError), (10 * 2**30, RuntimeError)]:
        monkeypatch.setattr(shutil_module, "disk_usage", lambda path, free=free: usage(2**40, 0, free))
        with pytest.raises(raised) as caught:
            _save_ir(FakeOpenVINO(), None, tmp_path / "image_encoder.xml")
        assert raised is RuntimeError or caught.value.errno == errno.ENOSPC


def test_temporaries_a_killed_run_left_are_removed_once_stale(tmp_path, checkpoint_path, exports):
    """SIGKILL (the out-of-memory killer) leaves a write's temporary behind: the next run removes those older than
    an hour (and says so), never a fresh one, which may be another process's write under way."""
    out, hour_ago = tmp_path / "segs", time.time() - 2 * 3600
    out.mkdir()
    stale, fresh = out / ".3DBox_big.npz.k2j4x.part", out / ".2DBox_other.npz.a8f3s.part"
    for path in (stale, fresh):
        path.write_bytes(b"PK" + bytes(1000))
    os.utime(stale, (hour_ago, hour_ago))
    inputs = tmp_path / "imgs"
    inputs.mkdir()
    shutil.copy(DEMO / "imgs/2DBox_Synthetic_ellipses.npz", inputs)
    result = _predict(["-i", inputs, "-o", out, "--checkpoint", checkpoint_path("seeded"), "--export-dir",
                       exports("seeded"), "-q"])
    assert result.exit_code == 0, result.stderr
    assert f"note: removed 1 temporary file(s) a killed run left in {out} (.3DBox_big.npz.k2j4x.part)" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted([fresh.name, "2DBox_Synthetic_ellipses.npz"])
