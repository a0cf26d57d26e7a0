"""Batch runs without loss: inputs are never written, a case too large for the memory left is refused before it
is read, a full disk or a vanished output folder fails only that case, and shards split a folder exactly."""
from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from medsam_lite.batch import guards, runner
from medsam_lite.cli import main
from medsam_lite.batch.folder import find_cases, select_shard, shard_of
from medsam_lite.batch.runner import run_folder
from medsam_lite.engines.cpu import pair_rule

from .conftest import ROOT

DEMO = ROOT / "test_demo"


def _predict(args, env=None):
    return CliRunner().invoke(main, ["predict", *map(str, args)], env=env)


def _small_case(folder: Path, name: str, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 50, (64, 80, 3), dtype=np.uint8)
    image[20:44, 25:60] = 200
    np.savez(folder / name, imgs=image, boxes=np.array([[24, 18, 61, 45]]))
    return folder / name


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        _small_case(folder, f"2DBox_case{i}.npz", i)
    return folder


@pytest.mark.parametrize("where", ["same", "inside", "overlay", "timing", "symlinked-output", "symlinked-input"])
def test_outputs_never_land_on_inputs(inputs, tmp_path, checkpoint_path, where):
    out = tmp_path / "out"
    args = ["-i", inputs, "-o", out, "--checkpoint", checkpoint_path("seeded"), "--overwrite"]
    if where == "same":
        args[3] = inputs
    elif where == "inside":
        args[3] = inputs / "segs"
    elif where == "overlay":
        args += ["--save-overlay", inputs]
    elif where == "timing":
        args += ["--timing-csv", inputs / "timing.csv"]
    elif where == "symlinked-output":
        (tmp_path / "link").symlink_to(inputs)
        args[3] = tmp_path / "link"
    else:  # an input that is a link to a file in the output folder
        out.mkdir()
        shutil.move(inputs / "2DBox_case1.npz", out / "2DBox_case1.npz")
        (inputs / "2DBox_case1.npz").symlink_to(out / "2DBox_case1.npz")
    before, before_out = _snapshot(inputs), _snapshot(out) if out.is_dir() else {}
    result = _predict(args)
    assert result.exit_code == 2, result.stderr
    message = result.stderr.strip()
    assert message.count("\n") == 0 and message.startswith("error: the ") and "overwritten" in message, message
    assert _snapshot(inputs) == before and (_snapshot(out) if out.is_dir() else {}) == before_out
    assert not (inputs / "segs").exists()


def _header_only_npz(path: Path, shape: tuple[int, ...]) -> None:
    """An .npz whose imgs header claims ``shape`` (uint8) but holds no data: the guard must refuse it unread."""
    header = {"descr": "|u1", "fortran_order": False, "shape": shape}
    with zipfile.ZipFile(path, "w") as archive:
        with archive.open("imgs.npy", "w") as handle:
            np.lib.format.write_array_header_2_0(handle, header)
        with archive.open("boxes.npy", "w") as handle:
            np.lib.format.write_array(handle, np.array([[0, 0, 0, 10, 10, 1]]))


@pytest.mark.parametrize("engine", ["torch", "openvino"])
def test_case_too_large_for_memory_is_refused_unread_and_the_run_goes_on(inputs, tmp_path, checkpoint_path, exports,
                                                                         engine):
    _header_only_npz(inputs / "3DBox_huge.npz", (4000, 4096, 4096))  # 64 GiB of image alone
    out = tmp_path / "out"
    chosen = ["--engine", "torch"] if engine == "torch" else ["--export-dir", exports("seeded")]
    result = _predict(["-i", inputs, "-o", out, "--checkpoint", checkpoint_path("seeded"), *chosen])
    assert result.exit_code == 1
    line = next(line for line in result.stderr.splitlines() if line.startswith("ERROR 3DBox_huge.npz:"))
    # 62.5 GiB image, 62.5 GiB labels, 1 GiB embedding cache, 128 MiB per-slice work, 256 MiB margin, and the
    # second encoder's 256 MiB only where slices go in pairs: the OpenVINO engine's ``slice_pairs``, by this CPU's
    # kind (engines.cpu.PAIR_RULES); the torch engine encodes one slice at a time
    needed = "129,664" if engine == "openvino" and pair_rule().pairs else "129,408"
    assert f"needs about {needed} MiB (imgs (4000, 4096, 4096)) but this process may use only" in line
    assert "not loaded" in line
    assert sorted(p.name for p in out.iterdir()) == ["2DBox_case0.npz", "2DBox_case1.npz"]


def test_second_encoder_is_counted_only_for_an_engine_that_pairs_slices():
    from medsam_lite.pipeline.segment import PAIRED_ENCODER_BYTES, PAIRS_FROM

    def needed(depth: int, slice_pairs: bool) -> int:
        header = guards.ArrayHeader(shape=(depth, 512, 512), dtype=np.dtype(np.int16))
        return guards.case_peak_bytes("3DBox_CT_x.npz", {"imgs": header}, 1 << 30, slice_pairs)

    assert needed(PAIRS_FROM, True) - needed(PAIRS_FROM, False) == PAIRED_ENCODER_BYTES
    assert needed(PAIRS_FROM - 1, True) == needed(PAIRS_FROM - 1, False)  # too few slices to pair
    # int16 image as stored and as uint8, uint8 labels, 4 MiB of embedding a slice, 8 bytes a pixel, the margin
    depth = PAIRS_FROM - 1
    assert needed(depth, False) == depth * 512 * 512 * 4 + depth * (4 << 20) + 8 * 512 * 512 + guards.CASE_MARGIN_BYTES


def test_memory_budget_from_environment_names_both_numbers(inputs, tmp_path, checkpoint_path):
    result = _predict(["-i", inputs, "-o", tmp_path / "out", "--checkpoint", checkpoint_path("seeded")],
                      env={guards.MEMORY_LIMIT_ENV: "100"})
    assert result.exit_code == 1
    for name in ("2DBox_case0.npz", "2DBox_case1.npz"):
        assert f"ERROR {name}: needs about 256 MiB (imgs (64, 80, 3)) but this process may use only 100 MiB more " \
               f"(${guards.MEMORY_LIMIT_ENV}=100)" in result.stderr
    bad = _predict(["-i", inputs, "-o", tmp_path / "out2", "--checkpoint", checkpoint_path("seeded")],
                   env={guards.MEMORY_LIMIT_ENV: "lots"})
    assert bad.exit_code == 2 and "must be a number of MiB, not 'lots'" in bad.stderr


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_cgroup_limit_is_read_and_counts_anonymous_memory(tmp_path, monkeypatch, version):
    if version == "v2":
        (tmp_path / "memory.max").write_text("8589934592\n")
        (tmp_path / "memory.current").write_text("5000000000\n")
        (tmp_path / "memory.stat").write_text("anon 1073741824\nfile 3900000000\ninactive_file 100\n")
    else:
        (tmp_path / "memory").mkdir()
        (tmp_path / "memory/memory.limit_in_bytes").write_text("8589934592\n")
        (tmp_path / "memory/memory.usage_in_bytes").write_text("5000000000\n")
        (tmp_path / "memory/memory.stat").write_text("cache 3900000000\nrss 1\ntotal_rss 1073741824\n")
    (tmp_path / "meminfo").write_text("MemTotal: 25000000 kB\nMemAvailable: 20000000 kB\n")
    monkeypatch.setattr(guards, "CGROUP_ROOT", tmp_path)
    monkeypatch.setattr(guards, "MEMINFO", tmp_path / "meminfo")
    monkeypatch.delenv(guards.MEMORY_LIMIT_ENV, raising=False)
    assert guards.cgroup_limit_bytes() == (8 << 30, 1 << 30)
    budget = guards.MemoryBudget.now()
    assert budget.bytes == 7 << 30 and budget.source == "cgroup memory limit 8192 MiB, 1024 MiB in use"
    (tmp_path / ("memory.max" if version == "v2" else "memory/memory.limit_in_bytes")).write_text(
        "max\n" if version == "v2" else "9223372036854771712\n")
    assert guards.cgroup_limit_bytes() == (None, None)
    assert guards.MemoryBudget.now().bytes == 20000000 * 1024


def test_a_timing_csv_that_cannot_be_written_is_said_before_or_after_the_cases(inputs, tmp_path, checkpoint_path,
                                                                             monkeypatch):
    """Its folder a file: said before any case runs (it was a traceback after all of them). A disk that fills
    by the end: one line after the summary, exit 2, the cases kept. A folder that does not exist yet is made."""
    import csv

    (tmp_path / "taken").write_text("a file")
    out = tmp_path / "out"
    refused = _predict(["-i", inputs, "-o", out, "--checkpoint", checkpoint_path("seeded"), "--timing-csv",
                        tmp_path / "taken" / "t.csv"])
    assert refused.exit_code == 2 and not out.exists()
    assert refused.stderr.strip() == (f"error: cannot write the timing CSV {tmp_path / 'taken' / 't.csv'}: "
                                      f"{tmp_path / 'taken'} is a file, not a folder")

    def full_disk(handle):
        handle.write("case,seconds\n")  # part of it, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(csv, "writer", full_disk)
    timing = tmp_path / "new" / "t.csv"
    late = _predict(["-i", inputs, "-o", out, "--checkpoint", checkpoint_path("seeded"), "--timing-csv", timing])
    monkeypatch.undo()
    assert late.exit_code == 2
    assert late.stderr.splitlines()[-2].startswith("2 written, 0 skipped (output exists), 0 failed of 2 case(s)")
    assert late.stderr.splitlines()[-1] == f"error: cannot write the timing CSV {timing}: no space left on device"
    assert sorted(os.listdir(out)) == ["2DBox_case0.npz", "2DBox_case1.npz"] and os.listdir(timing.parent) == []


def test_full_disk_fails_that_case_only_and_leaves_no_temporary_file(inputs, tmp_path, checkpoint_path, monkeypatch):
    import medsam_lite.core.atomic as outputs

    real, calls = np.savez_compressed, []

    def full_disk(handle, **arrays):
        calls.append(handle)
        if len(calls) == 1:  # the first case (sorted order): part of it is written, then the disk is full
            handle.write(b"x" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(handle, **arrays)

    monkeypatch.setattr(outputs.np, "savez_compressed", full_disk)
    out = tmp_path / "out"
    result = _predict(["-i", inputs, "-o", out, "--checkpoint", checkpoint_path("seeded")])
    assert result.exit_code == 1
    assert f"ERROR 2DBox_case0.npz: cannot write {out / '2DBox_case0.npz'}: no space left on device" in result.stderr
    assert sorted(os.listdir(out)) == ["2DBox_case1.npz"]  # no .part file, the next case written
    assert "1 written, 0 skipped (output exists), 1 failed" in result.stderr


@pytest.mark.parametrize("overlap_writes", [False, True])
def test_vanished_output_folder_fails_that_case_and_the_run_goes_on(inputs, tmp_path, torch_engines, overlap_writes,
                                                                    monkeypatch):
    """The folder vanishes once the first case is written and is back once the second case's write has failed:
    that case fails with a message naming the folder, the others are kept, in turn or with overlapped writes.
    (The cases wait for the write before them, so that the folder's changes never race with a write.)"""
    out = tmp_path / "out"
    out.mkdir()
    cases, _ = find_cases(inputs)
    written = [threading.Event() for _ in range(3)]
    real_write_case = runner.write_case

    def write_case(result, writer):  # the writer thread's call when writes overlap
        try:
            return real_write_case(result, writer)
        finally:
            next(event for event in written if not event.is_set()).set()

    monkeypatch.setattr(runner, "write_case", write_case)

    def cases_while_the_folder_vanishes():
        yield cases[0]
        assert written[0].wait(60)
        shutil.rmtree(out)
        yield cases[1]
        assert written[1].wait(60)
        out.mkdir()
        yield cases[0]

    results = list(run_folder(torch_engines("seeded"), cases_while_the_folder_vanishes(), out, overwrite=True,
                              overlap_writes=overlap_writes))
    assert all(event.is_set() for event in written)
    assert [r.case for r in results] == ["2DBox_case0.npz", "2DBox_case1.npz", "2DBox_case0.npz"]
    assert [r.status for r in results] == ["ok", "failed", "ok"]
    assert results[1].message == f"cannot write {out / '2DBox_case1.npz'}: the output folder {out} no longer exists"
    assert os.listdir(out) == ["2DBox_case0.npz"]  # the third case's file; never a temporary one


def test_a_case_is_written_while_the_next_is_computed(inputs, tmp_path, torch_engines, monkeypatch):
    """Folder mode: case k's files are written on the writer thread while case k+1 is encoded; the results come
    in case order, each when its file exists, equal to a run that writes in turn."""
    events: list[tuple[str, str, float]] = []
    write_segs = runner.write_segs
    second_encode = threading.Event()  # the first case's write waits for it

    def slow_write(path, segs):
        events.append(("write", threading.current_thread().name, time.monotonic()))
        time.sleep(0.5)
        if not any(e[0] == "written" for e in events):
            assert second_encode.wait(60), "the second case was not encoded while the first was being written"
        write_segs(path, segs)
        events.append(("written", Path(path).name, time.monotonic()))

    class Recording:
        def __init__(self, engine):
            self.engine = engine

        def __getattr__(self, name):
            return getattr(self.engine, name)

        def encode(self, image):
            events.append(("encode", "", time.monotonic()))
            if sum(e[0] == "encode" for e in events) == 2:
                second_encode.set()
            return self.engine.encode(image)

    monkeypatch.setattr(runner, "write_segs", slow_write)
    cases, _ = find_cases(inputs)
    out, in_turn = tmp_path / "out", tmp_path / "in-turn"
    out.mkdir()
    in_turn.mkdir()
    for result in run_folder(Recording(torch_engines("seeded")), cases, out, overlap_writes=True):
        assert result.status == "ok" and (out / result.case).exists()
        assert result.stages["write"] >= 0.5
    assert [e[1] for e in events if e[0] == "written"] == [p.name for p in cases]
    assert all(e[1].startswith("medsam-lite-write") for e in events if e[0] == "write")
    first_written = next(e[2] for e in events if e[0] == "written")
    second_encoded = [e[2] for e in events if e[0] == "encode"][1]
    assert second_encoded < first_written  # the second case was encoded while the first was being written
    events.clear()
    second_encode.set()  # written in turn, the first write cannot wait for the next encode
    for result in run_folder(Recording(torch_engines("seeded")), cases, in_turn, overlap_writes=False):
        assert result.status == "ok"
        events.append(("result", result.case, time.monotonic()))
    # written in turn: each case's file and result before the next case is encoded
    assert [e[0] for e in events] == ["encode", "write", "written", "result"] * 2
    for path in cases:
        np.testing.assert_array_equal(np.load(out / path.name)["segs"], np.load(in_turn / path.name)["segs"])


def test_a_stop_while_the_next_case_is_computed_still_reports_the_case_written(inputs, tmp_path, torch_engines,
                                                                           monkeypatch):
    """Ctrl+C or SIGTERM while case k+1 is computed and case k is written on the writer thread: case k's result
    still comes (it was lost: its file existed, the summary and the timing CSV did not list it), then the stop."""
    compute, computed = runner.compute_case, []

    def stopped_on_the_second(*args, **kwargs):
        if computed:
            raise KeyboardInterrupt
        computed.append(args[1].name)
        return compute(*args, **kwargs)

    monkeypatch.setattr(runner, "compute_case", stopped_on_the_second)
    cases, _ = find_cases(inputs)
    out = tmp_path / "out"
    out.mkdir()
    results = []
    with pytest.raises(KeyboardInterrupt):
        for result in run_folder(torch_engines("seeded"), cases, out, overlap_writes=True):
            results.append(result)
    assert [(r.case, r.status) for r in results] == [(cases[0].name, "ok")]
    assert sorted(p.name for p in out.iterdir()) == [cases[0].name]


def test_writes_overlap_only_with_a_cpu_left_for_them(tmp_path, monkeypatch):
    """``usable_cpus``: the affinity capped by a cgroup quota (v2, v1, none); writes overlap the next case only
    when ``--threads`` leaves one of those CPUs free."""
    affinity = len(os.sched_getaffinity(0))
    monkeypatch.setattr(guards, "CGROUP_ROOT", tmp_path)
    assert guards.usable_cpus() == affinity
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert guards.usable_cpus() == affinity
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # docker run --cpus 1.5
    assert guards.usable_cpus() == min(affinity, 2)
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert guards.usable_cpus() == 1
    assert not runner.writes_can_overlap(None) and not runner.writes_can_overlap(1)
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    monkeypatch.setattr(runner, "usable_cpus", lambda: 4)
    assert runner.writes_can_overlap(2) and runner.writes_can_overlap(3)
    assert not runner.writes_can_overlap(4) and not runner.writes_can_overlap(None)


def test_shards_are_disjoint_complete_and_stable_when_files_are_added():
    names = [Path(f"3DBox_CT_case{i:03d}.npz") for i in range(200)]
    shards = [select_shard(names, k, 4) for k in range(4)]
    assert sorted(p for s in shards for p in s) == sorted(names)
    assert all(30 <= len(s) <= 70 for s in shards), [len(s) for s in shards]
    more = names + [Path(f"2DBox_new{i}.npz") for i in range(50)]
    for k in range(4):
        assert [p for p in select_shard(more, k, 4) if p in names] == shards[k]
    assert all(shard_of(p.name, 1) == 0 for p in names)


def test_concurrent_shards_write_every_case_once_equal_to_one_run(tmp_path, exports, checkpoint_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(7):
        _small_case(inputs, f"2DBox_case{i}.npz", i)
    shutil.copy(DEMO / "imgs/3DBox_Synthetic_ellipsoids.npz", inputs)
    common = ["--checkpoint", str(checkpoint_path("seeded")), "--export-dir", str(exports("seeded")), "--threads", "1"]
    whole = tmp_path / "whole"
    assert _predict(["-i", inputs, "-o", whole, *common, "-q"]).exit_code == 0

    sharded = tmp_path / "sharded"
    count = 3
    processes = [
        subprocess.Popen([sys.executable, "-m", "medsam_lite", "predict", "-i", str(inputs), "-o", str(sharded),
                          "--shard", f"{k}/{count}", "--timing-csv", str(tmp_path / f"timing{k}.csv"), *common],
                         stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        for k in range(count)
    ]
    logs = [p.communicate(timeout=300)[1] for p in processes]
    assert [p.returncode for p in processes] == [0] * count, logs
    timings = [tmp_path / f"timing{k}.csv" for k in range(count)]  # a shard with no case writes none
    written = [line.split(",")[0] for t in timings if t.exists() for line in t.read_text().splitlines()[1:]]
    assert sorted(written) == sorted(p.name for p in inputs.iterdir())  # each case once, by exactly one shard
    assert _snapshot(sharded).keys() == _snapshot(whole).keys()
    for name in _snapshot(whole):
        assert np.array_equal(np.load(sharded / name)["segs"], np.load(whole / name)["segs"]), name

    # An interrupted shard: one of its outputs is missing; the re-run writes only that one.
    k = shard_of("3DBox_Synthetic_ellipsoids.npz", count)
    own = select_shard(sorted(inputs.iterdir()), k, count)
    (sharded / "3DBox_Synthetic_ellipsoids.npz").unlink()
    again = _predict(["-i", inputs, "-o", sharded, "--shard", f"{k}/{count}", *common])
    assert again.exit_code == 0, again.stderr
    assert f"1 written, {len(own) - 1} skipped (output exists), 0 failed" in again.stderr
    assert np.array_equal(np.load(sharded / "3DBox_Synthetic_ellipsoids.npz")["segs"],
                          np.load(whole / "3DBox_Synthetic_ellipsoids.npz")["segs"])


@pytest.mark.parametrize("value", ["4/4", "-1/3", "1", "a/b", "1/0"])
def test_malformed_shard_is_refused(inputs, tmp_path, value):
    result = _predict(["-i", inputs, "-o", tmp_path / "out", "--shard", value])
    assert result.exit_code == 2 and "expected K/N with 0 <= K < N" in result.stderr


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_run_stopped_by_sigterm_or_ctrl_c_keeps_what_it_finished_and_says_so(tmp_path, exports, checkpoint_path,
                                                                              stop):
    """A scheduler's time limit or `docker stop` (SIGTERM), or Ctrl+C: the finished cases are whole and in the
    timing CSV, the case under way leaves nothing, the exit code says which, and the same command does the rest."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    _small_case(inputs, "2DBox_first.npz")
    for name in ("a", "b", "c"):  # about a second each: the signal comes while one of them runs
        shutil.copy(DEMO / "imgs/3DBox_Synthetic_ellipsoids.npz", inputs / f"3DBox_Synthetic_{name}.npz")
    out, timing = tmp_path / "out", tmp_path / "timing.csv"
    command = [sys.executable, "-m", "medsam_lite", "predict", "-i", str(inputs), "-o", str(out), "--timing-csv",
               str(timing), "--checkpoint", str(checkpoint_path("seeded")), "--export-dir", str(exports("seeded"))]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    lines = []
    for line in process.stderr:  # the first case's line, then the signal
        lines.append(line)
        if line.startswith("2DBox_first.npz: 1 box(es)"):
            process.send_signal(stop)
            break
    lines += process.stderr.readlines()
    assert process.wait(60) == (143 if stop == signal.SIGTERM else 130), "".join(lines)
    said = "SIGTERM" if stop == signal.SIGTERM else "Ctrl+C"
    last = lines[-1]
    assert last.startswith(f"stopped by {said}: ") and "run the same command again to do the rest" in last, last
    written = sorted(p.name for p in out.iterdir())  # no hidden .part file of the case under way
    assert "2DBox_first.npz" in written and len(written) < 4 and f"{len(written)} written, " in last
    assert sorted(row.split(",")[0] for row in timing.read_text().splitlines()[1:]) == written
    for name in written:
        assert np.load(out / name)["segs"].any()

    again = subprocess.run(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert again.returncode == 0, again.stderr
    assert f"{4 - len(written)} written, {len(written)} skipped (output exists), 0 failed" in again.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in inputs.iterdir())
