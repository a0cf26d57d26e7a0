"""``--precision fast``: the CPU's kind read from its flags, the measured rule for that kind, the bar,
and the chosen mode really running (engine, log, timing CSV, the masks of the mode it names)."""
from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from medsam_lite.cli import main
from medsam_lite.engines import precision
from medsam_lite.engines.cpu import cpu_flags
from medsam_lite.engines import create_engine
from medsam_lite.engines.precision import (BF16_MODES, FastRule, fast_rule, meets_bar, needs_openvino, no_bf16_note,
                                          resolve)

from .conftest import ROOT

DEMO = ROOT / "test_demo"

XEON_AMX = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\n"
            "flags\t\t: fpu sse4_2 avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8\n")
EPYC_BF16 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse4_2 avx2 avx512f avx512_vnni avx512_bf16\n"
LAPTOP = "processor\t: 0\nmodel name\t: Intel(R) Core(TM) i5\nflags\t\t: fpu sse4_2 avx2 fma\n"


def test_the_cpu_kind_comes_from_its_flags():
    assert fast_rule(cpu_flags(XEON_AMX)).kind.startswith("AMX")
    assert fast_rule(cpu_flags(EPYC_BF16)).kind.startswith("AVX512-BF16")
    assert fast_rule(cpu_flags(LAPTOP)).kind.startswith("other")
    assert cpu_flags("model name\t: no flags line\n") == frozenset()
    assert fast_rule(frozenset()).kind.startswith("other")  # not Linux: an unknown kind gets the exact mode


@pytest.mark.parametrize("cpuinfo", [EPYC_BF16, LAPTOP])
def test_fast_runs_f32_where_no_mode_met_the_bar(cpuinfo):
    """The measured verdict on the kinds without AMX (README, 'Precision modes'): no approximate mode is 2x fp32
    and keeps mean DSC within 0.005 and every case within 0.03 of fp32, so `fast` is the exact mode and says why."""
    chosen = resolve("fast", cpu_flags(cpuinfo))
    assert (chosen.mode, chosen.label) == ("f32", "fast=f32")
    assert "no faster mode meets the bar" in chosen.note and fast_rule(cpu_flags(cpuinfo)).kind in chosen.note


def test_fast_on_a_xeon_with_amx_runs_mixed_and_says_why():
    """There mixed (its head's MBConv projections on the bf16 units) met both lines in every measurement of
    2026-12-07: the note gives its speed-up, its mean changes and its worst case beside the other modes'."""
    chosen = resolve("fast", cpu_flags(XEON_AMX))
    assert (chosen.mode, chosen.label) == ("mixed", "fast=mixed")
    note = chosen.note
    assert note.startswith("--precision fast runs mixed on this CPU (AMX") and "the fastest mode that meets the bar" in note
    assert "x2.05-2.13" in note and "mean DSC -0.0013" in note and "worst case -0.026" in note
    assert "bf16-linears" in note and "x1.58" in note


def test_named_modes_are_run_as_named():
    for mode in ("f32", "bf16", "int8", "mixed", "bf16-linears"):
        assert resolve(mode) == precision.Precision(mode, mode) and resolve(mode).label == mode
    with pytest.raises(ValueError, match="precision must be one of f32, bf16, int8, mixed, bf16-linears, fast"):
        resolve("fp16")


def test_an_approximate_mode_on_the_torch_engine_is_refused_in_the_words_asked(tmp_path):
    assert needs_openvino("mixed", "mixed") == ("--precision mixed needs the OpenVINO engine (the torch engine runs "
                                                "f32 alone)")
    assert needs_openvino("fast", "mixed").startswith("--precision fast runs mixed on this CPU, which needs the "
                                                      "OpenVINO engine")
    with pytest.raises(ValueError, match="--precision bf16 needs the OpenVINO engine") as refused:
        create_engine("torch", None, precision="bf16")  # refused before any checkpoint is looked for
    assert "export" not in str(refused.value)
    with pytest.raises(ValueError, match="--precision bf16 needs the OpenVINO engine") as refused:
        create_engine("torch", None, export_dir=tmp_path, precision="bf16")  # torch named: no export to suggest
    assert "export" not in str(refused.value)
    with pytest.raises(ValueError, match=r"needs the OpenVINO engine .*: run `medsam-lite export` first"):
        create_engine("auto", None, export_dir=tmp_path, precision="bf16")  # auto, a folder with no export in it


def test_the_bf16_modes_say_where_the_cpu_has_no_bf16_instructions():
    for mode in BF16_MODES:
        note = no_bf16_note(mode, cpu_flags(LAPTOP))
        assert note.startswith("this CPU has no bf16 instructions") and f"--precision {mode} " in note
        assert no_bf16_note(mode, cpu_flags(XEON_AMX)) == no_bf16_note(mode, cpu_flags(EPYC_BF16)) == ""
    assert no_bf16_note("int8", cpu_flags(LAPTOP)) == no_bf16_note("f32", cpu_flags(LAPTOP)) == ""


def test_the_bar_rejects_the_measured_modes_and_takes_one_that_meets_it():
    # (encoder speed-up, mean DSC change, mean NSD change, worst case) as measured on the official weights
    assert not meets_bar(2.57, -0.0133, -0.0140, -0.2760)  # bf16, Xeon with AMX
    assert not meets_bar(2.11, -0.0070, -0.0038, -0.1078)  # int8 PTQ calibrated on the cases themselves
    assert not meets_bar(1.45, -0.0066, -0.0050, -0.05)  # NNCF accuracy-aware int8
    assert not meets_bar(1.66, -0.011, -0.017, -0.30)  # bf16, AMD EPYC with AVX512-BF16
    assert not meets_bar(2.27, 0.0010, 0.0016, -0.0404)  # int8 linears, the rest bf16 (Zen 5): the worst case alone
    assert not meets_bar(2.43, -0.0025, 0.0013, -0.0321)  # the same, calibrated with hippocampus slices too
    assert not meets_bar(2.50, -0.0055, -0.0034, -0.0585)  # bf16 (the encoder alone), Xeon with AMX
    assert meets_bar(2.01, -0.0012, -0.0001, -0.0283)  # mixed, Xeon with AMX (the shipped engine), one day
    assert not meets_bar(1.99, -0.0012, -0.0001, -0.0283)  # mixed there before its copy-free hand-off
    assert not meets_bar(1.86, -0.0012, -0.0001, -0.0283)  # mixed (the shipped engine), the next day
    assert meets_bar(2.06, -0.0012, -0.0001, -0.0283)  # mixed, the same day in a faster hour
    assert not meets_bar(1.97, -0.0018, -0.0006, -0.0327)  # mixed with q, k, v as three linears: both bars
    assert not meets_bar(2.04, -0.0018, -0.0006, -0.0327)  # mixed with export format 12 (the same): the worst case
    assert meets_bar(2.05, -0.0013, -0.0002, -0.0262)  # mixed with its head's MBConv projections in bf16, format 12
    assert not meets_bar(1.58, -0.0005, 0.0006, -0.0185)  # bf16-linears: the accuracy, not the speed
    assert not meets_bar(1.83, -0.0036, -0.0018, -0.0435)  # the transformer stages' branches bf16, their sums f32
    assert meets_bar(2.0, -0.005, 0.005, -0.03)  # on the bar itself
    assert not meets_bar(1.99, 0, 0, 0) and not meets_bar(3, 0.0051, 0, 0) and not meets_bar(3, 0, 0, -0.031)


def test_fast_in_predict_is_said_and_written_and_gives_its_modes_masks(tmp_path, exports, checkpoint_path):
    chosen = resolve("fast")
    runs = {}
    for asked, engine in (("fast", "openvino"), (chosen.mode, "openvino"), ("fast", "torch")):
        out, timing = tmp_path / f"{asked}-{engine}", tmp_path / f"{asked}-{engine}.csv"
        args = ["predict", "-i", DEMO / "imgs", "-o", out, "--checkpoint", checkpoint_path("seeded"), "--engine",
                engine, "--precision", asked, "--timing-csv", timing]
        if engine == "openvino":
            args += ["--export-dir", exports("seeded")]
        result = CliRunner().invoke(main, args)
        if engine == "torch" and chosen.mode != "f32":
            assert result.exit_code == 2, result.stderr
            assert f"--precision fast runs {chosen.mode} on this CPU, which needs the OpenVINO engine" in result.stderr
            continue
        assert result.exit_code == 0, result.stderr
        assert ("--precision fast runs" in result.stderr) == (asked == "fast")
        with open(timing) as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == 2 and {r["precision"] for r in rows} == {resolve(asked).label}
        runs[asked, engine] = {p.name: np.load(p)["segs"] for p in sorted(out.glob("*.npz"))}
    fast, named = runs["fast", "openvino"], runs[chosen.mode, "openvino"]
    assert fast.keys() == named.keys() and len(fast) == 2
    assert all(np.array_equal(fast[k], named[k]) for k in fast)  # the mode it names, bit for bit


def test_bf16_is_the_encoder_alone(exports, tmp_path):
    """The decoder's parts run f32 whatever the precision (bf16 there cost the fundus case 0.41 -> 0.14): given
    one embedding, a bf16 engine's box and point logits are the f32 engine's bit for bit."""
    from medsam_lite.core.preprocess import box_to_256, image_to_model_input
    from medsam_lite.engines.openvino_engine import OpenVINOEngine
    from medsam_lite.io.challenge import load_case

    case = load_case(DEMO / "imgs/2DBox_Synthetic_ellipses.npz")
    export = tmp_path / "export"
    shutil.copytree(exports("seeded"), export)
    exact, bf16 = OpenVINOEngine(export), OpenVINOEngine(export, precision="bf16")
    embedding = exact.encode(image_to_model_input(case.image)[0])
    boxes = box_to_256(case.boxes, case.image.shape[:2]).astype(np.float32)
    assert np.array_equal(bf16.logits(embedding, boxes), exact.logits(embedding, boxes))
    points, labels = np.array([[60.0, 70.0], [150.0, 40.0]]), np.array([1.0, 0.0])
    for got, want in zip(bf16.prompt_logits(embedding, points, labels), exact.prompt_logits(embedding, points, labels)):
        assert np.array_equal(got, want)
    if "avx512_bf16" in cpu_flags():  # the encoder itself does run bf16
        assert not np.array_equal(bf16.encode(image_to_model_input(case.image)[0]), embedding)


def test_a_rule_naming_bf16_runs_bf16(monkeypatch, exports, tmp_path):
    """Were bf16 ever measured to meet the bar, `fast` would run the bf16 engine: same embedding as bf16 named."""
    from medsam_lite.engines.openvino_engine import OpenVINOEngine
    from medsam_lite.core.preprocess import image_to_model_input
    from medsam_lite.io.challenge import load_case

    monkeypatch.setattr(precision, "FAST_RULES", (FastRule("every CPU", frozenset(), "bf16", "a test's rule"),))
    image = image_to_model_input(load_case(DEMO / "imgs/2DBox_Synthetic_ellipses.npz").image)[0]
    export = tmp_path / "export"  # a bf16 model cache of its own, beside no other test's
    shutil.copytree(exports("seeded"), export)
    fast = OpenVINOEngine(export, precision="fast")
    named = OpenVINOEngine(export, precision="bf16")
    assert (fast.precision, fast.precision_label) == ("bf16", "fast=bf16")
    assert np.array_equal(np.asarray(fast.encode(image)), np.asarray(named.encode(image)))
    if "avx512_bf16" in cpu_flags():  # with bf16 units the hint really changes the arithmetic
        exact = OpenVINOEngine(export)
        assert not np.array_equal(np.asarray(fast.encode(image)), np.asarray(exact.encode(image)))
