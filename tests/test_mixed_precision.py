"""``--precision mixed``: the image encoder cut at stage 1's input, the head (patch embedding and stage 0) f32 and
the tail under the bf16 hint; the cut itself, and the mode on the real weights and real images."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from medsam_lite.core.preprocess import box_to_256, image_to_model_input
from medsam_lite.engines.cpu import cpu_flags
from medsam_lite.engines.encoder_split import MIXED_FIRST_BF16_STAGE, split_encoder
from medsam_lite.engines.openvino_engine import OpenVINOEngine, compile_config
from medsam_lite.io.challenge import load_case

from .conftest import ROOT, shared_path

DEMO = ROOT / "test_demo"
F32 = compile_config("f32", None)


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_the_cut_encoder_in_f32_is_the_whole_encoder(exports):
    """Both parts compiled f32 give the whole encoder's embedding: the cut drops no branch, and stage 0 is in the
    head, stage 1 on in the tail."""
    import openvino as ov

    core = ov.Core()
    xml = exports("seeded") / "image_encoder.xml"
    head, tail = split_encoder(core, xml, MIXED_FIRST_BF16_STAGE)
    assert len(head.outputs) == 1 and len(tail.inputs) == 1
    assert head.output(0).get_partial_shape() == tail.input(0).get_partial_shape()
    head_ops = {op.get_friendly_name() for op in head.get_ordered_ops()}
    tail_ops = {op.get_friendly_name() for op in tail.get_ordered_ops()}
    assert any(n.startswith("/image_encoder/patch_embed/") for n in head_ops)
    assert not any(n.startswith(("/image_encoder/layers.1/", "/image_encoder/neck/")) for n in head_ops)
    assert any(n.startswith("/image_encoder/layers.1/") for n in tail_ops)
    assert not any(n.startswith("/image_encoder/patch_embed/") for n in tail_ops)
    image = image_to_model_input(load_case(DEMO / "imgs/2DBox_Synthetic_ellipses.npz").image)[0]
    whole = core.compile_model(xml, "CPU", F32)(image)[0]
    first, second = core.compile_model(head, "CPU", F32), core.compile_model(tail, "CPU", F32)
    cut = second(first(image)[0])[0]
    assert cut.shape == whole.shape == (1, 256, 64, 64)
    assert _relative(cut, whole) < 1e-5
    with pytest.raises(ValueError, match="no stage layers.9"):
        split_encoder(core, xml, "layers.9")


def test_mixed_on_the_real_weights_is_nearer_fp32_than_bf16(exports, tmp_path):
    """The official weights on three real images: the mixed embedding is nearer the f32 one than bf16's (where
    the CPU has bf16 units, so that the hint changes anything), the decoder stays f32, a pair is two single
    passes bit for bit, and the engine made again (from its model cache) gives the same embedding."""
    export = tmp_path / "export"  # a cache-mixed of its own, beside no other test's
    shutil.copytree(exports("official"), export)
    exact, bf16, mixed = (OpenVINOEngine(export, precision=p) for p in ("f32", "bf16", "mixed"))
    names = ["2DBox_CT_BP00_lung.npz", "2DBox_MR_BP10_brain.npz", "2DBox_Fundus_BP23_retinal.npz"]
    for name in names:
        case = load_case(shared_path("cases_mm", "imgs", name))
        image = image_to_model_input(case.image)[0]
        reference, approximate, ours = exact.encode(image), bf16.encode(image), mixed.encode(image)
        if "avx512_bf16" in cpu_flags():
            assert 0 < _relative(ours, reference) < _relative(approximate, reference), name
        else:  # no bf16 units: the hint runs f32
            assert _relative(ours, reference) < 1e-5, name
        boxes = box_to_256(case.boxes, case.image.shape[:2]).astype(np.float32)
        assert np.array_equal(mixed.logits(ours, boxes), exact.logits(ours, boxes))
    first, second = mixed.encode_pair(image, image)
    assert np.array_equal(first, ours) and np.array_equal(second, ours)
    assert any((export / "cache-mixed").iterdir())
    assert np.array_equal(OpenVINOEngine(export, precision="mixed").encode(image), ours)
