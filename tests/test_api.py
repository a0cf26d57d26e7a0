"""The Python API: the README's example runs and equals `predict`; Predictor/segment_npz equal `predict` on the
shared cases with the official weights; set-image-once, prompt-many; clear errors; `import medsam_lite` cheap."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from medsam_lite.cli import main

from .conftest import FIXTURES, ROOT, shared_case, shared_path

DEMO = ROOT / "test_demo"


def _predict_cli(tmp_path, cases, export, checkpoint, name="cli"):
    """`medsam-lite predict` on links to ``cases``; {file name: segs}."""
    inputs, out = tmp_path / f"{name}-in", tmp_path / f"{name}-out"
    inputs.mkdir()
    for case in cases:
        (inputs / case.name).symlink_to(case)
    done = CliRunner().invoke(main, ["predict", "-i", str(inputs), "-o", str(out), "--export-dir", str(export),
                                     "--checkpoint", str(checkpoint), "-q"])
    assert done.exit_code == 0, done.stderr
    return {p.name: np.load(p)["segs"] for p in out.iterdir()}


def test_the_readme_example_runs_and_equals_predict(tmp_path, monkeypatch, exports):
    block = re.search(r"## Python API.*?```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    checkpoint = shared_path("checkpoints", "lite_medsam.pth")
    monkeypatch.setenv("MEDSAM_LITE_CHECKPOINT", str(checkpoint))
    monkeypatch.setenv("MEDSAM_LITE_EXPORT_DIR", str(exports("official")))
    monkeypatch.chdir(ROOT)
    names: dict = {}
    exec(compile(block, "README.md", "exec"), names)  # noqa: S102 - the README's own example
    cli = _predict_cli(tmp_path, sorted((DEMO / "imgs").glob("*.npz")), exports("official"), checkpoint)
    labels, masks, segs = names["labels"], names["masks"], names["segs"]
    assert labels.dtype == np.uint8 and np.array_equal(labels, cli["2DBox_Synthetic_ellipses.npz"])
    assert np.array_equal(segs, cli["3DBox_Synthetic_ellipsoids.npz"])
    assert masks.shape == (2, *labels.shape) and masks.dtype == bool
    assert np.array_equal(np.max(masks * np.arange(1, 3)[:, None, None], axis=0), labels)
    assert names["mask"].shape == labels.shape and names["mask"].any()
    assert names["predictor"].description.startswith("openvino f32 engine")


def _official_cases() -> list[str]:
    """The 18 multi-modality 2D cases and one 3D lesion (test_fidelity runs the rest against the official
    script's outputs, which `predict` equals)."""
    names = [p.name for p in sorted((FIXTURES / "cases_mm" / "imgs").glob("*.npz"))]
    return names + ["3DBox_CT_Lesion_000001_02_01_008-023.npz"]


def test_segment_npz_and_predictor_equal_predict_on_the_shared_cases(tmp_path, exports):
    from medsam_lite import Predictor, segment_npz
    from medsam_lite.io.challenge import load_case

    checkpoint = shared_path("checkpoints", "lite_medsam.pth")
    cases = [shared_case(name) for name in _official_cases()]
    cli = _predict_cli(tmp_path, cases, exports("official"), checkpoint)
    predictor = Predictor(checkpoint=checkpoint, export_dir=exports("official"))
    for path in cases:
        assert np.array_equal(segment_npz(path, predictor), cli[path.name]), path.name
        case = load_case(path)
        if not case.is_3d:
            predictor.set_image(case.image)
            assert np.array_equal(predictor.segment(case.boxes), cli[path.name]), path.name
        else:
            assert np.array_equal(predictor.predict_volume(case.image, case.boxes), cli[path.name]), path.name


def test_set_image_once_prompt_many_and_clear_errors(exports, checkpoint_path):
    from medsam_lite import Predictor

    predictor = Predictor(checkpoint=checkpoint_path("seeded"), export_dir=exports("seeded"))
    with pytest.raises(RuntimeError, match="set_image"):
        predictor.predict([1, 2, 3, 4])
    case = np.load(DEMO / "imgs/2DBox_Synthetic_ellipses.npz")
    before = predictor.engine.encoder_passes
    predictor.set_image(case["imgs"])
    one = predictor.predict(case["boxes"][0])
    both = predictor.predict(case["boxes"])
    assert predictor.engine.encoder_passes == before + 1
    assert one.shape == (240, 320) and np.array_equal(one, both[0])
    embedding = predictor.embedding
    predictor.set_image(case["imgs"][..., 0], embedding=embedding)  # grey works too; given embedding: no pass
    assert predictor.engine.encoder_passes == before + 1 and np.array_equal(predictor.predict(case["boxes"]), both)
    with pytest.raises(ValueError, match="box 0 has x_min 50 > x_max 10"):
        predictor.predict([50, 5, 10, 20])
    hu = case["imgs"][..., 0].astype(np.int16) * 4 - 1000  # a CT slice in HU, as a notebook user holds it
    with pytest.raises(ValueError, match=r"uint8 image, got \(240, 320\) int16; medsam_lite.to_uint8\(pixels, 'CT'\)"):
        predictor.set_image(hu)
    import medsam_lite

    windowed = medsam_lite.to_uint8(hu, "CT", (-600.0, 1500.0))  # the official CT rule, the lung window
    clipped = np.clip(hu.astype(np.float64), -1350, 150)  # level -600, width 1500
    assert np.array_equal(windowed, np.uint8((clipped - clipped.min()) / (clipped.max() - clipped.min()) * 255))
    with pytest.warns(UserWarning, match="clipped"):
        clipped = predictor.predict([300, 200, 400, 300])
    assert clipped.shape == (240, 320)
    with pytest.raises(ValueError, match=r"\(D, H, W\) uint8 volume, got \(240, 320, 3\) uint8; an \(H, W, 3\) picture"):
        predictor.predict_volume(case["imgs"], [[0, 0, 0, 5, 5, 1]])
    with pytest.raises(ValueError, match=r"\(D, H, W\) uint8 volume, got \(4, 240, 320\) float32"):
        predictor.predict_volume(np.zeros((4, 240, 320), np.float32), [[0, 0, 0, 5, 5, 1]])
    # boxes of the other layout are refused, not reshaped into other boxes: two 3D boxes hold 12 numbers, three 2D
    # boxes' worth
    with pytest.raises(ValueError, match=r"boxes must be \(N, 4\) \[x_min, y_min, x_max, y_max\], or one box of 4; "
                                         r"got shape \(2, 6\)"):
        predictor.predict([[10, 10, 0, 50, 50, 2], [60, 60, 0, 90, 90, 2]])
    with pytest.raises(ValueError, match=r"boxes must be \(N, 6\) .* got shape \(4,\)"):
        predictor.predict_volume(np.zeros((4, 240, 320), np.uint8), [10, 10, 50, 50])
    assert predictor.predict(np.zeros((0, 4), np.int64)).shape == (0, 240, 320)
    assert predictor.predict([]).shape == (0, 240, 320)  # an image with no detections: no masks (was IndexError)
    assert not predictor.segment([]).any()
    with pytest.raises(ValueError, match=r"the image is 2 x 1100 pixels: .* up to 512:1"):
        predictor.set_image(np.zeros((2, 1100, 3), np.uint8))  # not encoded; the image set before stays
    assert predictor.image.shape == (240, 320) and np.array_equal(predictor.predict(case["boxes"]), both)
    with pytest.raises(ValueError, match=r"the image is 1100 x 2 pixels"):
        predictor.predict_volume(np.zeros((3, 1100, 2), np.uint8), [[0, 0, 0, 1, 5, 1]])


def test_segment_npz_names_a_file_it_cannot_read(tmp_path, exports, checkpoint_path):
    from medsam_lite import Predictor, segment_npz
    from medsam_lite.core.case import CaseError

    predictor = Predictor(checkpoint=checkpoint_path("seeded"), export_dir=exports("seeded"))
    picture = tmp_path / "2DBox_picture.npz"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    for path, why in [(tmp_path / "absent.npz", "cannot read: No such file or directory"),
                      (picture, "not an .npz archive")]:
        with pytest.raises(CaseError) as caught:
            segment_npz(path, predictor)
        assert str(caught.value).startswith(f"{path}: {why}")


def test_one_predictor_from_several_threads_and_an_encoding_that_fails(exports, checkpoint_path, monkeypatch):
    """Threads sharing a Predictor take turns (OpenVINO answered "Infer Request is busy" to the second); an
    encoding that fails or is interrupted leaves the image before with its own embedding (it kept the new image
    beside the old embedding: masks of one image at the other's size)."""
    import threading

    from medsam_lite import Predictor

    predictor = Predictor(checkpoint=checkpoint_path("seeded"), export_dir=exports("seeded"))
    picture = np.load(DEMO / "imgs/2DBox_Synthetic_ellipses.npz")
    volume = np.load(DEMO / "imgs/3DBox_Synthetic_ellipsoids.npz")
    predictor.set_image(picture["imgs"])
    masks, labels = predictor.predict(picture["boxes"]), predictor.predict_volume(volume["imgs"], volume["boxes"])
    same, errors = [], []

    def work(call, expected):
        try:
            for _ in range(4):
                same.append(np.array_equal(call(), expected))
        except Exception as exc:  # noqa: BLE001 - what the test reports
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(lambda: predictor.predict(picture["boxes"]), masks)) for _ in range(2)]
    threads.append(threading.Thread(target=work, args=(lambda: predictor.predict_volume(volume["imgs"], volume["boxes"]),
                                                       labels)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == [] and same == [True] * 12

    def interrupted(engine, image):
        raise KeyboardInterrupt

    monkeypatch.setattr("medsam_lite.pipeline.segment.encode_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        predictor.set_image(np.zeros((64, 64, 3), np.uint8))
    assert predictor.image.shape == (240, 320, 3) and np.array_equal(predictor.predict(picture["boxes"]), masks)


def test_import_medsam_lite_stays_cheap():
    done = subprocess.run([sys.executable, "-c", "import sys, medsam_lite; print(sorted(m for m in ('numpy', 'torch', "
                           "'openvino', 'medsam_lite.pipeline.predictor') if m in sys.modules)); print(medsam_lite.Predictor.__name__)"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[]", "Predictor"]
