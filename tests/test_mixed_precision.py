"""``--precision mixed``: the image encoder cut at stage 1's input, the head (patch embedding and stage 0) f32 but for
its MBConv projections and the tail under the bf16 hint, the box decoder's largest products bf16; the cut, both
rewrites, and the mode (beside ``bf16-linears``, the other mode that keeps part of the encoder f32; its rewrite in
test_linears_bf16) on the real weights and real images."""
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
    head, tail = split_encoder(core.read_model(xml), MIXED_FIRST_BF16_STAGE)
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
        split_encoder(core.read_model(xml), "layers.9")


@pytest.mark.parametrize("mode, share", [("mixed", 1.0), ("bf16-linears", 0.5)])
def test_the_partly_bf16_modes_on_the_real_weights_are_nearer_fp32_than_bf16(exports, tmp_path, mode, share):
    """The official weights on three real images: where the CPU has bf16 units the embedding moves, by less than
    bf16's move (mixed) or less than half of it (bf16-linears; the 18 `cases_mm` images on the Xeon with AMX: mixed
    0.023-0.042 by norm, bf16-linears 0.013-0.022, bf16 0.033-0.058); bf16-linears' decoder stays f32, mixed's box
    masks stay within 1 % of f32's given the same embedding, a pair is two single passes bit for bit, and the engine
    made again (from its model cache) gives the same embedding and logits."""
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
        logits, exact_logits = ours.logits(embedding, boxes), exact.logits(embedding, boxes)
        if mode == "bf16-linears":
            assert np.array_equal(logits, exact_logits)
        else:  # 0.11 % of the foreground of 6 cases_mm images' boxes flipped on the Xeon with AMX
            flipped = np.count_nonzero((logits > 0) != (exact_logits > 0))
            assert flipped <= 0.01 * np.count_nonzero(exact_logits > 0), name
            assert not np.array_equal(logits, exact_logits) or "avx512_bf16" not in cpu_flags()
    first, second = ours.encode_pair(image, image)
    assert np.array_equal(first, embedding) and np.array_equal(second, embedding)
    assert any((export / f"cache-{mode}").iterdir())
    again = OpenVINOEngine(export, precision=mode)
    assert np.array_equal(again.encode(image), embedding)
    assert np.array_equal(again.logits(embedding, boxes), ours.logits(embedding, boxes))


def test_mixed_runs_the_mbconv_projections_of_its_head_on_the_bf16_units(exports):
    """``mixed``'s head is stage 0 in f32 but for the MBConv blocks' last 1x1 convolutions (2 blocks in each of the 4
    strips): each reads its block's depthwise convolution and adds to the block's input, and none of the patch
    embedding's, the expanding ones or the downsampling's is chosen. On a CPU with bf16 units those 8 run on them
    and everything else in the head stays f32; the head stays near its f32 output (the residual stream is f32)."""
    import openvino as ov

    from medsam_lite.engines.encoder_split import mbconv_projections, mixed_encoder

    core = ov.Core()
    xml = exports("official") / "image_encoder.xml"
    head, _ = split_encoder(core.read_model(xml), MIXED_FIRST_BF16_STAGE)
    chosen = mbconv_projections(head)
    assert len(chosen) == 8
    for op in chosen:
        assert op.get_friendly_name().startswith("/image_encoder/conv3/")
        assert op.get_output_partial_shape(0)[1].get_length() == 64
        assert op.input(1).get_partial_shape()[2:].to_shape() == [1, 1]
    convolutions = [op for op in head.get_ordered_ops() if op.get_type_name() == "Convolution"]
    assert len({op.get_friendly_name() for op in chosen}) == 8
    assert len(convolutions) == 32  # 4 strips x (2 in the patch embedding, 2 x 2 in the MBConv blocks, 2 downsampling)

    rewritten, _ = mixed_encoder(core.read_model(xml))
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


def test_mixed_decodes_a_box_with_its_largest_products_on_the_bf16_units(exports):
    """The box part's products of at least 30 M multiply-adds are the upscaling's two linears in each of its 4 strips
    and the 5 image-side products of the attentions (4096 image tokens against 56 prompt rows); every other product
    is under 10 M and stays f32. On a CPU with bf16 units those 13 run on them, and the logits stay near f32's."""
    import openvino as ov

    from medsam_lite.engines.decoder_bf16 import MIN_MACS, box_decoder_in_bf16, large_products, product_macs

    core = ov.Core()
    xml = exports("official") / "mask_decoder.xml"
    model = core.read_model(xml)
    products = [op for op in model.get_ordered_ops() if op.get_type_name() == "MatMul"]
    chosen = large_products(model)
    assert len(chosen) == 13
    weights = [op for op in chosen if op.input(1).get_source_output().get_node().get_type_name() == "Constant"]
    assert len(weights) == 8  # the upscaling: 256 -> 4 x 64, then 64 -> 4 x 32, in 4 strips of 1024 tokens
    assert sorted(product_macs(op) for op in weights) == [1024 * 4 * 64 * 128] * 4 + [1024 * 256 * 256] * 4
    assert [product_macs(op) for op in chosen if op not in weights] == [4096 * 56 * 256] * 5
    assert all(product_macs(op) < 10_000_000 for op in products if op not in chosen) and MIN_MACS == 30_000_000

    rng = np.random.default_rng(0)
    prepared = core.compile_model(exports("official") / "decoder_image.xml", "CPU", F32)(
        rng.standard_normal((1, 256, 64, 64), dtype=np.float32) * 0.3)
    inputs = [*prepared.values(), np.array([[40.0, 50.0, 140.0, 170.0]], np.float32)]
    exact = core.compile_model(xml, "CPU", F32)(inputs)[0]
    request = core.compile_model(box_decoder_in_bf16(model), "CPU", {**F32, "PERF_COUNT": True}).create_infer_request()
    ours = request.infer(inputs)[0]
    on_bf16 = [p for p in request.profiling_info
               if p.node_type in ("MatMul", "FullyConnected") and "bf16" in p.exec_type]
    if "avx512_bf16" in cpu_flags():
        assert len(on_bf16) == 13
        assert 0 < _relative(ours, exact) < 0.01
    else:
        assert _relative(ours, exact) < 0.01
