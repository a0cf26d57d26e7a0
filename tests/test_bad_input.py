"""Every kind of bad input gets one clear line naming the file and the problem; the others still run."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from medsam_lite.cli import main


def _image_2d(h: int = 96, w: int = 128) -> np.ndarray:
    rng = np.random.default_rng(5)
    img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    img[30:60, 40:90] = 200
    return img


def _volume(d: int = 6, h: int = 64, w: int = 64) -> np.ndarray:
    vol = np.random.default_rng(6).integers(0, 60, (d, h, w), dtype=np.uint8)
    vol[:, 20:40, 20:45] = 220
    return vol


def _claiming(path, arrays: dict, key: str, shape: tuple, descr: str) -> None:
    """An npz of ``arrays`` and a member ``key`` whose .npy header claims ``shape`` with none of its data: what
    a file of a few MB of deflated zeros can claim, read only if the header is believed."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, array)
        with archive.open(f"{key}.npy", "w") as member:
            np.lib.format.write_array_header_1_0(member, {"descr": descr, "fortran_order": False, "shape": shape})


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory):
    """A folder of cases, each broken in one way (plus a few that must work), run once through the CLI."""
    folder = tmp_path_factory.mktemp("inputs")
    box = np.array([[40, 30, 89, 59]])
    save = lambda name, **arrays: np.savez(folder / name, **arrays)  # noqa: E731
    save("2DBox_ok.npz", imgs=_image_2d(), boxes=box)
    save("2DBox_missing_boxes.npz", imgs=_image_2d())
    save("2DBox_missing_imgs.npz", boxes=box)
    save("2DBox_float_dtype.npz", imgs=_image_2d().astype(np.float32), boxes=box)
    save("2DBox_wrong_rank.npz", imgs=_image_2d()[:, :, 0], boxes=box)
    save("2DBox_above_255.npz", imgs=_image_2d().astype(np.int32) + 100, boxes=box)
    save("2DBox_int16_in_range.npz", imgs=_image_2d().astype(np.int16), boxes=box)
    save("2DBox_box_outside.npz", imgs=_image_2d(), boxes=np.array([[40, 30, 89, 59], [-20, 10, 500, 80]]))
    save("2DBox_box_far_outside.npz", imgs=_image_2d(), boxes=np.array([[300, 10, 400, 50]]))
    save("2DBox_xmin_ge_xmax.npz", imgs=_image_2d(), boxes=np.array([[40, 30, 89, 59], [60, 30, 50, 59]]))
    save("2DBox_zero_boxes.npz", imgs=_image_2d(), boxes=np.zeros((0, 4), np.int64))
    save("2DBox_boxes_wrong_shape.npz", imgs=_image_2d(), boxes=np.array([[1, 2, 3]]))
    save("2DBox_box_beyond_int64.npz", imgs=_image_2d(), boxes=np.array([[2**63 + 5, 30, 89, 59]], np.uint64))
    save("2DBox_too_thin.npz", imgs=_image_2d(1200, 2), boxes=np.array([[0, 0, 1, 1199]]))  # 600:1
    save("3DBox_single_slice.npz", imgs=_volume(), boxes=np.array([[20, 20, 3, 44, 39, 3]]), spacing=np.ones(3))
    save("3DBox_z_beyond_volume.npz", imgs=_volume(), boxes=np.array([[20, 20, 4, 44, 39, 30]]))
    save("3DBox_z_outside_volume.npz", imgs=_volume(), boxes=np.array([[20, 20, 10, 44, 39, 12]]))
    save("3DBox_zmin_gt_zmax.npz", imgs=_volume(), boxes=np.array([[20, 20, 4, 44, 39, 2]]))
    save("3DBox_wrong_rank.npz", imgs=_volume()[..., None], boxes=np.array([[20, 20, 1, 44, 39, 2]]))
    save("3DBox_rgb_image.npz", imgs=_image_2d(), boxes=np.array([[20, 20, 1, 44, 39, 2]]))
    _claiming(folder / "2DBox_boxes_claim_gigabytes.npz", {"imgs": _image_2d()}, "boxes", (10**9, 4), "<i8")
    _claiming(folder / "3DBox_prev_pred_claims_terabytes.npz", {"imgs": _volume()}, "prev_pred", (10**4,) * 3, "|u1")
    good = (folder / "2DBox_ok.npz").read_bytes()
    (folder / "2DBox_truncated.npz").write_bytes(good[: len(good) // 2])
    (folder / "2DBox_not_npz.npz").write_bytes(b"this is a text file\n" * 20)
    (folder / "2DBox_empty_file.npz").write_bytes(b"")
    np.save(folder / "2DBox_plain_npy.npz", _image_2d())  # np.save appends .npy -> not picked up
    (folder / "2DBox_single_array.npz").write_bytes((folder / "2DBox_plain_npy.npz.npy").read_bytes())
    (folder / "notes.txt").write_text("not a case")
    return folder


@pytest.fixture(scope="module")
def bad_run(bad_folder, tmp_path_factory, checkpoint_path):
    out = tmp_path_factory.mktemp("outputs")
    result = CliRunner().invoke(
        main, ["predict", "-i", str(bad_folder), "-o", str(out), "--checkpoint", str(checkpoint_path("seeded"))]
    )
    return result, out


FAILURES = {
    "2DBox_missing_boxes.npz": "missing array(s) boxes",
    "2DBox_missing_imgs.npz": "missing array(s) imgs",
    "2DBox_float_dtype.npz": "imgs has dtype float32; expected uint8",
    "2DBox_wrong_rank.npz": "imgs has shape (96, 128); a 2D case needs (H, W, 3)",
    "2DBox_above_255.npz": "imgs values span 100..300; expected 0..255",
    "2DBox_box_far_outside.npz": "box 0 [300, 10, 400, 50] lies outside the image along x",
    "2DBox_xmin_ge_xmax.npz": "box 1 has x_min 60 > x_max 50",
    "2DBox_boxes_wrong_shape.npz": "boxes has shape (1, 3); expected (N, 4)",
    "2DBox_box_beyond_int64.npz": "boxes holds 9223372036854775813: coordinates are pixel and slice indices",
    "2DBox_too_thin.npz": "the image is 1200 x 2 pixels: resized to 256 on its longer side, its shorter side would be 0 "
                          "pixels (LiteMedSAM takes aspect ratios up to 512:1)",
    "3DBox_z_outside_volume.npz": "lies outside the image along z (valid 0..5)",
    "3DBox_zmin_gt_zmax.npz": "box 0 has z_min 4 > z_max 2",
    "3DBox_wrong_rank.npz": "imgs has shape (6, 64, 64, 1); a 3D case needs (D, H, W)",
    "3DBox_rgb_image.npz": "an RGB 2D image; a 3D case needs (D, H, W) grey slices",
    "2DBox_boxes_claim_gigabytes.npz": "boxes has shape (1000000000, 4): more than the 65,535 boxes a label map can "
                                       "hold (uint16); not loaded",
    "2DBox_truncated.npz": "cannot read as .npz",
    "2DBox_not_npz.npz": "not an .npz archive: neither a zip archive nor an .npy array (it starts with b'this i')",
    "2DBox_empty_file.npz": "not an .npz archive: the file is empty",
    "2DBox_single_array.npz": "not an .npz archive",
}
SUCCESSES = [
    "2DBox_ok.npz",
    "2DBox_int16_in_range.npz",
    "2DBox_box_outside.npz",
    "2DBox_zero_boxes.npz",
    "3DBox_single_slice.npz",
    "3DBox_z_beyond_volume.npz",
    "3DBox_prev_pred_claims_terabytes.npz",
]


def test_each_failure_is_one_line_naming_file_and_problem(bad_run):
    result, out = bad_run
    for name, problem in FAILURES.items():
        lines = [line for line in result.stderr.splitlines() if line.startswith(f"ERROR {name}:")]
        assert len(lines) == 1, (name, result.stderr)
        assert problem in lines[0], lines[0]
        assert "pickle" not in lines[0], lines[0]  # numpy's advice for files it tried to unpickle is no help here
        assert not (out / name).exists()


def test_exit_code_and_summary_count_failures(bad_run):
    result, _ = bad_run
    assert result.exit_code == 1
    assert f"{len(SUCCESSES)} written, 0 skipped (output exists), {len(FAILURES)} failed" in result.stderr


def test_good_cases_still_written_and_nothing_partial_left(bad_run):
    _, out = bad_run
    assert sorted(p.name for p in out.iterdir()) == sorted(SUCCESSES)
    ok = np.load(out / "2DBox_ok.npz")["segs"]
    assert ok.shape == (96, 128) and ok.dtype == np.uint8 and set(np.unique(ok)) <= {0, 1}
    assert np.array_equal(np.load(out / "2DBox_int16_in_range.npz")["segs"], ok)


def test_non_npz_files_are_ignored(bad_run):
    result, _ = bad_run
    assert "ignoring 2 file(s) that are not .npz" in result.stderr
    assert "notes.txt" not in result.stderr.split("ignoring")[0]
    assert "ERROR notes.txt" not in result.stderr


def test_boxes_outside_are_clipped_with_a_warning(bad_run):
    result, out = bad_run
    assert "WARNING 2DBox_box_outside.npz: 1 box(es) reach outside the image and were clipped to it: 1" in result.stderr
    segs = np.load(out / "2DBox_box_outside.npz")["segs"]
    assert segs.shape == (96, 128)
    assert "WARNING 3DBox_z_beyond_volume.npz: 1 box(es) reach outside the image" in result.stderr
    assert np.load(out / "3DBox_z_beyond_volume.npz")["segs"].shape == (6, 64, 64)


def test_zero_boxes_give_all_zero_segs(bad_run):
    result, out = bad_run
    segs = np.load(out / "2DBox_zero_boxes.npz")["segs"]
    assert segs.shape == (96, 128) and segs.dtype == np.uint8 and not segs.any()
    assert "WARNING 2DBox_zero_boxes.npz: no boxes" in result.stderr


def test_a_prev_pred_off_the_grid_is_not_read(bad_run):
    """A 2025-layout case without boxes whose prev_pred claims a terabyte (its header read, its data never): zeros
    are written, saying why, as for any prev_pred off the image's grid."""
    result, out = bad_run
    segs = np.load(out / "3DBox_prev_pred_claims_terabytes.npz")["segs"]
    assert segs.shape == (6, 64, 64) and not segs.any()
    assert ("WARNING 3DBox_prev_pred_claims_terabytes.npz: no boxes array (2025 layout): writing an all-zero "
            "segmentation (prev_pred is (10000, 10000, 10000) uint8, not labels 0..255 on the image's grid (6, 64, "
            "64))") in result.stderr


def test_single_slice_box_segments_only_that_slice(bad_run):
    result, out = bad_run
    segs = np.load(out / "3DBox_single_slice.npz")["segs"]
    assert segs.shape == (6, 64, 64)
    assert segs[3].any(), "the one slice of a z_min == z_max box must be segmented"
    assert not np.delete(segs, 3, axis=0).any()
    assert "3DBox_single_slice.npz: 1 box(es), 1 slice(s) encoded" in result.stderr


def test_many_boxes_are_written_as_uint16(tmp_path, checkpoint_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    img = _image_2d(64, 64)
    boxes = np.array([[x, y, x + 8, y + 8] for y in range(0, 64, 4) for x in range(0, 48, 3)][:260])
    np.savez(folder / "2DBox_many.npz", imgs=img, boxes=boxes)
    result = CliRunner().invoke(
        main, ["predict", "-i", str(folder), "-o", str(out), "--checkpoint", str(checkpoint_path("seeded")), "-q"]
    )
    assert result.exit_code == 0, result.stderr
    segs = np.load(out / "2DBox_many.npz")["segs"]
    assert segs.dtype == np.uint16
    assert segs.max() > 255  # labels beyond 255 survive


def test_unwritable_output_folder_is_a_clear_error(tmp_path, bad_folder, checkpoint_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    result = CliRunner().invoke(
        main, ["predict", "-i", str(bad_folder), "-o", str(blocker / "out"), "--checkpoint", str(checkpoint_path("seeded"))]
    )
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: the output folder {blocker / 'out'} is not writable: Not a directory"
    file_as_folder = CliRunner().invoke(
        main, ["predict", "-i", str(bad_folder), "-o", str(blocker), "--checkpoint", str(checkpoint_path("seeded"))]
    )
    assert file_as_folder.exit_code == 2
    assert file_as_folder.stderr.strip() == f"error: the output folder {blocker} is a file; name a folder (it is made if missing)"
