"""``--precision mixed``: the image encoder cut at stage 1's input, the head (patch embedding and stage 0) f32 and
the tail under the bf16 hint; the cut itself, and the mode (beside ``bf16-linears``, the other mode that keeps part
of the encoder f32; its rewrite in test_linears_bf16) on the real weights and real images."""
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


@pytest.mark.parametrize("mode, share", [("mixed", 1.0), ("bf16-linears", 0.5)])
def test_the_partly_bf16_modes_on_the_real_weights_are_nearer_fp32_than_bf16(exports, tmp_path, mode, share):
    """The official weights on three real images: where the CPU has bf16 units the embedding moves, by less than
    bf16's move (mixed) or less than half of it (bf16-linears; the 18 `cases_mm` images on the Xeon with AMX: mixed
    0.023-0.042 by norm, bf16-linears 0.013-0.022, bf16 0.033-0.058); the decoder stays f32, a pair is two single
    passes bit for bit, and the engine made again (from its model cache) gives the same embedding."""
    export = tmp_path / "export"  # a model cache of its own, beside no other test's
    shutil.copytree(exports("official"), export)
    exact, bf16, ours = (OpenVINOEngine(export, precision=p) for p in ("f32", "bf16", mode))
    names = ["2DBox_CT_BP00_lung.npz", "2DBox_MR_BP10_brain.npz", "2DBox_Fundus_BP23_retinal.npz"]
    for name in names:
        case = load_case(shared_path("cases_mm", "imgs", name))
        image = image_to_model_input(case.image)[0]
        reference, approximate, embedding = exact.encode(image), bf16.encode(image), ours.encode(image)
        if "avx512_bf16" in cpu_flags():
            assert 0 < _relative(embedding, reference) < share * _relative(approximate, reference), name
        else:  # no bf16 instructions: OpenVINO runs the hint in f32; bf16 in the graph as f32 or emulated
            assert _relative(embedding, reference) < 0.03, name
        boxes = box_to_256(case.boxes, case.image.shape[:2]).astype(np.float32)
        assert np.array_equal(ours.logits(embedding, boxes), exact.logits(embedding, boxes))
    first, second = ours.encode_pair(image, image)
    assert np.array_equal(first, embedding) and np.array_equal(second, embedding)
    assert any((export / f"cache-{mode}").iterdir())
    assert np.array_equal(OpenVINOEngine(export, precision=mode).encode(image), embedding)


def test_mixed_runs_the_mbconv_projections_of_its_head_on_the_bf16_units(exports):
    """``mixed``'s head is stage 0 in f32 but for the MBConv blocks' last 1x1 convolutions (2 blocks in each of the 4
    strips): each reads its block's depthwise convolution and adds to the block's input, and none of the patch
    embedding's, the expanding ones or the downsampling's is chosen. On a CPU with bf16 units those 8 run on them
    and everything else in the head stays f32; the head stays near its f32 output (the residual stream is f32)."""
    import openvino as ov

    from medsam_lite.engines.encoder_split import mbconv_projections, mixed_encoder

    core = ov.Core()
    xml = exports("official") / "image_encoder.xml"
    head, _ = split_encoder(core, xml, MIXED_FIRST_BF16_STAGE)
    chosen = mbconv_projections(head)
    assert len(chosen) == 8
    for op in chosen:
        assert op.get_friendly_name().startswith("/image_encoder/conv3/")
        assert op.get_output_partial_shape(0)[1].get_length() == 64
        assert op.input(1).get_partial_shape()[2:].to_shape() == [1, 1]
    convolutions = [op for op in head.get_ordered_ops() if op.get_type_name() == "Convolution"]
    assert len({op.get_friendly_name() for op in chosen}) == 8
    assert len(convolutions) == 32  # 4 strips x (2 in the patch embedding, 2 x 2 in the MBConv blocks, 2 downsampling)

    rewritten, _ = mixed_encoder(core, xml)
    image = image_to_model_input(load_case(shared_path("cases_mm", "imgs", "2DBox_CT_BP00_lung.npz")).image)[0]
    exact = core.compile_model(head, "CPU", F32)(image)[0]
    compiled = core.compile_model(rewritten, "CPU", {**F32, "PERF_COUNT": True})
    request = compiled.create_infer_request()
    ours = request.infer([image])[0]
    bf16_convolutions = [p for p in request.profiling_info if p.node_type == "Convolution" and "bf16" in p.exec_type]
    if "avx512_bf16" in cpu_flags():
        assert len(bf16_convolutions) == 8
        assert 0 < _relative(ours, exact) < 0.01
    else:
        assert _relative(ours, exact) < 0.01
