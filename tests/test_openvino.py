"""The OpenVINO engine: exported from a checkpoint, same masks as torch and the official script, no torch at run time."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from medsam_lite.io.challenge import load_case
from medsam_lite.cli import main
from medsam_lite.engines import ExportError, create_engine
from medsam_lite.engines.openvino_engine import OpenVINOEngine
from medsam_lite.engines.cpu import cpu_flags
from medsam_lite.engines.manifest import MANIFEST_FORMAT
from medsam_lite.engines.precision import BF16_FLAGS, BF16_MODES
from medsam_lite.batch.int8 import export_int8_encoder
from evaluation.fidelity import compare
from medsam_lite.core.postprocess import foreground, masks_from_logits, upscale_logits
from medsam_lite.core.preprocess import box_to_256, image_to_model_input
from medsam_lite.pipeline.segment import segment_2d, segment_3d

from .conftest import ROOT, load_reference, once_per_checkpoint, shared_path

DEMO = ROOT / "test_demo"


CASES = [
    "2DBox_Mammography_demo.npz",
    "2DBox_Microscopy_SELMA3D_nuclei_004_z060.npz",
    "2DBox_XRay_Pneumothorax-Masks_2046_train_1.npz",
    "3DBox_CT_Lesion_000001_02_01_008-023.npz",
    "3DBox_CT_Lesion_000010_01_01_078-090.npz",
]


@pytest.mark.parametrize("which", ["demo", "random"])
@pytest.mark.parametrize("name", CASES)
def test_openvino_matches_official(ov_engines, which, name):
    engine = ov_engines(which)
    case = load_case(shared_path("cases", "imgs", name))
    run = segment_3d if case.is_3d else segment_2d
    agreement = compare(run(engine, case.image, case.boxes), load_reference(which, name))
    assert agreement.passes, agreement


@pytest.mark.parametrize("name", ["2DBox_Synthetic_ellipses.npz", "3DBox_Synthetic_ellipsoids.npz"])
def test_openvino_matches_torch_on_a_seeded_checkpoint(ov_engines, torch_engines, name):
    """The export against the eager model it came from, on test_demo (2D, and 3D propagation)."""
    case = load_case(DEMO / "imgs" / name)
    run = segment_3d if case.is_3d else segment_2d
    ours = run(ov_engines("seeded"), case.image, case.boxes)
    reference = run(torch_engines("seeded"), case.image, case.boxes)
    assert ours.any() and set(np.unique(reference)) == {0, 1, 2}
    agreement = compare(ours, reference)
    assert agreement.min_dice >= 0.9999, agreement
    if case.is_3d:
        assert agreement.passes, agreement
    else:  # every pixel that differs lies where torch's logit is within float rounding of the threshold
        assert np.count_nonzero(ours != reference) <= 5, agreement
        engine = torch_engines("seeded")
        model_in, resized = image_to_model_input(case.image)
        logits = engine.logits(engine.encode(model_in), box_to_256(case.boxes, case.image.shape[:2]))
        up = upscale_logits(logits.numpy()[:, 0], resized, case.image.shape[:2])
        nearest = np.abs(up).min(axis=0)  # how close the closest box's logit is to the threshold, per pixel
        assert np.all(nearest[ours != reference] < 1e-3), nearest[ours != reference]


def test_region_upsampling_equals_full_upsampling():
    rng = np.random.default_rng(11)
    logits = (rng.standard_normal((4, 256, 256)) - 6).astype(np.float32)
    logits[0] += 8  # positives everywhere
    logits[1, 40:90, 100:130] += 12  # one blob
    logits[2, 0:3, 250:256] += 12  # a corner, partly in the padding for non-square images
    logits[3] = -1.0  # a box with nothing
    for resized, original in [((256, 256), (1024, 1024)), ((170, 256), (700, 1054)), ((256, 200), (256, 200))]:
        full = foreground(upscale_logits(logits, resized, original))
        for i, (part, (rows, cols)) in enumerate(masks_from_logits(logits, resized, original)):
            rebuilt = np.zeros(original, bool)
            rebuilt[rows, cols] = part
            assert np.array_equal(rebuilt, full[i])
            if i in (1, 2):
                assert part.size < full[i].size / 10


def test_stale_export_is_refused(exports, checkpoint_path, tmp_path):
    with pytest.raises(ExportError, match="stale.*Re-run `medsam-lite export"):
        create_engine("auto", checkpoint_path("seeded_other"), exports("seeded"))
    result = CliRunner().invoke(main, ["predict", "-i", DEMO / "imgs", "-o", tmp_path / "o",
                                       "--checkpoint", checkpoint_path("seeded_other"), "--export-dir", exports("seeded")])
    assert result.exit_code == 2 and "stale" in result.stderr


def test_auto_engine_choice(exports, checkpoint_path, tmp_path):
    assert create_engine("auto", checkpoint_path("seeded"), exports("seeded")).engine.name == "openvino"
    assert create_engine("auto", checkpoint_path("seeded"), tmp_path / "no-export").engine.name == "torch"
    with pytest.raises(ExportError, match="no OpenVINO export"):
        create_engine("openvino", checkpoint_path("seeded"), tmp_path / "no-export")


def test_runtime_path_imports_neither_torch_nor_matplotlib_nor_scipy(exports, tmp_path):
    """The whole per-case path on the OpenVINO engine, in a fresh process without a checkpoint file: no torch,
    matplotlib or SciPy, and no OpenVINO telemetry (nor the network modules it needs)."""
    script = f"""
import sys
from medsam_lite.cli import main
sys.argv = ["medsam-lite", "predict", "-i", {str(DEMO / 'imgs')!r}, "-o", {str(tmp_path / 'out')!r},
            "--export-dir", {str(exports('seeded'))!r}, "-q"]
try:
    main()
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
assert not {{"torch", "matplotlib", "scipy"}} & set(sys.modules), sorted(sys.modules)
# OpenVINO's telemetry (a usage event sent from a forked process on every import) stays off, and its model
# converter (45 ms of imports) is not loaded to run a model
assert sys.modules.get("openvino_telemetry", None) is None and "urllib.request" not in sys.modules
assert "openvino.tools.ovc" not in sys.modules, "the converter was imported"
print("torch-free ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "MEDSAM_LITE_CHECKPOINT": ""})
    assert "torch-free ok" in done.stdout, done.stderr
    assert "no checkpoint file here to check the export against" in done.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in (DEMO / "imgs").iterdir() if p.suffix == ".npz")


def test_the_converter_imports_after_the_runtime_without_it():
    """The runtime is imported without OpenVINO's converter; ``export`` in the same process still gets it."""
    script = """
import sys
from medsam_lite.engines.openvino_import import import_converter, import_openvino
ov = import_openvino()
assert "openvino.tools.ovc" not in sys.modules and not hasattr(ov, "convert_model")
convert_model = import_converter()
assert ov.convert_model is convert_model and sys.modules.get("openvino_telemetry", None) is None
print("converter ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert "converter ok" in done.stdout, done.stderr


def test_an_engine_made_in_the_background_equals_one_made_at_once(exports):
    """``create_engine(background=True)`` returns while the encoder compiles; ``ready()`` waits (again: at once),
    and an ``encode`` without it waits too. The masks equal those of an engine compiled before it returned."""
    case = load_case(DEMO / "imgs/2DBox_Synthetic_ellipses.npz")
    at_once = create_engine("openvino", None, exports("seeded"), default_checkpoint=False).engine
    expected = segment_2d(at_once, case.image, case.boxes)
    for call_ready in (True, False):
        engine = create_engine("openvino", None, exports("seeded"), default_checkpoint=False, background=True).engine
        if call_ready:
            engine.ready()
            engine.ready()
        np.testing.assert_array_equal(segment_2d(engine, case.image, case.boxes), expected)


def _garble(xml: Path) -> None:
    """Make ``xml`` no model, keeping its length (the manifest's sizes cannot see it; only OpenVINO can)."""
    xml.write_text("<net>not a model</net>".ljust(xml.stat().st_size))


# (checkpoint, case, min voxel agreement): a seeded random model has ragged masks with many boundary pixels, so
# its bf16/int8 masks move further from fp32 than the trained checkpoint's.
PRECISION_CASES = [
    ("seeded", "2DBox_Synthetic_ellipses.npz", 0.95),
    ("demo", "2DBox_XRay_Pneumothorax-Masks_2041_train_1.npz", 0.99),
]


def _precision_cases(which: str) -> Path:
    """The folder a checkpoint's int8 encoder is calibrated on and its case read from: test_demo's for the seeded
    checkpoint, the shared cases/ for the others."""
    return DEMO / "imgs" if which == "seeded" else shared_path("cases", "imgs")


@pytest.fixture(scope="module")
def int8_exports(exports, tmp_path_factory):
    """``int8_exports(which)``: a copy of that checkpoint's export with an int8 encoder calibrated on 8 cases of
    ``_precision_cases(which)``, made once per module (NNCF takes 10-15 s)."""

    def make(which: str) -> Path:
        export_dir = tmp_path_factory.mktemp(f"export-int8-{which}") / "export"
        shutil.copytree(exports(which), export_dir)
        assert export_int8_encoder(export_dir, _precision_cases(which), samples=8) == 8
        return export_dir

    return once_per_checkpoint(make)


@pytest.mark.parametrize("which, name, min_voxels", PRECISION_CASES)
def test_the_approximate_modes_are_near_f32_and_say_so(int8_exports, tmp_path, checkpoint_path, which, name, min_voxels):
    export_dir = int8_exports(which)
    case = load_case(_precision_cases(which) / name)
    f32 = segment_2d(OpenVINOEngine(export_dir), case.image, case.boxes)
    for precision in ("bf16", "int8", "mixed", "bf16-linears"):
        approx = segment_2d(OpenVINOEngine(export_dir, precision=precision), case.image, case.boxes)
        agreement = compare(approx, f32)
        assert agreement.voxels > min_voxels and agreement.min_dice > 0.9, (precision, agreement)
        result = CliRunner().invoke(main, ["predict", "-i", DEMO / "imgs", "-o", tmp_path / precision,
                                           "--export-dir", export_dir, "--precision", precision, "-q",
                                           "--checkpoint", checkpoint_path(which)])
        assert result.exit_code == 0, result.stderr
        rounded = {"bf16": "the image encoder in bf16, the decoder f32",
                   "int8": "the image encoder's linears in int8, its other layers bf16 where the CPU has bf16 units, "
                           "the decoder f32",
                   "mixed": "the image encoder's convolution stage f32 but its MBConv projections, the rest bf16; the "
                            "box decoder's largest products bf16",
                   "bf16-linears": "the image encoder's linears in bf16, everything else f32"}
        assert f"--precision {precision} is approximate ({rounded[precision]}): masks may" in result.stderr
        without_bf16 = precision in BF16_MODES and not cpu_flags() & BF16_FLAGS
        assert ("this CPU has no bf16 instructions" in result.stderr) == without_bf16


def test_int8_quantises_the_linears_alone(int8_exports, tmp_path):
    """`export --int8` puts int8 on the linears only (every layer in int8 lost 0.16 DSC on a real CT lesion); the
    engine compiles that encoder with the bf16 hint and refuses an int8 encoder made the old way."""
    import openvino as ov

    export_dir = tmp_path / "export"
    shutil.copytree(int8_exports("seeded"), export_dir)  # a copy: its manifest is changed below
    model = ov.Core().read_model(export_dir / "image_encoder_int8.xml")
    fed = {target.get_node().get_type_name() for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"
           for target in op.output(0).get_target_inputs()}
    assert "MatMul" in fed and not fed & {"Convolution", "GroupConvolution"}, fed
    assert OpenVINOEngine(export_dir, precision="int8")._encoder_config["INFERENCE_PRECISION_HINT"] == "bf16"
    manifest = json.loads((export_dir / "manifest.json").read_text())
    assert manifest["int8_linears_only"] is True
    del manifest["int8_linears_only"]  # as an export made before the linears-only int8 wrote it
    (export_dir / "manifest.json").write_text(json.dumps(manifest))
    remake = f"re-run `medsam-lite export --checkpoint {manifest['checkpoint']} --out {export_dir} --int8 CASES_DIR`"
    with pytest.raises(ExportError, match="has every layer in int8 .*" + re.escape(remake)):
        OpenVINOEngine(export_dir, precision="int8")
    OpenVINOEngine(export_dir)  # its f32 encoder is still fine


def test_runtime_requirements_are_what_the_runtime_path_imports():
    """The runtime image installs requirements/runtime.txt alone: no torch, no SciPy, no SimpleITK there; the
    service's FastAPI and uvicorn are in it."""
    names = {line.split(">")[0].split("=")[0].strip() for line in (ROOT / "requirements/runtime.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")}
    assert names == {"numpy", "opencv-python-headless", "click", "tqdm", "openvino", "fastapi", "uvicorn", "python-multipart"}


def test_export_of_an_older_format_is_refused(exports, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(exports("seeded"), old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["format"] = MANIFEST_FORMAT - 1  # e.g. an export made before the decoder's attention form changed
    (old / "manifest.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(main, ["check", "--export-dir", old, "--engine", "openvino"])
    assert result.exit_code == 2 and f"expected {MANIFEST_FORMAT}; re-run `medsam-lite export`" in result.stderr


def test_check_loads_the_engine_and_fills_the_cache(exports, tmp_path):
    export_dir = tmp_path / "export"
    shutil.copytree(exports("seeded"), export_dir, ignore=shutil.ignore_patterns("cache"))
    result = CliRunner().invoke(main, ["check", "--export-dir", export_dir, "--engine", "openvino"])
    assert result.exit_code == 0, result.stderr
    assert "openvino f32 engine" in result.stdout
    assert len(list((export_dir / "cache").iterdir())) == 4  # encoder, decoder image part, box part, point part
    missing = CliRunner().invoke(main, ["check", "--export-dir", tmp_path / "none", "--engine", "openvino"])
    assert missing.exit_code == 2 and "medsam-lite export" in missing.stderr


@pytest.mark.parametrize("model_file, precision", [("image_encoder.xml", "f32"), ("mask_decoder.xml", "f32"),
                                                   ("image_encoder.xml", "mixed"), ("mask_decoder.xml", "mixed")])
def test_an_export_that_cannot_compile_stops_the_run_with_one_line(exports, tmp_path, model_file, precision):
    """The decoders compile on the caller's thread while the encoder compiles on its own: either failing is one
    line naming the file and the remedy, and nothing is written; also where ``mixed`` reads a file to rewrite it
    (its encoder cut in two, its box part's products) instead of compiling it."""
    broken = tmp_path / "broken"
    shutil.copytree(exports("seeded"), broken, ignore=shutil.ignore_patterns("cache"))
    _garble(broken / model_file)
    result = CliRunner().invoke(main, ["predict", "-i", DEMO / "imgs", "-o", tmp_path / "out", "--export-dir", broken,
                                       "--precision", precision])
    assert result.exit_code == 2, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert line.startswith(f"error: the OpenVINO export in {broken} could not be loaded: {model_file}: ")
    assert line.endswith("re-run `medsam-lite export`")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    with pytest.raises(ExportError, match=model_file):  # the Python API too, the encoder's error from ready()
        create_engine("openvino", None, broken, default_checkpoint=False, background=True,
                      precision=precision).engine.ready()
