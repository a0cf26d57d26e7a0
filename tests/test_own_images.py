"""Your own images: readers (NIfTI, NRRD, MHA, DICOM series folder and zip, PNG/JPEG/BMP/TIFF), the official
intensity rules, prompts from JSON and label maps, `segment` (same masks as `predict`, the input's geometry
written back) and `convert` both ways."""
from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from medsam_lite.cli import main
from medsam_lite.io.image import Geometry, ImageError, case_name
from medsam_lite.io.intensity import grey_rgb, percentile_normalise, to_uint8, window_ct
from medsam_lite.io.prompts import boxes_from_json, tight_boxes
from medsam_lite.io.read import read_image

from .conftest import ROOT, shared_path
from .imagefiles import ORIGIN, oblique_direction, write_dicom_series, write_medical, zip_folder

sitk = pytest.importorskip("SimpleITK")
DEMO = ROOT / "test_demo"
DEMO_3D = DEMO / "imgs/3DBox_Synthetic_ellipsoids.npz"
DEMO_2D = DEMO / "imgs/2DBox_Synthetic_ellipses.npz"
LESION = "3DBox_CT_Lesion_000001_02_01_008-023.npz"
XRAY = "2DBox_XRay_Pneumothorax-Masks_2041_train_1.npz"
SPACING = (0.7, 0.8, 2.5)  # x, y, z mm


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _predict(case: Path, export: Path, tmp_path: Path) -> np.ndarray:
    inputs = tmp_path / "npz-in"
    inputs.mkdir(exist_ok=True)
    shutil.copy(case, inputs / case.name)
    result = _run("predict", "-i", inputs, "-o", tmp_path / "npz-out", "--export-dir", export, "-q")
    assert result.exit_code == 0, result.stderr
    return np.load(tmp_path / "npz-out" / case.name)["segs"]


# --- intensity: the formulas of pre_CT_MR.py and pre_grey_rgb.py, written out here independently ---

def test_ct_window_is_the_official_formula():
    rng = np.random.default_rng(0)
    hu = rng.integers(-1024, 3000, size=(4, 32, 32)).astype(np.int16)
    for level, width in [(40, 400), (-600, 1500), (40, 80)]:
        lower, upper = level - width / 2, level + width / 2
        clipped = np.clip(hu, lower, upper)
        expected = np.uint8((clipped - np.min(clipped)) / (np.max(clipped) - np.min(clipped)) * 255.0)
        assert np.array_equal(window_ct(hu, level, width), expected)
        assert np.array_equal(to_uint8(hu, "CT", (level, width)), expected)
    assert np.array_equal(to_uint8(hu, "CT"), window_ct(hu, 40, 400))  # the default window: abdomen 40/400


def test_mr_percentiles_are_the_official_formula_and_zeros_stay_zero():
    rng = np.random.default_rng(1)
    mr = rng.gamma(2.0, 300.0, size=(3, 40, 40)).astype(np.float32)
    mr[:, :5] = 0
    lower, upper = np.percentile(mr[mr > 0], 0.5), np.percentile(mr[mr > 0], 99.5)
    pre = np.clip(mr, lower, upper)
    pre = (pre - np.min(pre)) / (np.max(pre) - np.min(pre)) * 255.0
    pre[mr == 0] = 0
    out = percentile_normalise(mr)
    assert np.array_equal(out, np.uint8(pre)) and out.dtype == np.uint8
    assert not out[:, :5].any() and out.max() == 255
    assert np.array_equal(to_uint8(mr, "other"), out)


def test_raw_needs_values_in_0_255():
    assert to_uint8(np.array([[0, 255]], np.int16), "raw").dtype == np.uint8
    with pytest.raises(ImageError, match="span -3..255"):
        to_uint8(np.array([[-3, 255]], np.int16), "raw")


def test_picture_rules_are_pre_grey_rgb():
    sixteen = np.arange(0, 60000, 1000, dtype=np.uint16).reshape(6, 10)
    expected = np.uint8((sixteen - sixteen.min()) / (sixteen.max() - sixteen.min()) * 255.0)
    assert np.array_equal(grey_rgb(sixteen), np.repeat(expected[:, :, None], 3, -1))
    rgba = np.random.default_rng(2).integers(0, 256, (5, 7, 4), dtype=np.uint8)
    assert np.array_equal(grey_rgb(rgba), rgba[:, :, :3])


# --- readers ---

def test_case_names():
    assert case_name("liver_001_0000.nii.gz") == "liver_001"
    assert case_name("a.NII") == "a" and case_name("scan.mha") == "scan" and case_name("dcm_folder") == "dcm_folder"
    assert case_name("slide.tif") == "slide" and case_name("x_0001.nii.gz") == "x_0001"


def test_pictures_read_as_pre_grey_rgb(tmp_path):
    from medsam_lite.io.image_case import model_image

    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    grey16 = rng.integers(0, 65536, (30, 40), dtype=np.uint16)
    rgba = np.dstack([rgb, np.full((30, 40), 200, np.uint8)])
    smooth = cv2.GaussianBlur(rgb[:, :, 0], (0, 0), 3)
    cv2.imwrite(str(tmp_path / "rgb.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "grey16.png"), grey16)
    cv2.imwrite(str(tmp_path / "rgba.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    cv2.imwrite(str(tmp_path / "grey.jpg"), smooth)
    cv2.imwrite(str(tmp_path / "rgb.tif"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "grey16.tiff"), grey16)
    cv2.imwrite(str(tmp_path / "rgb.bmp"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    scaled16 = np.uint8((grey16 - grey16.min()) / (grey16.max() - grey16.min()) * 255.0)
    jpeg = cv2.imread(str(tmp_path / "grey.jpg"), cv2.IMREAD_UNCHANGED)
    assert jpeg.ndim == 2 and np.abs(jpeg.astype(int) - smooth).max() < 10  # lossy, but grey
    expected = {"rgb.png": rgb, "grey16.png": np.repeat(scaled16[:, :, None], 3, -1), "rgba.png": rgb,
                "grey.jpg": np.repeat(jpeg[:, :, None], 3, -1), "rgb.tif": rgb,
                "grey16.tiff": np.repeat(scaled16[:, :, None], 3, -1), "rgb.bmp": rgb}
    for name, want in expected.items():
        data = read_image(tmp_path / name)
        assert data.kind == "raster" and not data.is_3d and data.geometry is None
        got = model_image(data, "picture", None)
        assert got.dtype == np.uint8 and got.shape == (30, 40, 3)
        assert np.array_equal(got, want), name


def test_a_jpeg_cut_short_is_refused(tmp_path):
    """libjpeg decodes what there is of a JPEG cut short and OpenCV returned the rest as grey without a word; its
    end-of-image marker must follow its last scan (baseline and progressive alike)."""
    picture = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    for name, flags in [("baseline.jpg", []), ("progressive.jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])]:
        whole = cv2.imencode(".jpg", picture, flags)[1].tobytes()
        (tmp_path / name).write_bytes(whole)
        assert read_image(tmp_path / name).pixels.shape == (120, 160, 3)
        (tmp_path / name).write_bytes(whole[: len(whole) * 3 // 4])
        with pytest.raises(ImageError, match="is cut short: the JPEG ends before its end-of-image marker"):
            read_image(tmp_path / name)


def test_real_dicom_ct_reads_in_hounsfield_units_with_the_window(tmp_path, exports):
    """pydicom's CT_small.dcm (a real CT slice, RescaleIntercept -1024): read through SimpleITK in HU, its
    modality taken from the file, windowed as pre_CT_MR.py; segmented as a one-slice image."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    from medsam_lite.io.image_case import ImageOptions, image_case

    source = Path(get_testdata_file("CT_small.dcm"))
    dataset = pydicom.dcmread(source)
    hu = dataset.pixel_array * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)
    data = read_image(source)
    assert data.modality == "CT" and data.pixels.shape == (1, 128, 128) and not data.is_3d
    assert np.array_equal(data.pixels[0], hu) and hu.min() < -800  # air in HU, not stored values
    assert data.geometry.spacing[:2] == pytest.approx(tuple(float(v) for v in dataset.PixelSpacing[::-1]))
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([[30, 30, 90, 100]]))
    for window in [(40.0, 400.0), (-600.0, 1500.0)]:
        item = image_case(data, ImageOptions(window=window, boxes=boxes))
        lower, upper = window[0] - window[1] / 2, window[0] + window[1] / 2
        clipped = np.clip(hu, lower, upper)
        want = np.uint8((clipped - clipped.min()) / (clipped.max() - clipped.min()) * 255.0)
        assert item.modality == "CT" and np.array_equal(item.case.image, np.repeat(want[:, :, None], 3, -1))
    result = _run("segment", source, "-o", tmp_path / "out", "--boxes", boxes, "--window", "lung",
                  "--export-dir", exports("seeded"), "-q")
    assert result.exit_code == 0, result.stderr
    written = sitk.ReadImage(str(tmp_path / "out/CT_small.nii.gz"))
    assert written.GetSize() == (128, 128, 1) and Geometry(written.GetOrigin(), written.GetSpacing(),
                                                           written.GetDirection()).matches(data.geometry)
    record = json.loads((tmp_path / "out/CT_small.json").read_text())
    assert record["modality"] == "CT" and record["window"] == [-600.0, 1500.0]


def test_dicom_folder_and_zip_keep_the_geometry(tmp_path):
    volume = np.load(DEMO_3D)["imgs"]
    folder = write_dicom_series(tmp_path / "series", volume, SPACING, modality="MR")
    archive = zip_folder(folder, tmp_path / "series.zip")
    want = Geometry(ORIGIN, SPACING, oblique_direction())
    for source in (folder, archive):
        data = read_image(source)
        assert data.is_3d and data.modality == "MR" and data.name == "series"
        assert np.array_equal(data.pixels, volume) and data.geometry.matches(want), data.geometry


def test_a_metaimage_cut_short_says_so(tmp_path):
    """SimpleITK refused a MetaImage cut short with 'Reason: No such file or directory' (for a file that is
    there): its header's length is compared with the data's, in the .mha or the .mhd's data file."""
    volume = np.load(DEMO_3D)["imgs"].astype(np.int16)
    for name, compressed in [("plain.mha", False), ("packed.mha", True), ("pair.mhd", False)]:
        path = tmp_path / name
        sitk.WriteImage(sitk.GetImageFromArray(volume), str(path), useCompression=compressed)
        assert np.array_equal(read_image(path).pixels, volume)
        data = tmp_path / "pair.raw" if name.endswith(".mhd") else path
        whole = data.read_bytes()
        data.write_bytes(whole[:-100])
        where = "its data file pair.raw" if name.endswith(".mhd") else "the file"
        with pytest.raises(ImageError, match=rf"is cut short: its header describes [0-9,]+ bytes of "
                                             rf"{'compressed ' if compressed else ''}data, {where} holds"):
            read_image(path)
    (tmp_path / "pair.raw").unlink()
    with pytest.raises(ImageError, match="its data file pair.raw \\(ElementDataFile\\) is missing beside it"):
        read_image(tmp_path / "pair.mhd")


def test_a_dicom_series_with_a_slice_missing_is_refused(tmp_path):
    """SimpleITK stacks the slices it finds as one evenly spaced volume: with one missing it averaged the spacing
    and put every slice past the gap in the wrong place, without a word. The slice positions are checked (the
    oblique series: along its own normal)."""
    volume = np.load(DEMO_3D)["imgs"]
    folder = write_dicom_series(tmp_path / "series", volume, SPACING, modality="MR")
    sorted(folder.iterdir())[5].unlink()
    with pytest.raises(ImageError, match=rf"DICOM series .* is not evenly spaced: slices 4 and 5 are "
                                         rf"{2 * SPACING[2]:.3g} mm apart where the others are {SPACING[2]:.3g} mm "
                                         r"\(a slice missing"):
        read_image(folder)
    with pytest.raises(ImageError, match="is not evenly spaced"):
        read_image(zip_folder(folder, tmp_path / "series.zip"))


def test_label_map_boxes_are_the_shared_tight_boxes(tmp_path):
    """The boxes of the shared cases are the tight boxes of their ground truth: tight_boxes reproduces them, and
    --boxes-from a NIfTI label map gives them too."""
    from medsam_lite.io.image_case import ImageOptions, prompts_for

    folder = shared_path("cases", "gts")
    for path in sorted(folder.glob("*.npz")):
        gts = np.load(path)["gts"]
        boxes = np.load(shared_path("cases", "imgs", path.name))["boxes"]
        values, found = tight_boxes(gts)
        assert np.array_equal(values, np.arange(1, len(boxes) + 1)) and np.array_equal(found, boxes), path.name
    gts = np.load(folder / LESION)["gts"]
    image = write_medical(tmp_path / "image.nii.gz", np.load(shared_path("cases", "imgs", LESION))["imgs"], SPACING)
    labels = write_medical(tmp_path / "labels.nii.gz", gts, SPACING)
    prompts = prompts_for(read_image(image), ImageOptions(boxes_from=labels))
    assert np.array_equal(prompts.boxes, np.load(shared_path("cases", "imgs", LESION))["boxes"])
    grown = prompts_for(read_image(image), ImageOptions(boxes_from=labels, box_margin=5)).boxes
    assert np.array_equal(grown[:, [0, 1, 3, 4]] - prompts.boxes[:, [0, 1, 3, 4]], [[-5, -5, 5, 5]])
    assert np.array_equal(grown[:, [2, 5]], prompts.boxes[:, [2, 5]])  # z is not grown


def test_json_prompts(tmp_path):
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"boxes": [[1, 2, 3, 10, 11, 5]], "labels": [7], "z_mid": [4]}))
    prompts = boxes_from_json(path, is_3d=True)
    assert prompts.boxes.tolist() == [[1, 2, 3, 10, 11, 5]] and prompts.labels.tolist() == [7]
    assert prompts.z_middle.tolist() == [4]
    path.write_text(json.dumps([{"z_min": 3, "z_max": 5, "z_mid": 5, "z_mid_x_min": 1, "z_mid_y_min": 2,
                                 "z_mid_x_max": 10, "z_mid_y_max": 11}]))
    prompts = boxes_from_json(path, is_3d=True)
    assert prompts.boxes.tolist() == [[1, 2, 3, 10, 11, 5]] and prompts.z_middle.tolist() == [5]
    for text, message in [("[[1, 2, 3]", "not valid JSON"), ('{"box": []}', "without a 'boxes' key"),
                          ("[[1, 2, 3]]", "box 0 is 3 numbers"), ("[[1, 2.5, 3, 4]]", "integer indices"),
                          ("[[1, 2, 1180591620717411303424, 4]]", r"box 0 has 1180591620717411303424: a coordinate "
                                                                  r"beyond 2\*\*53"),  # was an OverflowError
                          ("[[NaN, 2, 3, 4]]", "box 0 has nan")]:
        path.write_text(text)
        with pytest.raises(ImageError, match=message):
            boxes_from_json(path, is_3d=False)
    for value, message in [({"boxes": [[1, 2, 3, 10, 11, 5]], "z_mid": [4, 4]}, "'z_mid' must be a list of 1 integers"),
                           ([{"z_min": 3, "z_max": 2**80, "z_mid": 5, "z_mid_x_min": 1, "z_mid_y_min": 2,
                              "z_mid_x_max": 10, "z_mid_y_max": 11}], "box 0 has z_max = 1208925819614629174706176; "
                                                                      "expected an integer index")]:
        path.write_text(json.dumps(value))
        with pytest.raises(ImageError, match=message):
            boxes_from_json(path, is_3d=True)


# --- segment: the same masks as predict, the input's geometry written back ---

def _nibabel_affine(path: Path) -> np.ndarray:
    nibabel = pytest.importorskip("nibabel")
    return nibabel.load(str(path)).affine


def _lps_to_ras_affine(geometry: Geometry) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = np.array(geometry.direction).reshape(3, 3) @ np.diag(geometry.spacing)
    affine[:3, 3] = geometry.origin
    return np.diag([-1, -1, 1, 1]) @ affine


def test_segment_nifti_nrrd_mha_dicom_equal_predict_on_the_npz(tmp_path, exports):
    """A shared CT case written as NIfTI, NRRD, MHA, a DICOM series folder and a zip of it, with an oblique
    direction, anisotropic spacing and an origin: every mask equals `predict` on the npz (with the shared demo
    checkpoint), and every output has the input's geometry (read back with SimpleITK and nibabel)."""
    case = shared_path("cases", "imgs", LESION)
    export = exports("demo")
    volume, boxes = np.load(case)["imgs"], np.load(case)["boxes"]
    inputs = tmp_path / "images"
    inputs.mkdir()
    write_medical(inputs / "ct_0000.nii.gz", volume, SPACING)
    write_medical(inputs / "ct_nrrd.nrrd", volume, SPACING)
    write_medical(inputs / "ct_mha.mha", volume, SPACING)
    write_dicom_series(inputs / "ct_dicom", volume, SPACING)
    zip_folder(inputs / "ct_dicom", inputs / "ct_zip.zip")
    prompts = tmp_path / "boxes.json"
    prompts.write_text(json.dumps({"boxes": boxes.tolist()}))
    result = _run("segment", inputs, "-o", tmp_path / "out", "--boxes", prompts, "--modality", "raw",
                  "--export-dir", export, "--save-overlay", tmp_path / "overlays", "--timing-csv", tmp_path / "t.csv")
    assert result.exit_code == 0, result.stderr
    assert "5 written, 0 skipped (output exists), 0 failed of 5 image(s)" in result.stderr
    expected = _predict(case, export, tmp_path)
    want = Geometry(ORIGIN, SPACING, oblique_direction())
    for name in ("ct", "ct_nrrd", "ct_mha", "ct_dicom", "ct_zip"):
        written = sitk.ReadImage(str(tmp_path / "out" / f"{name}.nii.gz"))
        assert np.array_equal(sitk.GetArrayFromImage(written), expected), name
        assert written.GetPixelID() == sitk.sitkUInt8
        got = Geometry(written.GetOrigin(), written.GetSpacing(), written.GetDirection())
        assert got.matches(want), (name, got)
        assert np.allclose(_nibabel_affine(tmp_path / "out" / f"{name}.nii.gz"), _lps_to_ras_affine(want), atol=1e-4)
        record = json.loads((tmp_path / "out" / f"{name}.json").read_text())
        assert record["boxes"] == boxes.tolist() and record["labels"] == [1] and record["modality"] == "raw"
        assert (tmp_path / "overlays" / f"{name}.png").stat().st_size > 1000
    assert np.allclose(_nibabel_affine(tmp_path / "out/ct.nii.gz"), _nibabel_affine(inputs / "ct_0000.nii.gz"), atol=1e-5)
    # the record reads back as a prompt file and gives the same mask
    again = _run("segment", inputs / "ct_0000.nii.gz", "-o", tmp_path / "again", "--boxes", tmp_path / "out/ct.json",
                 "--modality", "raw", "--export-dir", export, "-q")
    assert again.exit_code == 0, again.stderr
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "again/ct.nii.gz"))), expected)


def test_ct_in_hounsfield_units_as_nifti_equals_its_npz_conversion(tmp_path, exports):
    """One CT volume in HU: `segment --modality CT` on the NIfTI gives exactly `predict` on the npz that
    `convert to-npz` made of it (one intensity function for both), with label-map values kept."""
    volume = np.load(DEMO_3D)["imgs"].astype(np.int16) * 6 - 900  # HU -900..630
    gts = np.load(DEMO / "gts/3DBox_Synthetic_ellipsoids.npz")["gts"].astype(np.uint8)
    relabelled = np.where(gts == 2, 9, np.where(gts == 1, 4, 0)).astype(np.uint8)
    image = write_medical(tmp_path / "ct_0000.nii.gz", volume, SPACING)
    labels = write_medical(tmp_path / "ct_labels.nii.gz", relabelled, SPACING)
    out = tmp_path / "npz"
    out.mkdir()
    done = _run("convert", "to-npz", image, "--labels", labels, "-o", out, "--modality", "CT")
    assert done.exit_code == 0, done.stderr
    assert "renumbered 1..2" in done.stderr
    converted = out / "3DBox_CT_ct.npz"
    with np.load(converted) as data:
        assert sorted(data.files) == ["boxes", "gts", "imgs", "spacing"]
        assert np.array_equal(data["imgs"], window_ct(volume, 40, 400)) and data["imgs"].dtype == np.uint8
        assert np.array_equal(data["gts"], gts) and np.allclose(data["spacing"], SPACING)
        assert np.array_equal(data["boxes"], np.load(DEMO_3D)["boxes"])
    expected = _predict(converted, exports("seeded"), tmp_path)
    result = _run("segment", image, "-o", tmp_path / "out", "--boxes-from", labels, "--modality", "CT",
                  "--export-dir", exports("seeded"), "-q")
    assert result.exit_code == 0, result.stderr
    got = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out/ct.nii.gz")))
    lut = np.array([0, 4, 9], np.uint8)
    assert np.array_equal(got, lut[expected]) and set(np.unique(got)) <= {0, 4, 9}


def test_2025_dict_boxes_in_json_start_at_z_mid(tmp_path, exports):
    from medsam_lite.engines.openvino_engine import OpenVINOEngine
    from medsam_lite.pipeline.segment import segment_3d

    volume, boxes = np.load(DEMO_3D)["imgs"], np.load(DEMO_3D)["boxes"]
    image = write_medical(tmp_path / "v.nii.gz", volume, SPACING)
    starts = [int(b[2]) + 1 for b in boxes]
    dicts = [{"z_min": int(b[2]), "z_max": int(b[5]), "z_mid": z, "z_mid_x_min": int(b[0]), "z_mid_y_min": int(b[1]),
              "z_mid_x_max": int(b[3]), "z_mid_y_max": int(b[4])} for b, z in zip(boxes, starts)]
    (tmp_path / "b.json").write_text(json.dumps({"boxes": dicts}))
    result = _run("segment", image, "-o", tmp_path / "out", "--boxes", tmp_path / "b.json", "--modality", "raw",
                  "--export-dir", exports("seeded"), "-q")
    assert result.exit_code == 0, result.stderr
    got = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out/v.nii.gz")))
    engine = OpenVINOEngine(exports("seeded"))
    assert np.array_equal(got, segment_3d(engine, volume, boxes, z_middle=np.array(starts)))
    assert not np.array_equal(got, segment_3d(engine, volume, boxes))


def test_segment_png_equals_predict_on_the_npz(tmp_path, exports):
    """The shared X-ray as a PNG: `segment` writes a PNG label map of the same HxW equal to `predict`."""
    case = shared_path("cases", "imgs", XRAY)
    image, boxes = np.load(case)["imgs"], np.load(case)["boxes"]
    png = tmp_path / "in" / "xray.png"
    png.parent.mkdir()
    cv2.imwrite(str(png), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    (tmp_path / "b.json").write_text(json.dumps(boxes.tolist()))
    result = _run("segment", png, "-o", tmp_path / "out", "--boxes", tmp_path / "b.json",
                  "--export-dir", exports("demo"), "--save-overlay", tmp_path / "ov", "-q")
    assert result.exit_code == 0, result.stderr
    got = cv2.imread(str(tmp_path / "out/xray.png"), cv2.IMREAD_UNCHANGED)
    assert got.shape == image.shape[:2] and got.dtype == np.uint8
    assert np.array_equal(got, _predict(case, exports("demo"), tmp_path))
    assert (tmp_path / "ov/xray.png").is_file()


# --- convert ---

def test_to_npz_label_slices_only_and_to_nifti_back(tmp_path):
    volume = np.load(DEMO_3D)["imgs"]
    gts = np.load(DEMO / "gts/3DBox_Synthetic_ellipsoids.npz")["gts"]
    image = write_medical(tmp_path / "case.nii.gz", volume, SPACING)
    labels = write_medical(tmp_path / "labels.nii.gz", gts, SPACING)
    keep = np.unique(np.nonzero(gts)[0])
    assert 0 < len(keep) < len(gts)
    out = tmp_path / "cut.npz"
    done = _run("convert", "to-npz", image, "--labels", labels, "-o", out, "--modality", "raw", "--label-slices-only")
    assert done.exit_code == 0, done.stderr
    assert "does not start with '3D'" in done.stderr  # predict would read it as 2D: the user is told
    with np.load(out) as data:
        assert np.array_equal(data["imgs"], volume[keep]) and np.array_equal(data["gts"], gts[keep])
        assert np.array_equal(data["boxes"], tight_boxes(gts[keep])[1])
    segs = tmp_path / "segs.npz"
    np.savez_compressed(segs, segs=gts)
    back = _run("convert", "to-nifti", segs, "-o", tmp_path / "back.nii.gz", "--like", image)
    assert back.exit_code == 0, back.stderr
    written = sitk.ReadImage(str(tmp_path / "back.nii.gz"))
    assert np.array_equal(sitk.GetArrayFromImage(written), gts)
    assert Geometry(written.GetOrigin(), written.GetSpacing(), written.GetDirection()).matches(
        Geometry(ORIGIN, SPACING, oblique_direction()))
    case = tmp_path / "3DBox_case.npz"
    np.savez_compressed(case, imgs=volume, spacing=np.array(SPACING))
    spacing_only = _run("convert", "to-nifti", segs, "-o", tmp_path / "sp.nii.gz", "--case", case)
    assert spacing_only.exit_code == 0 and "spacing only" in spacing_only.stderr
    written = sitk.ReadImage(str(tmp_path / "sp.nii.gz"))
    assert written.GetSpacing() == pytest.approx(SPACING) and written.GetOrigin() == (0.0, 0.0, 0.0)
    cut = tmp_path / "cut_segs.npz"
    np.savez_compressed(cut, segs=gts[keep])
    refused = _run("convert", "to-nifti", cut, "-o", tmp_path / "x.nii.gz", "--like", image)
    assert refused.exit_code == 1 and "cannot be placed back" in refused.stderr
    assert not (tmp_path / "x.nii.gz").exists()
    text = tmp_path / "notes_segs.npz"
    text.write_text("segs: see the spreadsheet\n")
    garbage = _run("convert", "to-nifti", text, "-o", tmp_path / "y.nii.gz", "--like", image)
    assert garbage.exit_code == 1 and "notes_segs.npz: not an .npz archive: neither a zip archive" in garbage.stderr
    assert "pickle" not in garbage.stderr and not (tmp_path / "y.nii.gz").exists()
    zero = tmp_path / "3DBox_zero_spacing.npz"
    np.savez_compressed(zero, imgs=volume, spacing=np.array([0.8, 0.0, 2.5]))
    no_file = _run("convert", "to-nifti", segs, "-o", tmp_path / "z.nii.gz", "--case", zero)
    assert no_file.exit_code == 1 and "spacing is [0.8, 0.0, 2.5]; expected 3 positive, finite values" in no_file.stderr
    assert not (tmp_path / "z.nii.gz").exists()



def test_convert_makes_its_folder_and_says_a_write_it_cannot_make(tmp_path, monkeypatch):
    """A folder that does not exist yet is made (as predict makes its own); one that is a file, or a full disk,
    is one line naming the output, with nothing half-written left."""
    import medsam_lite.io.convert as convert

    volume = np.load(DEMO_3D)["imgs"]
    image = write_medical(tmp_path / "case.nii.gz", volume, SPACING)
    segs = tmp_path / "segs.npz"
    np.savez_compressed(segs, segs=np.load(DEMO / "gts/3DBox_Synthetic_ellipsoids.npz")["gts"])
    made = _run("convert", "to-npz", image, "-o", tmp_path / "new" / "imgs" / "3DBox_a.npz", "--modality", "raw")
    assert made.exit_code == 0, made.stderr
    assert np.array_equal(np.load(tmp_path / "new/imgs/3DBox_a.npz")["imgs"], volume)
    back = _run("convert", "to-nifti", segs, "-o", tmp_path / "new2" / "back.nii.gz", "--like", image)
    assert back.exit_code == 0 and (tmp_path / "new2/back.nii.gz").is_file(), back.stderr
    (tmp_path / "taken").write_text("a file")
    refused = _run("convert", "to-npz", image, "-o", tmp_path / "taken" / "3DBox_a.npz", "--modality", "raw")
    assert refused.exit_code == 1
    assert refused.stderr.strip() == (f"ERROR case.nii.gz: cannot write {tmp_path / 'taken' / '3DBox_a.npz'}: "
                                      f"{tmp_path / 'taken'} is a file, not a folder (nothing half-written was left)")

    def full_disk(handle, **arrays):
        handle.write(b"PK" + b"x" * 1000)  # part of it, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(convert.np, "savez_compressed", full_disk)
    full = _run("convert", "to-npz", image, "-o", tmp_path / "full" / "3DBox_a.npz", "--modality", "raw")
    assert full.exit_code == 1
    assert full.stderr.strip() == (f"ERROR case.nii.gz: cannot write {tmp_path / 'full' / '3DBox_a.npz'}: no space "
                                   f"left on device (nothing half-written was left)")
    assert list((tmp_path / "full").iterdir()) == []


# --- bad input: one line each, the other images still written, exit 1 ---

def test_a_corrupt_picture_gets_our_line_and_not_opencvs(tmp_path):
    """OpenCV logs its decoder's complaints to the process's stderr; `segment` says what is wrong in one line of its
    own, so OpenCV's are held back while it reads, and its log level is restored afterwards."""
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 8 + b"garbage, not an IHDR chunk")
    script = f"""
import cv2
from pathlib import Path
from medsam_lite.io.image import ImageError
from medsam_lite.io.raster import read_raster_array
before = cv2.utils.logging.getLogLevel()
try:
    read_raster_array(Path({str(broken)!r}))
except ImageError as exc:
    print("refused:", exc)
print("level restored:", cv2.utils.logging.getLogLevel() == before)
cv2.imread({str(broken)!r}, cv2.IMREAD_UNCHANGED)  # outside the block OpenCV speaks again
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "refused: cannot read as an image" in done.stdout and "level restored: True" in done.stdout
    assert "IHDR" in done.stderr  # OpenCV does complain about this file when nothing holds it back
    quiet = subprocess.run([sys.executable, "-c", script.rsplit("cv2.imread", 1)[0]], capture_output=True, text=True,
                           cwd=ROOT)
    assert quiet.stderr == "", quiet.stderr


def test_bad_images_and_prompts_fail_alone(tmp_path, exports):
    volume, boxes = np.load(DEMO_3D)["imgs"], np.load(DEMO_3D)["boxes"]
    images, prompts = tmp_path / "images", tmp_path / "prompts"
    images.mkdir()
    prompts.mkdir()
    write_medical(images / "good.nii.gz", volume, SPACING)
    (images / "broken.nii.gz").write_bytes(b"\x1f\x8b not really a gzipped NIfTI")
    write_dicom_series(images / "two_series", volume[:3], SPACING, series_uid="1.2.3.4.1", prefix="a")
    write_dicom_series(images / "two_series", volume[:2], SPACING, series_uid="1.2.3.4.2", prefix="b")
    write_medical(images / "malformed.nii.gz", volume, SPACING)
    write_medical(images / "outside.nii.gz", volume, SPACING)
    sitk.WriteImage(sitk.GetImageFromArray(volume), str(images / "cut.nii"))  # uncompressed
    for name in ("cut.nii", "cut_gz.nii.gz"):  # a copy that stopped half-way: SimpleITK read zeros for the rest
        whole = (images / ("good.nii.gz" if name.endswith(".gz") else name)).read_bytes()
        (images / name).write_bytes(whole[: len(whole) // 2])
    for name in ("good", "broken", "cut", "cut_gz"):
        (prompts / f"{name}.json").write_text(json.dumps(boxes.tolist()))
    (prompts / "two_series.json").write_text(json.dumps([[*boxes[0, :2].tolist(), 0, *boxes[0, 3:5].tolist(), 2]]))
    (prompts / "malformed.json").write_text('{"boxes": [[1, 2, 3, 4, 5, 6]')
    (prompts / "outside.json").write_text(json.dumps([[500, 500, 0, 600, 600, 3]]))
    result = _run("segment", images, "-o", tmp_path / "out", "--boxes", prompts, "--modality", "raw",
                  "--export-dir", exports("seeded"), "-q")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 6, result.stderr
    text = "\n".join(errors)
    assert "ERROR broken.nii.gz: cannot read as a medical image" in text
    described = 352 + volume.size * volume.itemsize  # the header and vox_offset's padding, then the voxels
    assert (f"ERROR cut.nii: is cut short: its header describes {described:,} bytes, the file holds {described // 2:,} "
            "(a copy or download that stopped part-way; SimpleITK would read the missing voxels as 0)") in text
    assert "ERROR cut_gz.nii.gz: is cut short: its header describes" in text and "gzip stream ends before its end" in text
    assert "ERROR two_series: holds 2 DICOM series: 1.2.3.4.1 (3 files), 1.2.3.4.2 (2 files); choose one with --series" in text
    assert "ERROR malformed.nii.gz: the box file malformed.json is not valid JSON" in text
    assert "ERROR outside.nii.gz: box 0 [500, 500, 0, 600, 600, 3] lies outside the image along x" in text
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.json", "good.nii.gz"]
    picked = _run("segment", images / "two_series", "-o", tmp_path / "picked", "--boxes", prompts, "--series",
                  "1.2.3.4.1", "--modality", "raw", "--export-dir", exports("seeded"), "-q")
    assert picked.exit_code == 0, picked.stderr
    assert sitk.ReadImage(str(tmp_path / "picked/two_series.nii.gz")).GetSize() == (volume.shape[2], volume.shape[1], 3)


def test_a_complete_nifti_in_several_gzip_members_is_read(tmp_path):
    """The gzip trailer's length is only the last member's: a NIfTI written as two members (as `cat a.gz b.gz`
    makes) disagrees with it, and the stream decompressed to its end shows that it is whole. A big-endian header
    is read in its own byte order."""
    import gzip

    volume = np.load(DEMO_3D)["imgs"]
    sitk.WriteImage(sitk.GetImageFromArray(volume), str(tmp_path / "one.nii"))
    data = (tmp_path / "one.nii").read_bytes()
    (tmp_path / "two.nii.gz").write_bytes(gzip.compress(data[:1000]) + gzip.compress(data[1000:]))
    assert np.array_equal(read_image(tmp_path / "two.nii.gz").pixels, volume)
    import nibabel

    big_endian = tmp_path / "big_endian.nii"  # the header's own byte order (nibabel writes it; SimpleITK reads it)
    nibabel.save(nibabel.Nifti1Image(volume.T, np.eye(4), nibabel.Nifti1Header(endianness=">")), big_endian)
    assert np.array_equal(read_image(big_endian).pixels, volume)
    whole = big_endian.read_bytes()
    big_endian.write_bytes(whole[:-1000])
    with pytest.raises(ImageError, match=f"is cut short: its header describes {len(whole):,} bytes, the file holds "
                                         f"{len(whole) - 1000:,}"):
        read_image(big_endian)


def test_a_label_map_on_another_grid_fails_alone(tmp_path, exports):
    volume, gts = np.load(DEMO_3D)["imgs"], np.load(DEMO / "gts/3DBox_Synthetic_ellipsoids.npz")["gts"]
    images, maps = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    maps.mkdir()
    for name in ("good", "moved", "smaller"):
        write_medical(images / f"{name}.nii.gz", volume, SPACING)
    write_medical(maps / "good.nii.gz", gts, SPACING)
    write_medical(maps / "moved.nii.gz", gts, SPACING, origin=(0.0, 0.0, 0.0))
    write_medical(maps / "smaller.nii.gz", gts[:-1], SPACING)
    result = _run("segment", images, "-o", tmp_path / "out", "--boxes-from", maps, "--modality", "raw",
                  "--export-dir", exports("seeded"), "-q")
    assert result.exit_code == 1
    assert "ERROR moved.nii.gz: the label map moved.nii.gz lies elsewhere than the image: origin (0, 0, 0)" in result.stderr
    depth, height, width = volume.shape
    assert (f"ERROR smaller.nii.gz: the label map smaller.nii.gz is ({width}, {height}, {depth - 1}) (x, y, z) but "
            f"the image is ({width}, {height}, {depth})") in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.json", "good.nii.gz"]


def test_without_modality_metadata_the_user_is_asked_to_choose(tmp_path, exports):
    volume, boxes = np.load(DEMO_3D)["imgs"], np.load(DEMO_3D)["boxes"]
    image = write_medical(tmp_path / "v.nii.gz", volume, SPACING)
    (tmp_path / "b.json").write_text(json.dumps(boxes.tolist()))
    result = _run("segment", image, "-o", tmp_path / "out", "--boxes", tmp_path / "b.json", "--export-dir", exports("seeded"))
    assert result.exit_code == 1
    assert "ERROR v.nii.gz: its metadata names no modality; choose --modality CT" in result.stderr


def test_outputs_never_land_beside_the_inputs(tmp_path, exports):
    image = write_medical(tmp_path / "v.nii.gz", np.load(DEMO_3D)["imgs"], SPACING)
    result = _run("segment", image, "-o", tmp_path, "--boxes-from", image, "--export-dir", exports("seeded"))
    assert result.exit_code == 2 and "inside the input folder" in result.stderr


def test_non_finite_values_are_refused_by_every_intensity_rule():
    from medsam_lite.io.image import ImageError
    from medsam_lite.io.intensity import to_uint8

    pixels = np.linspace(0, 100, 64, dtype=np.float32).reshape(8, 8)
    pixels[2, 3], pixels[5, 5] = np.nan, np.inf
    for modality in ("CT", "MR", "other", "raw"):
        with pytest.raises(ImageError, match="2 NaN or infinite values"):
            to_uint8(pixels, modality)
