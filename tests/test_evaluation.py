"""Evaluation: equal to the official compute_metrics.py on the shared pairs, and right on analytic shapes."""
from __future__ import annotations

import csv
import errno
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

from evaluation.metrics import case_metrics, surface_dice
from evaluation.runner import modality
from evaluation.surfels import surfel_areas

from .conftest import ROOT, shared_path


def _read_csv(path):
    with open(path) as handle:
        return {row["case"]: row for row in csv.DictReader(handle)}


def test_all_shared_pairs_equal_official_metrics(tmp_path):
    """Through the official command line; every case's DSC and NSD equal the official CSV to 1e-4."""
    out = tmp_path / "metrics.csv"
    done = subprocess.run(
        [sys.executable, "-m", "evaluation.compute_metrics", "-s", shared_path("metrics", "segs"),
         "-g", shared_path("metrics", "gts"), "-csv_dir", out, "-num_workers", "2"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    official = _read_csv(shared_path("metrics", "official_metrics.csv"))
    ours = _read_csv(out)
    assert list(ours) == sorted(official) == list(official)  # same cases, '.npz' kept, sorted
    for case, row in official.items():
        mine = ours[case]
        assert mine["dsc"] != "" and mine["nsd"] != "", case
        assert float(mine["nsd"]) == pytest.approx(float(row["nsd"]), abs=1e-4), case
        if row["dsc"] == "":  # the official NaN: a label absent from both files
            assert case == "3DBox_CT_edge_nanlabel.npz"
            assert math.isfinite(float(mine["dsc"])) and "skipped label(s) 1" in mine["note"]
        else:
            assert float(mine["dsc"]) == pytest.approx(float(row["dsc"]), abs=1e-4), case
            assert mine["note"] == ""


def test_official_weights_outputs_score_as_the_official_metrics():
    """`medsam-lite evaluate` on the official script's outputs with the official weights (reference_official, the
    15 cases of cases/ and 18 of cases_mm/ with ground truth) equals its official_metrics.csv to 1e-4."""
    from evaluation.runner import evaluate_case

    official = _read_csv(shared_path("reference_official", "official_metrics.csv"))
    assert len(official) == 32  # every case with ground truth (the mammography demo has none)
    segs = shared_path("reference_official", "segs")
    for case, row in official.items():
        gts = next(shared_path(f, "gts") for f in ("cases", "cases_mm") if (shared_path(f, "gts") / case).is_file())
        mine = evaluate_case(case, segs, gts)
        assert not mine.error and mine.note == "", (case, mine)
        assert mine.dsc == pytest.approx(float(row["dsc"]), abs=1e-4), case
        assert mine.nsd == pytest.approx(float(row["nsd"]), abs=1e-4), case


def _sphere(shape, centre, radius):
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2


def _nsd_by_edt(gt, pred, spacing, tolerance=2.0):
    """Reference NSD the slow way: whole-volume neighbour codes by correlation and full EDTs."""
    kernel = np.array([[[128, 64], [32, 16]], [[8, 4], [2, 1]]])
    areas = surfel_areas(spacing)
    pad = lambda m: np.pad(m.astype(np.uint8), ((0, 1),) * 3)  # noqa: E731
    codes = [ndimage.correlate(pad(m), kernel, mode="constant", cval=0) for m in (gt, pred)]
    borders = [(c != 0) & (c != 255) for c in codes]
    dist = [ndimage.distance_transform_edt(~b, sampling=spacing) for b in borders]
    near = areas[codes[0][borders[0]]][dist[1][borders[0]] <= tolerance].sum()
    near += areas[codes[1][borders[1]]][dist[0][borders[1]] <= tolerance].sum()
    return near / (areas[codes[0][borders[0]]].sum() + areas[codes[1][borders[1]]].sum())


def test_identical_masks_score_one():
    gts = _sphere((30, 40, 40), (15, 20, 20), 9).astype(np.uint8)
    gts[2:6, 2:8, 30:36] = 2
    m = case_metrics(gts, gts.copy(), (0.8, 0.8, 2.5))
    assert m.dsc == 1.0 and m.nsd == 1.0 and m.skipped == []


def test_disjoint_masks_score_zero():
    gts = np.zeros((20, 40, 40), np.uint8)
    segs = np.zeros_like(gts)
    gts[2:8, 2:10, 2:10] = 1
    segs[12:18, 25:35, 25:35] = 1
    m = case_metrics(gts, segs, (1.0, 1.0, 1.0))
    assert m.dsc == 0.0 and m.nsd == 0.0
    assert surface_dice(gts == 1, segs == 1, (1.0, 1.0, 1.0), 2.0) == 0.0


@pytest.mark.parametrize("spacing,shift_axis", [((1.0, 1.0, 1.0), 0), ((1.0, 1.0, 1.0), 2), ((3.0, 0.7, 0.7), 0),
                                                ((3.0, 0.7, 0.7), 1), ((0.5, 2.5, 1.2), 1)])
def test_sphere_against_shifted_sphere(spacing, shift_axis):
    shape, centre = (40, 40, 40), [20, 20, 20]
    gt = _sphere(shape, centre, 10)
    centre[shift_axis] += 1
    pred = _sphere(shape, centre, 10)
    m = case_metrics(gt.astype(np.uint8), pred.astype(np.uint8), spacing)
    assert m.dsc == pytest.approx(2 * (gt & pred).sum() / (gt.sum() + pred.sum()))
    assert m.nsd == pytest.approx(_nsd_by_edt(gt, pred, spacing), abs=1e-12)
    if spacing[shift_axis] <= 2.0:
        assert m.nsd == 1.0  # every surface point is within one voxel step (<= 2 mm) of the other surface
    else:
        assert 0.5 < m.nsd < 1.0  # a 3 mm step puts the poles out of tolerance


@pytest.mark.parametrize("method_ratio", [0, 10**9], ids=["kd-tree", "edt"])
def test_both_distance_methods_equal_the_full_edt(monkeypatch, method_ratio):
    """The per-label choice between KD-tree and crop EDT must not change any number."""
    import evaluation.metrics as metrics

    monkeypatch.setattr(metrics, "EDT_VOXELS_PER_SURFACE_POINT", method_ratio)
    rng = np.random.default_rng(7)
    gt = ndimage.binary_opening(rng.random((24, 40, 36)) > 0.45, iterations=2)
    pred = ndimage.binary_dilation(gt, iterations=1) ^ (rng.random(gt.shape) > 0.97)
    for spacing in [(1.0, 1.0, 1.0), (2.5, 0.8, 0.8), (0.7, 1.9, 1.1)]:
        assert metrics.surface_dice(gt, pred, spacing, 2.0) == pytest.approx(_nsd_by_edt(gt, pred, spacing), abs=1e-12)


def test_empty_prediction_and_empty_ground_truth():
    gts = np.zeros((10, 30, 30), np.uint8)
    gts[3:7, 5:15, 5:15] = 1
    empty = np.zeros_like(gts)
    m = case_metrics(gts, empty, (1.0, 1.0, 1.0))
    assert m.dsc == 0.0 and m.nsd == 0.0
    assert surface_dice(gts == 1, empty == 1, (1.0, 1.0, 1.0), 2.0) == 0.0
    assert surface_dice(empty == 1, gts == 1, (1.0, 1.0, 1.0), 2.0) == 0.0
    none = case_metrics(empty, gts, (1.0, 1.0, 1.0))
    assert math.isnan(none.dsc) and none.nsd == 0.0  # no labels in gts, as the official script
    two = gts.copy()
    two[0, 0, 0] = 2  # label 2 in gts but never predicted: Dice 0 for it
    assert case_metrics(two, gts, (1.0, 1.0, 1.0)).label_dsc == {1: 1.0, 2: 0.0}


def test_2d_case_uses_unit_spacing():
    gts = np.zeros((64, 64), np.uint8)
    gts[10:40, 10:30] = 1
    segs = np.roll(gts, 1, axis=1)
    m = case_metrics(gts, segs)
    assert m.dsc == pytest.approx(2 * 30 * 19 / (2 * 600))
    assert m.nsd == 1.0
    far = np.roll(gts, 3, axis=0)
    assert case_metrics(gts, far).nsd == pytest.approx(_nsd_by_edt(gts[..., None], far[..., None], (1.0, 1.0, 1.0)))


def test_missing_prediction_and_shape_mismatch_rows(tmp_path):
    segs, gts = tmp_path / "segs", tmp_path / "gts"
    segs.mkdir(), gts.mkdir()
    gt = np.zeros((8, 16, 16), np.uint8)
    gt[2:5, 4:10, 4:10] = 1
    np.savez(gts / "3DBox_CT_a.npz", gts=gt, spacing=np.ones(3))
    np.savez(gts / "3DBox_CT_b.npz", gts=gt, spacing=np.ones(3))
    np.savez(gts / "2DBox_XRay_c.npz", gts=gt[3])
    np.savez(segs / "3DBox_CT_b.npz", segs=gt[:, :8])
    np.savez(segs / "2DBox_XRay_c.npz", segs=gt[3])
    np.savez(gts / "3DBox_CT_d.npz", gts=gt)  # no spacing
    np.savez(segs / "3DBox_CT_d.npz", segs=gt)
    np.savez(gts / "3DBox_CT_e.npz", gts=gt, spacing=np.ones(3))
    np.savez(segs / "3DBox_CT_e.npz", labels=gt)  # the wrong array name
    np.savez(gts / "3DBox_CT_f.npz", gts=gt, spacing=np.ones(3))
    (segs / "3DBox_CT_f.npz").write_text("not saved by numpy")
    np.savez(segs / "3DBox_CT_g.npz", segs=gt)  # no ground truth of that name
    np.savez(gts / "3DBox_CT_h.npz", gts=gt, spacing=np.array([np.nan, 1, 1]))
    np.savez(segs / "3DBox_CT_h.npz", segs=gt)
    np.savez(gts / "3DBox_CT_i.npz", gts=gt, spacing=np.ones(2))
    np.savez(segs / "3DBox_CT_i.npz", segs=gt)
    out = tmp_path / "m.csv"
    done = subprocess.run([sys.executable, "-m", "medsam_lite", "evaluate", "-s", segs, "-g", gts, "-o", out,
                           "--summary-json", tmp_path / "s.json"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 1
    rows = _read_csv(out)
    assert rows["3DBox_CT_a.npz"]["dsc"] == "0.0" and rows["3DBox_CT_a.npz"]["nsd"] == "0.0"
    assert "missing prediction" in rows["3DBox_CT_a.npz"]["note"]
    assert rows["3DBox_CT_b.npz"]["dsc"] == "" and "shape" in rows["3DBox_CT_b.npz"]["note"]
    assert rows["2DBox_XRay_c.npz"]["dsc"] == "1.0" and rows["2DBox_XRay_c.npz"]["nsd"] == "1.0"
    assert rows["3DBox_CT_d.npz"]["note"] == ("error: the ground truth gts/3DBox_CT_d.npz has no spacing array (a 3D "
                                              "case's NSD needs it); it has gts")
    assert rows["3DBox_CT_e.npz"]["note"] == "error: the prediction segs/3DBox_CT_e.npz has no segs array; it has labels"
    assert rows["3DBox_CT_f.npz"]["note"].startswith("error: the prediction segs/3DBox_CT_f.npz: not an .npz archive")
    assert rows["3DBox_CT_h.npz"]["note"] == ("error: the ground truth gts/3DBox_CT_h.npz: spacing is [nan, 1.0, 1.0]; "
                                              "expected 3 positive, finite values (mm)")
    assert "gts/3DBox_CT_i.npz: spacing is [1.0, 1.0]; expected 3" in rows["3DBox_CT_i.npz"]["note"]
    assert "pickle" not in done.stderr and ": error:" not in done.stderr  # the CSV's "error: " is not said twice
    assert f"WARNING 1 prediction(s) in {segs} have no ground truth in {gts} and are not scored: 3DBox_CT_g.npz" in done.stderr
    assert "ERROR 3DBox_CT_b.npz" in done.stderr and "WARNING 3DBox_CT_a.npz: missing prediction" in done.stderr
    assert "XRay" in done.stdout and "mean (modalities)" in done.stdout
    import json

    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["modalities"]["CT"]["dsc"] == 0.0 and summary["modalities"]["XRay"]["dsc"] == 1.0
    assert summary["mean_over_modalities"]["dsc"] == 0.5 and summary["errors"] == 6
    dsc_only = subprocess.run([sys.executable, "-m", "medsam_lite", "evaluate", "-s", segs, "-g", gts, "-o", out,
                               "--no-nsd"], capture_output=True, text=True, cwd=ROOT)
    assert dsc_only.returncode == 1
    assert _read_csv(out)["3DBox_CT_d.npz"]["dsc"] == "1.0"  # DSC needs no spacing
    assert _read_csv(out)["3DBox_CT_h.npz"]["dsc"] == "1.0"


def test_spacing_order_zyx_changes_anisotropic_nsd():
    gt = _sphere((30, 30, 30), (15, 15, 15), 8)
    pred = _sphere((30, 30, 30), (16, 15, 15), 8)
    stored = case_metrics(gt.astype(np.uint8), pred.astype(np.uint8), (0.7, 0.7, 3.0)).nsd
    reversed_ = case_metrics(gt.astype(np.uint8), pred.astype(np.uint8), (3.0, 0.7, 0.7)).nsd
    assert stored == 1.0 and reversed_ < 1.0


def test_modality_names():
    assert modality("3DBox_CT_AMOS_amos_0018.npz") == "CT"
    assert modality("2DBox_XRay_Pneumothorax-Masks_2041_train_1.npz") == "XRay"
    assert modality("3DBox_Microscopy_SELMA3D_patchvolume_nuclei_004.npz") == "Microscopy"


def test_evaluate_without_scipy_says_what_to_install(tmp_path):
    """The runtime image has no SciPy: evaluate must say so, not print a traceback."""
    script = f"""
import sys
sys.modules["scipy"] = None
from medsam_lite.cli import main
sys.argv = ["medsam-lite", "evaluate", "-s", {str(tmp_path)!r}, "-g", {str(tmp_path)!r}, "-o", {str(tmp_path / 'm.csv')!r}]
main()
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert "evaluate needs scipy" in done.stderr and "requirements/evaluate.txt" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_metrics_file_that_cannot_be_written_is_said_in_one_line_and_the_scores_are_kept(tmp_path, monkeypatch):
    """A full disk when the CSV is written (after all the scoring): one line naming the file, the table still
    printed, nothing half-written; a folder that is a file is said before the scoring; missing folders are made."""
    from click.testing import CliRunner

    from medsam_lite.cli import main

    segs, gts = tmp_path / "segs", tmp_path / "gts"
    segs.mkdir(), gts.mkdir()
    gt = np.zeros((16, 16), np.uint8)
    gt[4:10, 4:10] = 1
    np.savez(gts / "2DBox_XRay_a.npz", gts=gt)
    np.savez(segs / "2DBox_XRay_a.npz", segs=gt)

    def evaluate(out):
        return CliRunner().invoke(main, ["evaluate", "-s", str(segs), "-g", str(gts), "-o", str(out), "-q"])

    real_writer = csv.writer

    def full_disk(handle):
        handle.write("case,dsc,nsd,note\n")  # part of it, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(csv, "writer", full_disk)
    done = evaluate(tmp_path / "m.csv")
    monkeypatch.setattr(csv, "writer", real_writer)
    assert done.exit_code == 2 and "Traceback" not in done.output
    assert done.stderr.splitlines()[-1] == (f"error: cannot write the metrics CSV {tmp_path / 'm.csv'}: no space left on "
                                            f"device (nothing half-written was left; the table above has the "
                                            f"per-modality scores)")
    assert "XRay                 1   1.0000   1.0000" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gts", "segs"]  # no CSV, no hidden .part file

    (tmp_path / "taken").write_text("a file")
    done = evaluate(tmp_path / "taken" / "m.csv")
    assert done.exit_code == 2 and done.stdout == ""  # said before scoring
    assert done.stderr.splitlines() == [f"error: cannot write the metrics CSV {tmp_path / 'taken' / 'm.csv'}: "
                                        f"{tmp_path / 'taken'} is a file, not a folder"]

    done = evaluate(tmp_path / "new" / "deeper" / "m.csv")
    assert done.exit_code == 0, done.output
    assert _read_csv(tmp_path / "new" / "deeper" / "m.csv")["2DBox_XRay_a.npz"]["dsc"] == "1.0"
