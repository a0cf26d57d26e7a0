"""``predict --model-map``: each case is segmented by the model of the modality in its file name."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from medsam_lite.cli import main
from evaluation.fidelity import compare
from medsam_lite.batch.model_map import ModelMapError, modality_of, read_model_map

from .conftest import ROOT, load_reference, shared_path

DEMO = ROOT / "test_demo"


def _predict(args):
    return CliRunner().invoke(main, ["predict", *map(str, args)])


def _timing(path):
    with open(path) as handle:
        return {row["case"]: row for row in csv.DictReader(handle)}


def test_modality_from_file_name():
    assert modality_of("3DBox_CT_AMOS_amos_0018.npz") == "CT"
    assert modality_of("2DBox_XRay_Pneumothorax-Masks_2041_train_1.npz") == "XRay"
    assert modality_of("2DBox_Mammography_demo.npz") == "Mammography"
    assert modality_of("my_scan.npz") is None and modality_of("2DBox_x.npz") is None


def test_each_case_equals_a_run_with_the_checkpoint_it_was_routed_to(tmp_path, checkpoint_path, exports):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("2DBox_Synthetic_ellipses.npz", "3DBox_Synthetic_ellipsoids.npz"):
        shutil.copy(DEMO / "imgs" / name, inputs / name)
        shutil.copy(DEMO / "imgs" / name, inputs / name.replace("Synthetic", "Other"))
    shutil.copy(checkpoint_path("seeded_other"), tmp_path / "other.pth")
    model_map = tmp_path / "map.json"  # a relative checkpoint path, and an export folder (OpenVINO)
    model_map.write_text(json.dumps({"synthetic": "other.pth", "default": str(exports("seeded"))}))
    out, timing = tmp_path / "routed", tmp_path / "timing.csv"
    result = _predict(["-i", inputs, "-o", out, "--model-map", model_map, "--timing-csv", timing])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.count("torch engine") == 1 and result.stderr.count("openvino f32 engine") == 1
    assert "3DBox_Other_ellipsoids.npz: 2 box(es), 7 slice(s) encoded" in result.stderr and ", model default=" in result.stderr
    rows = _timing(timing)
    for name, row in rows.items():
        expected = "synthetic=" if "Synthetic" in name else "default="
        assert row["model"].startswith(expected), row

    single = {}
    for which, args in [("seeded_other", ["--checkpoint", checkpoint_path("seeded_other"), "--engine", "torch"]),
                        ("seeded", ["--checkpoint", checkpoint_path("seeded"), "--export-dir", exports("seeded")])]:
        single[which] = tmp_path / which
        assert _predict(["-i", inputs, "-o", single[which], *args, "-q"]).exit_code == 0
    for name in rows:
        which = "seeded_other" if "Synthetic" in name else "seeded"
        assert np.array_equal(np.load(out / name)["segs"], np.load(single[which] / name)["segs"]), name
    other = np.load(single["seeded_other"] / "2DBox_Synthetic_ellipses.npz")["segs"]
    assert not np.array_equal(other, np.load(single["seeded"] / "2DBox_Synthetic_ellipses.npz")["segs"])


def test_shared_checkpoints_routed_to_modalities_match_their_references(tmp_path):
    """XRay -> the random checkpoint, everything else -> the demo one; each against its official reference."""
    cases = ["2DBox_XRay_Pneumothorax-Masks_2041_train_1.npz", "2DBox_Microscopy_SELMA3D_nuclei_004_z060.npz"]
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in cases:
        (inputs / name).symlink_to(shared_path("cases", "imgs", name))
    model_map = tmp_path / "map.json"
    model_map.write_text(json.dumps({"XRay": str(shared_path("checkpoints", "lite_medsam_random.pth")),
                                     "default": str(shared_path("checkpoints", "lite_medsam_demo.pth"))}))
    result = _predict(["-i", inputs, "-o", tmp_path / "out", "--model-map", model_map, "--engine", "torch"])
    assert result.exit_code == 0, result.stderr
    for name, which in zip(cases, ["random", "demo"]):
        agreement = compare(np.load(tmp_path / "out" / name)["segs"], load_reference(which, name))
        assert agreement.passes, (name, agreement)
        other = compare(np.load(tmp_path / "out" / name)["segs"], load_reference("demo" if which == "random" else "random", name))
        assert not other.identical


@pytest.mark.parametrize(
    "content, problem",
    [
        ("{not json", "is not valid JSON"),
        ("[]", "expected a JSON object"),
        ('{"CT": "missing.pth"}', "entry 'CT': no such checkpoint or export folder"),
        ('{"CT": 3}', "entry 'CT': checkpoint or export folder must be a path"),
        ('{"CT": {"weights": "x"}}', "entry 'CT': expected keys checkpoint and/or export_dir"),
        ('{"CT": "m.pth", "ct": "m.pth"}', "key 'ct' is given twice"),
    ],
)
def test_bad_model_map_is_one_error_before_anything_runs(tmp_path, content, problem):
    (tmp_path / "m.pth").write_bytes(b"")
    model_map = tmp_path / "map.json"
    model_map.write_text(content)
    with pytest.raises(ModelMapError, match=problem):
        read_model_map(model_map)
    result = _predict(["-i", DEMO / "imgs", "-o", tmp_path / "out", "--model-map", model_map])
    assert result.exit_code == 2 and problem in result.stderr and str(model_map) in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_model_that_cannot_load_fails_its_cases_only(tmp_path, checkpoint_path):
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    model_map = tmp_path / "map.json"
    model_map.write_text(json.dumps({"Synthetic": str(broken), "default": str(checkpoint_path("seeded"))}))
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("2DBox_Synthetic_a.npz", "2DBox_Synthetic_b.npz", "2DBox_Other_c.npz"):
        shutil.copy(DEMO / "imgs/2DBox_Synthetic_ellipses.npz", inputs / name)
    result = _predict(["-i", inputs, "-o", tmp_path / "out", "--model-map", model_map])
    assert result.exit_code == 1
    for name in ("2DBox_Synthetic_a.npz", "2DBox_Synthetic_b.npz"):
        assert (f"ERROR {name}: its model could not be loaded: {broken} is not a PyTorch checkpoint: it starts with "
                f"b'not '") in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["2DBox_Other_c.npz"]


def test_finer_keys_take_their_cases_before_the_modality():
    from medsam_lite.batch.model_map import ModelEntry, ModelRouter

    entries = {k.lower(): ModelEntry(k) for k in ("MR", "MR_Hippocampus", "3DBox_MR_Hippo*", "default")}
    router = ModelRouter(entries, load=None, fallback=None)
    picks = {name: router.entry_for(name).key for name in (
        "3DBox_MR_Hippocampus_001.npz", "3DBox_MR_Hippocampal_002.npz", "2DBox_MR_BP09_brain.npz",
        "2DBox_CT_BP00_lung.npz", "2DBox_MR_Hippocampus.npz")}
    assert picks == {"3DBox_MR_Hippocampus_001.npz": "3DBox_MR_Hippo*", "3DBox_MR_Hippocampal_002.npz": "3DBox_MR_Hippo*",
                     "2DBox_MR_BP09_brain.npz": "MR", "2DBox_CT_BP00_lung.npz": "default",
                     "2DBox_MR_Hippocampus.npz": "MR_Hippocampus"}
    only_parts = ModelRouter({k.lower(): ModelEntry(k) for k in ("MR_Hippocampus",)}, load=None, fallback=None)
    assert only_parts.entry_for("3DBox_MR_Hippocampus_001.npz").key == "MR_Hippocampus"
    assert only_parts.entry_for("3DBox_MR_HippocampusX_001.npz") is None  # whole parts, not substrings
