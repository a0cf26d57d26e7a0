"""The CVPR 2025 layout in ``predict``: box dicts starting at z_mid, clicks ignored, prev_pred when there are no
boxes, and a pickled ``boxes`` that is read without trusting it."""
from __future__ import annotations

import functools
import os
import shutil
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from medsam_lite.io.challenge import load_case
from medsam_lite.cli import main
from medsam_lite.pipeline.segment import encode_image, segment_3d

from .conftest import ROOT, shared_path

DEMO_3D = ROOT / "test_demo/imgs/3DBox_Synthetic_ellipsoids.npz"
LESIONS = ["3DBox_CT_Lesion_000001_02_01_008-023.npz", "3DBox_CT_Lesion_000010_01_01_078-090.npz"]


def _dicts(boxes: np.ndarray, z_mid: list[int] | None = None) -> np.ndarray:
    """2024 (N, 6) boxes as 2025 dicts; z_mid defaults to the 2024 middle slice."""
    items = []
    for i, (x0, y0, z0, x1, y1, z1) in enumerate(boxes.tolist()):
        middle = int((z1 - z0) / 2 + z0) if z_mid is None else z_mid[i]
        items.append({"z_min": z0, "z_max": z1, "z_mid": middle, "z_mid_x_min": x0, "z_mid_y_min": y0,
                      "z_mid_x_max": x1, "z_mid_y_max": y1})
    return np.array(items, dtype=object)


def _write_2025(path, source, z_mid=None, **extra) -> None:
    data = np.load(source)
    arrays = {"imgs": data["imgs"], "spacing": data["spacing"] if "spacing" in data.files else np.ones(3)}
    if z_mid != "none":
        arrays["boxes"] = _dicts(data["boxes"], z_mid)
    np.savez_compressed(path, **arrays, **extra)


def _predict(inputs, out, checkpoint, *extra):
    return CliRunner().invoke(main, ["predict", "-i", str(inputs), "-o", str(out), "--checkpoint", str(checkpoint), *extra])


def _pair(tmp_path, source, name="3DBox_case.npz", **kwargs):
    """A folder with the 2024 file and its 2025 rewrite (same image and boxes)."""
    v2024, v2025 = tmp_path / "v2024", tmp_path / "v2025"
    v2024.mkdir(exist_ok=True)
    v2025.mkdir(exist_ok=True)
    shutil.copy(source, v2024 / name)
    _write_2025(v2025 / name, source, **kwargs)
    return v2024, v2025


def test_2025_boxes_at_the_2024_middle_give_the_2024_result(tmp_path, checkpoint_path):
    v2024, v2025 = _pair(tmp_path, DEMO_3D)
    for folder in (v2024, v2025):
        result = _predict(folder, tmp_path / f"out-{folder.name}", checkpoint_path("seeded"))
        assert result.exit_code == 0, result.stderr
    segs = [np.load(tmp_path / f"out-{f}" / "3DBox_case.npz")["segs"] for f in ("v2024", "v2025")]
    assert segs[0].dtype == segs[1].dtype == np.uint8 and set(np.unique(segs[0])) == {0, 1, 2}
    assert np.array_equal(*segs)


@pytest.mark.parametrize("name", LESIONS)
def test_shared_lesion_cases_in_the_2025_layout_equal_2024(tmp_path, exports, checkpoint_path, name):
    v2024, v2025 = _pair(tmp_path, shared_path("cases", "imgs", name), name=name)
    args = ["--export-dir", str(exports("demo"))]
    for folder in (v2024, v2025):
        assert _predict(folder, tmp_path / f"out-{folder.name}", checkpoint_path("demo"), *args).exit_code == 0
    assert np.array_equal(np.load(tmp_path / "out-v2024" / name)["segs"], np.load(tmp_path / "out-v2025" / name)["segs"])


def test_propagation_starts_at_z_mid(tmp_path, torch_engines, checkpoint_path):
    boxes = np.load(DEMO_3D)["boxes"]
    z_mid = [int(boxes[0, 2]) + 1, int(boxes[1, 5])]  # not the middles: one near the bottom, one at the top
    v2024, v2025 = _pair(tmp_path, DEMO_3D, z_mid=z_mid)
    result = _predict(v2025, tmp_path / "out", checkpoint_path("seeded"))
    assert result.exit_code == 0, result.stderr
    segs = np.load(tmp_path / "out/3DBox_case.npz")["segs"]
    case = load_case(v2025 / "3DBox_case.npz")
    assert case.z_middle.tolist() == z_mid
    engine = torch_engines("seeded")
    embedding = functools.cache(lambda z: encode_image(engine, case.image[z]))  # each slice encoded once, not 4 times

    def run(boxes: np.ndarray, z_middle: np.ndarray | None = None) -> np.ndarray:
        return segment_3d(engine, case.image, boxes, z_middle=z_middle, slice_embedding=embedding)

    assert np.array_equal(segs, run(case.boxes, np.array(z_mid)))
    assert not np.array_equal(segs, run(case.boxes))
    alone = run(case.boxes[1:], np.array(z_mid[1:]))
    own = run(case.boxes[1:])
    assert not np.array_equal(alone, own)  # box 2 started at its top slice, not its middle


def test_clicks_are_ignored_once_and_missing_boxes_write_prev_pred_or_zeros(tmp_path, checkpoint_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    volume = np.load(DEMO_3D)["imgs"]
    clicks = [{"fg": [[3, 40, 50]], "bg": []}, {"fg": [], "bg": [[5, 10, 10]]}]
    previous = np.zeros(volume.shape, np.uint8)
    previous[4:7, 50:60, 60:70] = 2
    _write_2025(inputs / "3DBox_a_clicks.npz", DEMO_3D, clicks=np.array(clicks, dtype=object),
                clicks_order=np.array([["fg"], ["bg"]], dtype=object), prev_pred=previous)
    _write_2025(inputs / "3DBox_b_clicks.npz", DEMO_3D, clicks=np.array(clicks, dtype=object), prev_pred=previous)
    _write_2025(inputs / "3DBox_c_noboxes_prev.npz", DEMO_3D, z_mid="none", prev_pred=previous)
    _write_2025(inputs / "3DBox_d_noboxes.npz", DEMO_3D, z_mid="none")
    _write_2025(inputs / "3DBox_e_noboxes_prev_cut.npz", DEMO_3D, z_mid="none", prev_pred=previous[:3])
    out = tmp_path / "out"
    result = _predict(inputs, out, checkpoint_path("seeded"))
    assert result.exit_code == 0, result.stderr
    assert result.stderr.count("note: clicks (2025 layout) are ignored: LiteMedSAM is prompted by boxes only") == 1
    assert np.array_equal(np.load(out / "3DBox_a_clicks.npz")["segs"], np.load(out / "3DBox_b_clicks.npz")["segs"])
    assert np.array_equal(np.load(out / "3DBox_c_noboxes_prev.npz")["segs"], previous)
    zeros = np.load(out / "3DBox_d_noboxes.npz")["segs"]
    assert zeros.shape == volume.shape and zeros.dtype == np.uint8 and not zeros.any()
    assert "WARNING 3DBox_c_noboxes_prev.npz: no boxes array (2025 layout): writing prev_pred" in result.stderr
    assert "WARNING 3DBox_d_noboxes.npz: no boxes array (2025 layout): writing an all-zero segmentation" in result.stderr
    assert not np.load(out / "3DBox_e_noboxes_prev_cut.npz")["segs"].any()  # a prev_pred that does not fit: said why
    assert (f"WARNING 3DBox_e_noboxes_prev_cut.npz: no boxes array (2025 layout): writing an all-zero segmentation "
            f"(prev_pred is {previous[:3].shape} uint8, not labels 0..255 on the image's grid {volume.shape})") in result.stderr


class _RunsCode:
    """What a crafted file would hold: unpickling it calls os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_would_run_code_is_refused(tmp_path, checkpoint_path):
    inputs, marker = tmp_path / "in", tmp_path / "pwned"
    inputs.mkdir()
    volume = np.load(DEMO_3D)["imgs"]
    np.savez(inputs / "3DBox_crafted.npz", imgs=volume, boxes=np.array([_RunsCode(marker)], dtype=object))
    np.savez(inputs / "3DBox_bad_dict.npz", imgs=volume, boxes=np.array([{"z_min": 1, "z_max": 3}], dtype=object))
    np.savez(inputs / "3DBox_z_mid_outside.npz", imgs=volume, boxes=_dicts(np.load(DEMO_3D)["boxes"][:1], [11]))
    shutil.copy(DEMO_3D, inputs / "3DBox_good.npz")
    with zipfile.ZipFile(inputs / "3DBox_repeats.npz", "w", zipfile.ZIP_DEFLATED) as archive:  # 65 MiB in 65 kB
        with archive.open("imgs.npy", "w") as member:
            np.lib.format.write_array(member, volume)
        with archive.open("boxes.npy", "w") as member:  # references repeated: far more objects than bytes stored
            np.lib.format.write_array_header_1_0(member, {"descr": "|O", "fortran_order": False, "shape": (1,)})
            member.write(bytes(65 << 20))
    out = tmp_path / "out"
    result = _predict(inputs, out, checkpoint_path("seeded"))
    assert result.exit_code == 1
    assert not marker.exists()
    assert ("ERROR 3DBox_repeats.npz: cannot read boxes: boxes unpacks to 65 MiB, more than the 64 MiB a list of boxes "
            "needs; not loaded") in result.stderr
    assert "ERROR 3DBox_crafted.npz: boxes is a pickle that was refused: it refers to posix.system" in result.stderr
    assert "ERROR 3DBox_bad_dict.npz: boxes (2025 layout): box 0 lacks z_mid, z_mid_x_min" in result.stderr
    assert "ERROR 3DBox_z_mid_outside.npz: boxes (2025 layout): box 0 has z_mid 11 outside z_min..z_max 2..8" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["3DBox_good.npz"]
