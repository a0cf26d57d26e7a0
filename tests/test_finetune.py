"""``medsam-lite finetune``: data, samples, run folder, resume, data-parallel, adapters, and what best.pth is.

Runs here train a seeded stand-in checkpoint on copies of the synthetic test_demo cases for a few steps (a few
seconds each); the one real-data test overfits a real case with the official weights."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from medsam_lite.cli import main
from medsam_lite.core.case import CaseError
from medsam_lite.engines.checkpoint import load_model
from medsam_lite.train import FinetuneConfig, finetune
from medsam_lite.train.data import draw_split, find_cases, read_case
from medsam_lite.train.run_dir import RunDirError
from medsam_lite.train.samples import case_samples, jittered_box, labels_256
from medsam_lite.train.trainable import add_lora, official_state_dict, select_trainable

from .conftest import ROOT, shared_path

DEMO = ROOT / "test_demo"
CASES_2D = [f"2DBox_Synthetic_copy{i}.npz" for i in range(3)]
CASE_3D = "3DBox_Synthetic_vol.npz"


def _challenge_folder(root: Path) -> Path:
    """``root`` made a challenge folder: three copies of the 2D demo case and one of the 3D one, with labels."""
    for sub in ("imgs", "gts"):
        (root / sub).mkdir(parents=True)
        for name in CASES_2D:
            shutil.copy(DEMO / sub / "2DBox_Synthetic_ellipses.npz", root / sub / name)
        shutil.copy(DEMO / sub / "3DBox_Synthetic_ellipsoids.npz", root / sub / CASE_3D)
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """The challenge folder the runs read, made once: its embedding cache (``cache`` beside it, the runs' default)
    is filled by the first run that needs it and read by the others (a fill is about 6 s of encoding). Tests that
    test filling the cache give their own ``--cache-dir``; tests that change the cases take ``data_copy``."""
    return _challenge_folder(tmp_path_factory.mktemp("finetune") / "data")


@pytest.fixture()
def data_copy(tmp_path) -> Path:
    """A challenge folder of this test's own, to damage."""
    return _challenge_folder(tmp_path / "data")


def _config(data: Path, run: Path, checkpoint: Path, export: Path | None, **kw) -> FinetuneConfig:
    split = data.parent / "split-given.json"
    split.write_text(json.dumps({"train": CASES_2D[:2] + [CASE_3D], "val": CASES_2D[2:] + [CASE_3D]}))
    options = dict(data=[str(data)], run_dir=str(run), checkpoint=str(checkpoint), export_dir=str(export) if export else None,
                   cache_dir=str(data.parent / "cache"), cache_precision="f32", epochs=2, samples_per_epoch=8,
                   batch_size=4, lr=1e-3, amp="off", split=str(split), threads=2)
    options.update(kw)
    return FinetuneConfig(**options)


def _command(config: FinetuneConfig) -> list[str]:
    """``config`` as the `medsam-lite finetune` command line that makes the same run (the options ``_config`` sets)."""
    options = {"-o": config.run_dir, "--checkpoint": config.checkpoint, "--export-dir": config.export_dir,
               "--split": config.split, "--cache-dir": config.cache_dir, "--cache-precision": config.cache_precision,
               "--epochs": config.epochs, "--samples-per-epoch": config.samples_per_epoch,
               "--batch-size": config.batch_size, "--lr": config.lr, "--amp": config.amp, "--threads": config.threads,
               "--patience": config.patience}
    return ["finetune", *config.data, *(str(part) for option, value in options.items() if value is not None
                                        for part in (option, value))]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_cases_samples_and_targets(data):
    sources = find_cases([data])
    assert [s.name for s in sources] == sorted(CASES_2D + [CASE_3D])
    case = read_case(sources[0])
    assert case.image.shape == (1, 240, 320, 3) and case.labels.shape == (1, 240, 320) and not case.is_3d
    volume = read_case(next(s for s in sources if s.name == CASE_3D))
    assert volume.is_3d and volume.boxes.shape == (2, 6) and volume.spacing is not None
    # targets at 256: the label map resized as the image is (320 -> 256 wide, 240 -> 192 high), padded with 0
    target = labels_256(case.labels[0])
    assert target.shape == (256, 256) and not target[192:].any() and set(np.unique(target)) == {0, 1, 2}
    samples, skipped = case_samples(case, 0, min_pixels=10, flips=False)
    assert [(s.z, s.label) for s in samples] == [(0, 1), (0, 2)] and skipped == 0
    samples, skipped = case_samples(case, 0, min_pixels=10**6, flips=False)
    assert samples == [] and skipped == 2
    flipped, _ = case_samples(case, 0, min_pixels=10, flips=True)
    assert sum(s.flip for s in flipped) == 2
    assert np.array_equal(labels_256(case.labels[0], flip=True)[:192, :256], labels_256(case.labels[0][:, ::-1])[:192])
    # jitter moves each side by at most its bound, both ways, and keeps the box inside
    mask = target == 1
    ys, xs = np.nonzero(mask)
    tight = np.array([xs.min(), ys.min(), xs.max(), ys.max()])
    boxes = np.array([jittered_box(mask, 5, np.random.default_rng(i)) for i in range(200)])
    moves = boxes - tight
    assert moves.min() == -5 and moves.max() == 5 and (boxes >= 0).all() and (boxes <= 255).all()
    assert np.array_equal(jittered_box(mask, 0, np.random.default_rng(0)), tight.astype(np.float32))


def test_split_is_by_case_and_seeded():
    names = [f"case{i:03d}" for i in range(200)]
    split = draw_split(names, 0.25, seed=0, max_train=150)
    assert len(split["val"]) == 50 and len(split["train"]) == 150 and not set(split["val"]) & set(split["train"])
    assert draw_split(names, 0.25, seed=0, max_train=150) == split and draw_split(names, 0.25, seed=1) != split
    assert len(draw_split(names, 0.25, seed=0, max_train=20)["train"]) == 20


def test_bad_cases_are_named_and_left_out(data_copy, tmp_path):
    np.savez(data_copy / "gts" / CASES_2D[0], gts=np.zeros((240, 320), np.uint8))
    np.savez(data_copy / "gts" / CASES_2D[1], gts=np.zeros((100, 100), np.uint8))
    sources = {s.name: s for s in find_cases([data_copy])}
    with pytest.raises(CaseError, match="holds no labels"):
        read_case(sources[CASES_2D[0]])
    with pytest.raises(CaseError, match=r"\(100, 100\) but imgs is \(240, 320\): images and labels on different grids"):
        read_case(sources[CASES_2D[1]])
    (data_copy / "gts" / CASES_2D[2]).write_bytes(b"labels were exported elsewhere\n")
    with pytest.raises(CaseError, match=f"labels .*gts/{CASES_2D[2]}: not an .npz archive: neither a zip archive"):
        read_case(sources[CASES_2D[2]])
    with pytest.raises(ValueError, match="expected imgs/ \\+ gts/"):
        find_cases([tmp_path])


def test_labels_spacing_and_shapes_the_model_cannot_take_are_named(data_copy):
    gts = np.load(DEMO / "gts/2DBox_Synthetic_ellipses.npz")["gts"]
    np.savez(data_copy / "gts" / CASES_2D[0], gts=gts.astype(np.float32) + 0.5)
    np.savez(data_copy / "gts" / CASES_2D[1], gts=gts.astype(np.int16) - 1)
    with np.load(data_copy / "gts" / CASE_3D) as labelled:
        np.savez(data_copy / "gts" / CASE_3D, gts=labelled["gts"], spacing=np.array([np.nan, 1.0, 1.0]))
    sources = {s.name: s for s in find_cases([data_copy])}
    with pytest.raises(CaseError, match=f"gts in {CASES_2D[0]} holds non-integer values \\(float32\\)"):
        read_case(sources[CASES_2D[0]])  # was an IndexError out of the label renumbering
    with pytest.raises(CaseError, match=f"gts in {CASES_2D[1]} holds values -1..[0-9]+; labels are 0..65535"):
        read_case(sources[CASES_2D[1]])
    with pytest.raises(CaseError, match=r"spacing is \[nan, 1.0, 1.0\]; expected 3 positive, finite values"):
        read_case(sources[CASE_3D])
    np.savez(data_copy / "imgs" / CASES_2D[2], imgs=np.zeros((1200, 2, 3), np.uint8))  # no boxes: the labels' are taken
    np.savez(data_copy / "gts" / CASES_2D[2], gts=np.ones((1200, 2), np.uint8))
    with pytest.raises(CaseError, match=r"the image is 1200 x 2 pixels: .* up to 512:1"):
        read_case(sources[CASES_2D[2]])
    image = np.load(DEMO / "imgs/2DBox_Synthetic_ellipses.npz")["imgs"]
    np.savez(data_copy / "imgs" / CASES_2D[2], imgs=image)
    np.savez(data_copy / "gts" / CASES_2D[2], gts=gts)
    case = read_case(sources[CASES_2D[2]])
    assert case.labels.max() == len(np.unique(gts[gts > 0])) and len(case.boxes) == case.labels.max()


def test_run_trains_validates_and_writes_a_usable_run(data, tmp_path, checkpoint_path, exports):
    run = tmp_path / "run"
    config = _config(data, run, checkpoint_path("seeded"), exports("seeded"))
    result = finetune(config)
    assert result.finished and result.epochs_run == 2 and result.train_cases == 3 and result.val_cases == 2
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["best.pth", "config.json", "curves.png", "last.pt", "metrics.csv", "split.json", "summary.json", "summary.txt",
         "val_cases.csv"])
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,train_loss") and [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2"]
    # best.pth: a plain state dict in the official layout that the command line loads as any checkpoint
    model, notes = load_model(run / "best.pth")
    assert notes == [] and set(_weights(run / "best.pth")) == set(_weights(checkpoint_path("seeded")))
    out = tmp_path / "segs"
    cli = CliRunner().invoke(main, ["predict", "-i", str(data / "imgs"), "-o", str(out), "--checkpoint",
                                    str(run / "best.pth"), "--engine", "torch", "-q"])
    assert cli.exit_code == 0, cli.stderr
    assert len(list(out.glob("*.npz"))) == 4
    # the encoder and prompt encoder are untouched by --train decoder
    start, best = _weights(checkpoint_path("seeded")), _weights(run / "best.pth")
    assert all(torch.equal(start[k], best[k]) for k in start if not k.startswith("mask_decoder."))
    summary = (run / "summary.txt").read_text()
    assert "validation DSC" in summary and "3 cases" in summary
    # the embedding cache is reused by a second run
    again = CliRunner().invoke(main, ["finetune", str(data), "-o", str(tmp_path / "run2"), "--checkpoint",
                                      str(checkpoint_path("seeded")), "--export-dir", str(exports("seeded")),
                                      "--cache-dir", config.cache_dir, "--cache-precision", "f32", "--epochs", "1",
                                      "--samples-per-epoch", "4", "--batch-size", "4", "--amp", "off",
                                      "--split", config.split])
    assert again.exit_code == 0, again.stderr
    assert "embeddings of all 4 cases from the cache" in again.stderr


def test_run_folder_rules(data, tmp_path, checkpoint_path, exports):
    run = tmp_path / "run"
    config = _config(data, run, checkpoint_path("seeded"), exports("seeded"), epochs=1)
    finetune(config)
    with pytest.raises(RunDirError, match="already holds a run; continue it with --resume"):
        finetune(config)
    result = CliRunner().invoke(main, ["finetune", str(data), "-o", str(run)])
    assert result.exit_code == 2 and "already holds a run" in result.stderr
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with pytest.raises(RunDirError, match="cannot write the run folder"):
        finetune(_config(data, blocked / "run", checkpoint_path("seeded"), exports("seeded")))
    with pytest.raises(RunDirError, match="nothing to resume"):
        finetune(_config(data, tmp_path / "empty", checkpoint_path("seeded"), exports("seeded")), resume=True)
    assert finetune(config, overwrite=True).finished


def test_interrupted_and_resumed_equals_uninterrupted(data, tmp_path, checkpoint_path, exports):
    whole = finetune(_config(data, tmp_path / "a" / "run", checkpoint_path("seeded"), exports("seeded"), epochs=3, patience=0))
    config = _config(data, tmp_path / "b" / "run", checkpoint_path("seeded"), exports("seeded"), epochs=3, patience=0)
    first = finetune(config, stop_after=1)
    assert not first.finished and first.epochs_run == 1
    result = CliRunner().invoke(main, ["finetune", "--resume", str(tmp_path / "b" / "run")])
    assert result.exit_code == 0, result.stderr
    assert "resumed" in result.stderr
    a, b = torch.load(tmp_path / "a/run/last.pt", weights_only=False), torch.load(tmp_path / "b/run/last.pt", weights_only=False)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    without_seconds = lambda run: [row.rsplit(",", 1)[0] for row in (run / "metrics.csv").read_text().splitlines()]  # noqa: E731
    assert without_seconds(tmp_path / "a/run") == without_seconds(tmp_path / "b/run")
    assert len(without_seconds(tmp_path / "a/run")) == 5  # header, epochs 0..3
    assert whole.val_dsc_after == pytest.approx(json.loads((tmp_path / "b/run/summary.json").read_text())["val_dsc_after"])


def test_a_run_stopped_while_encoding_its_cache_resumes(data, tmp_path, checkpoint_path, exports, monkeypatch):
    """Stopped (Ctrl+C, a scheduler's SIGTERM) before its first last.pt, while the embedding cache fills: the
    command says how to go on, --resume starts the run from its config and split and equals an uninterrupted run
    (both -o and --resume refused such a folder before, each naming the other)."""
    from medsam_lite.train.cache_build import CacheFiller

    whole = _config(data, tmp_path / "a" / "run", checkpoint_path("seeded"), exports("seeded"), epochs=1)
    finetune(whole)
    run = tmp_path / "b" / "run"
    add, added = CacheFiller.add, []

    def add_then_stop(self, source, case):
        if added:
            raise KeyboardInterrupt  # as Ctrl+C would, after the first case is in the cache
        added.append(source)
        return add(self, source, case)

    monkeypatch.setattr(CacheFiller, "add", add_then_stop)
    stopped = CliRunner().invoke(main, _command(replace(whole, run_dir=str(run), cache_dir=str(tmp_path / "b" / "cache"))))
    assert stopped.exit_code == 130, stopped.stderr
    assert f"stopped by Ctrl+C: `medsam-lite finetune --resume {run}` continues" in stopped.stderr
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "split.json"]
    monkeypatch.setattr(CacheFiller, "add", add)
    resumed = CliRunner().invoke(main, ["finetune", "--resume", str(run)])
    assert resumed.exit_code == 0, resumed.stderr
    assert "stopped before its starting weights were scored" in resumed.stderr
    without_seconds = lambda run: [row.rsplit(",", 1)[0] for row in (run / "metrics.csv").read_text().splitlines()]  # noqa: E731
    assert without_seconds(run) == without_seconds(tmp_path / "a" / "run") and len(without_seconds(run)) == 3
    a, b = _weights(tmp_path / "a/run/best.pth"), _weights(run / "best.pth")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_processes_equal_one(data, tmp_path, checkpoint_path, exports):
    """torchrun with 2 CPU processes (Gloo), each taking half of every batch, ends where one process ends."""
    one = _config(data, tmp_path / "one" / "run", checkpoint_path("seeded"), exports("seeded"), epochs=1, patience=0)
    finetune(one)
    two = _config(data, tmp_path / "two" / "run", checkpoint_path("seeded"), exports("seeded"), epochs=1, patience=0,
                  threads=1)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "medsam_lite",
               *_command(two)]
    proc = subprocess.run(command, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, encoding="utf-8",
                          errors="replace", timeout=600)  # tqdm's bars are UTF-8 whatever the locale
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 processes" in proc.stderr
    a = torch.load(tmp_path / "one/run/last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "two/run/last.pt", weights_only=False)["model"]
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    changed = max(float((a[k] - _weights(checkpoint_path("seeded"))[k]).abs().max()) for k in a)
    assert worst < 1e-4 < changed, (worst, changed)


def test_lora_merges_into_the_official_layout(checkpoint_path):
    model, _ = load_model(checkpoint_path("seeded"))
    trained = select_trainable(model, "lora", lora_rank=4)
    assert any(".lora_" in n for n in trained) and not any(n.startswith("image_encoder.") and ".lora_" not in n for n in trained)
    torch.manual_seed(0)
    for name, param in model.named_parameters():
        if name.endswith("lora_b"):
            param.data.normal_(0, 0.02)  # a trained adapter (B starts at zero)
    merged = official_state_dict(model)
    plain, _ = load_model(checkpoint_path("seeded"))
    assert set(merged) == set(plain.state_dict())
    plain.load_state_dict(merged, strict=True)
    image = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        ours, theirs = model.encode(image), plain.encode(image)
        base, _ = load_model(checkpoint_path("seeded"))
        untouched = base.encode(image)
    assert float((ours - theirs).abs().max()) < 1e-4 < float((ours - untouched).abs().max())
    assert add_lora(plain, 2) > 0


def test_all_keeps_batchnorm_statistics(data, tmp_path, checkpoint_path):
    run = tmp_path / "run"
    result = finetune(_config(data, run, checkpoint_path("seeded"), None, train="all", epochs=1, samples_per_epoch=2,
                              batch_size=2))
    assert result.finished
    start, best = _weights(checkpoint_path("seeded")), torch.load(run / "last.pt", weights_only=False)["model"]
    stats = [k for k in start if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(start[k], best[k]) for k in stats)
    assert any(not torch.equal(start[k], best[k]) for k in start if k.startswith("image_encoder.") and k.endswith("weight"))


def test_one_real_case_overfits(tmp_path, checkpoint_path):
    """A real 2D case, trained and validated on itself: the official weights' decoder can fit it (DSC >= 0.95)."""
    name = "2DBox_US_BP21_heart.npz"
    root = tmp_path / "data"
    for sub in ("imgs", "gts"):
        (root / sub).mkdir(parents=True)
        shutil.copy(shared_path("cases_mm", sub, name), root / sub / name)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": [name], "val": [name]}))
    result = finetune(FinetuneConfig(data=[str(root)], run_dir=str(tmp_path / "run"), checkpoint=str(checkpoint_path("official")),
                                     split=str(split), cache_dir=str(tmp_path / "cache"), cache_precision="f32",
                                     epochs=10, samples_per_epoch=0, batch_size=2, lr=3e-4, jitter=0, patience=0, amp="off"))
    assert result.val_dsc_after >= 0.95, result


def test_image_and_label_folders_read_as_segment_reads_them(tmp_path):
    """images/ + labels/ (NIfTI here): the MR rule of `segment`, labels renumbered 1..N, boxes from the labels,
    spacing in (z, y, x); a label map on another grid is named."""
    from .imagefiles import write_medical

    volume = np.load(DEMO / "imgs" / "3DBox_Synthetic_ellipsoids.npz")["imgs"]
    labels = np.load(DEMO / "gts" / "3DBox_Synthetic_ellipsoids.npz")["gts"]
    root = tmp_path / "pairs"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    write_medical(root / "images" / "vol_0000.nii.gz", volume.astype(np.int16) * 3, (0.8, 0.8, 2.5))
    write_medical(root / "labels" / "vol.nii.gz", (labels * 5).astype(np.uint8), (0.8, 0.8, 2.5))
    write_medical(root / "images" / "other.nii.gz", volume.astype(np.int16), (0.8, 0.8, 2.5))
    write_medical(root / "labels" / "other.nii.gz", labels[:, :100].astype(np.uint8), (0.8, 0.8, 2.5))
    sources = {s.name: s for s in find_cases([root])}
    assert sorted(sources) == ["other", "vol"]
    case = read_case(sources["vol"], modality="MR")
    assert case.is_3d and case.image.dtype == np.uint8 and case.image.shape == volume.shape
    assert np.array_equal(case.labels, labels) and case.spacing == pytest.approx((2.5, 0.8, 0.8))
    assert case.boxes.shape == (2, 6)
    with pytest.raises(CaseError, match="other.nii.gz: the label map other.nii.gz is"):
        read_case(sources["other"], modality="MR")


def test_a_full_disk_stops_the_run_with_one_line_and_resume_finishes_it(data, tmp_path, checkpoint_path, exports,
                                                                         monkeypatch):
    """No space left for the embedding cache (a memory map's writes then killed the process with a SIGBUS and
    left the part written) or for best.pth (torch's writer: a RuntimeError traceback): one line naming the file,
    nothing half-written, and --resume finishes the run once there is room."""
    import medsam_lite.core.atomic as atomic
    import medsam_lite.train.embeddings as embeddings

    run, cache = tmp_path / "run", tmp_path / "cache"
    command = _command(_config(data, run, checkpoint_path("seeded"), exports("seeded"), epochs=1, cache_dir=str(cache)))
    real_mkstemp = atomic.tempfile.mkstemp

    def best_onto_full_disk(**options):  # best.pth's temporary file is /dev/full: every write is ENOSPC
        fd, name = real_mkstemp(**options)
        if options["suffix"].endswith(".pth"):
            os.close(fd)
            os.unlink(name)
            os.symlink("/dev/full", name)
            fd = os.open(name, os.O_WRONLY)
        return fd, name

    def no_blocks(fd, offset, length):
        raise OSError(28, "No space left on device")

    hint = f"(nothing half-written was left). Free space there, then `medsam-lite finetune --resume {run}` continues"
    for module, name, full, file in [(embeddings.os, "posix_fallocate", no_blocks, cache),
                                     (atomic.tempfile, "mkstemp", best_onto_full_disk, run / "best.pth")]:
        monkeypatch.setattr(module, name, full)
        failed = CliRunner().invoke(main, command if not run.exists() else ["finetune", "--resume", str(run)])
        monkeypatch.undo()
        assert failed.exit_code == 2, failed.stderr
        said = failed.stderr.splitlines()[-1]
        assert said.startswith(f"error: cannot write {file}") and f": no space left on device {hint}" in said, said
        left = [p.name for p in [*run.rglob("*"), *cache.rglob("*")] if ".part" in p.name]
        assert left == [] and not (run / "best.pth").exists()
    assert sorted(p.name for p in cache.rglob("*.npy")) != []  # the cache was filled the second time
    resumed = CliRunner().invoke(main, ["finetune", "--resume", str(run)])
    assert resumed.exit_code == 0, resumed.stderr
    assert set(_weights(run / "best.pth")) == set(_weights(checkpoint_path("seeded")))


def test_the_cache_removes_the_part_a_killed_run_was_encoding(tmp_path):
    """A run killed outright (the OOM killer) leaves the case it was encoding as a hidden part, up to 2 MiB a
    slice: the next run's cache removes it once an hour old; a fresh part (another run's) and the cases stay."""
    import time

    from medsam_lite.train.embeddings import EmbeddingCache

    dead, fresh, case = tmp_path / ".0a1b.npy.x1.part.npy", tmp_path / ".2c3d.npy.x2.part.npy", tmp_path / "0a1b.npy"
    for path in (dead, fresh, case):
        path.write_bytes(bytes(100))
    two_hours_ago = time.time() - 7200
    for path in (dead, case):
        os.utime(path, (two_hours_ago, two_hours_ago))
    EmbeddingCache(tmp_path, "0" * 64, "f32")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fresh.name, case.name])


def test_a_cache_folder_that_cannot_be_written_is_one_line(data, tmp_path, checkpoint_path, exports):
    (tmp_path / "taken").write_text("a file")
    done = CliRunner().invoke(main, ["finetune", str(data), "-o", str(tmp_path / "run"), "--checkpoint",
                                     str(checkpoint_path("seeded")), "--export-dir", str(exports("seeded")),
                                     "--cache-dir", str(tmp_path / "taken" / "cache"), "--cache-precision", "f32"])
    assert done.exit_code == 2  # was a NotADirectoryError traceback
    from medsam_lite.engines.weights import checkpoint_sha256

    folder = tmp_path / "taken" / "cache" / f"{checkpoint_sha256(checkpoint_path('seeded'))[:16]}-f32"
    assert done.stderr.splitlines()[-1] == (f"error: the embedding cache folder {folder} cannot be written: Not a "
                                            f"directory; choose another with --cache-dir")
