"""The mask decoder split into an image part (once per image) and a box part (once per box)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medsam_lite.io.challenge import load_case
from medsam_lite.engines.checkpoint import load_model
from medsam_lite.core.preprocess import box_to_256, image_to_model_input
from medsam_lite.modeling.common import exported_form

from .conftest import ROOT, op_count, shared_case

CHECKPOINTS = ["seeded", "demo", "random"]  # demo/random: the shared checkpoints (skipped without them)


DEMO_CASE = ROOT / "test_demo/imgs/2DBox_Synthetic_ellipses.npz"


def _case_inputs(model, case_path=DEMO_CASE, limit: int | None = None):
    """A 2D case's embedding and its boxes at 256, shifted and shrunk in a few ways (the test_demo image: its two
    boxes, 8 in all); the first ``limit`` of them if given."""
    case = load_case(case_path)
    image, _ = image_to_model_input(case.image)
    boxes = np.concatenate([case.boxes + [dx, dy, -dx, -dy] for dx, dy in [(0, 0), (5, 3), (-4, 8), (12, 1)]])[:limit]
    boxes = torch.as_tensor(box_to_256(boxes, case.image.shape[:2]), dtype=torch.float32)
    with torch.no_grad():
        return model.encode(torch.from_numpy(image)), boxes


@pytest.mark.parametrize("which", CHECKPOINTS)
def test_prepared_image_reused_for_every_box_is_bit_identical(checkpoint_path, which):
    model, _ = load_model(checkpoint_path(which))
    embedding, boxes = _case_inputs(model)
    with torch.no_grad():
        prepared = model.prepare_decoder(embedding)
        for box in boxes:
            assert torch.equal(model.decode_prepared(prepared, box[None]), model.decode(embedding, box[None]))


def test_prepared_image_holds_the_first_layers_projections(checkpoint_path):
    model, _ = load_model(checkpoint_path("seeded"))
    embedding, _ = _case_inputs(model)
    with torch.no_grad():
        prepared = model.prepare_decoder(embedding)
    assert prepared.keys.shape == (1, 4096, 256) and prepared.key_pe.shape == (1, 4096, 256)
    assert [t.shape for t in prepared.first_layer] == [(1, 4096, 128)] * 3
    flat = embedding.flatten(2).permute(0, 2, 1) + model.prompt_encoder.no_mask_embed.weight
    assert torch.equal(prepared.keys, flat)
    with torch.no_grad(), exported_form(model.mask_decoder):  # what the export's image part gives: heads first
        heads_first = model.prepare_decoder(embedding)
    assert torch.equal(heads_first.keys, prepared.keys)
    for sam, exported in zip(prepared.first_layer, heads_first.first_layer, strict=True):
        assert exported.shape == (1, 8, 4096, 16)
        assert torch.equal(exported.transpose(1, 2).flatten(2), sam)


@pytest.mark.parametrize("which", CHECKPOINTS)
def test_export_form_of_the_mask_differs_by_rounding_only(checkpoint_path, which):
    """predict_mask (what is exported) sums the same products as predict in another order."""
    model, _ = load_model(checkpoint_path(which))
    embedding, boxes = _case_inputs(model)
    with torch.no_grad():
        prepared = model.prepare_decoder(embedding)
        sparse = model.prompt_encoder.embed_boxes(boxes)
        reference, _ = model.mask_decoder.predict(prepared, sparse)
        exported = model.mask_decoder.predict_mask(prepared, sparse)
    assert exported.shape == reference.shape == (8, 1, 256, 256)
    scale = float(reference.abs().max())
    assert float((exported - reference).abs().max()) <= 1e-5 * max(scale, 1.0), which
    assert np.mean((exported > 0).numpy() == (reference > 0).numpy()) > 0.9999


@pytest.mark.parametrize("which", ["seeded", "official"])
def test_exported_upscaling_in_strips_equals_the_whole_bit_for_bit(checkpoint_path, monkeypatch, which):
    """The box part with its upscaling on strips of image tokens (``mask_decoder.UPSCALE_ROWS``) against the same
    part converted with the upscaling whole, both in OpenVINO: each token's 16 pixels are the same sums."""
    from medsam_lite.engines.box_decoder import compile_box_decoder, decoder_models
    from medsam_lite.engines.openvino_engine import compile_config
    from medsam_lite.modeling import mask_decoder

    model, _ = load_model(checkpoint_path(which))
    case = DEMO_CASE if which == "seeded" else shared_case("2DBox_Microscopy_SELMA3D_nuclei_004_z060.npz")
    embedding, boxes = _case_inputs(model, case, limit=6)
    config = compile_config("f32", None)
    assert 4096 % mask_decoder.UPSCALE_ROWS == 0 and mask_decoder.UPSCALE_ROWS < 4096
    strips_models = decoder_models(model)
    monkeypatch.setattr(mask_decoder, "UPSCALE_ROWS", 4096)
    whole_models = decoder_models(model)
    assert op_count(strips_models[1], "MatMul") > op_count(whole_models[1], "MatMul"), (
        "the box part holds the upscaling in strips")
    whole, strips = compile_box_decoder(*whole_models, config), compile_box_decoder(*strips_models, config)
    expected, got = whole.logits(embedding.numpy(), boxes.numpy()), strips.logits(embedding.numpy(), boxes.numpy())
    assert got.shape == (6, 256, 256) and (got > 0).any() and (got < 0).any()
    assert np.array_equal(got, expected), f"max abs difference {np.abs(got - expected).max():.3g}"


@pytest.mark.parametrize("which", ["seeded", "official"])
def test_box_part_fixed_at_one_box_equals_a_dynamic_box_axis_bit_for_bit(checkpoint_path, monkeypatch, which):
    """The box part takes one box (``manifest.BOX_INPUT_SHAPE``, format 8). With every shape static OpenVINO fuses
    the element-wise operations on the image tokens into their neighbours (no plain one is left, as there are with a
    dynamic box axis); the logits are those of the same graph converted with a dynamic box axis, bit for bit."""
    from medsam_lite.engines import box_decoder
    from medsam_lite.engines.box_decoder import compile_box_decoder, decoder_models
    from medsam_lite.engines.openvino_engine import compile_config

    model, _ = load_model(checkpoint_path(which))
    case = DEMO_CASE if which == "seeded" else shared_case("2DBox_Microscopy_SELMA3D_nuclei_004_z060.npz")
    embedding, boxes = _case_inputs(model, case, limit=6)
    fixed_models = decoder_models(model)
    monkeypatch.setattr(box_decoder, "BOX_INPUT_SHAPE", (-1, 4))
    dynamic_models = decoder_models(model)
    assert fixed_models[1].inputs[-1].get_partial_shape().is_static
    assert dynamic_models[1].inputs[-1].get_partial_shape().is_dynamic
    config = compile_config("f32", None)
    fixed, dynamic = compile_box_decoder(*fixed_models, config), compile_box_decoder(*dynamic_models, config)
    separate = [_token_wide_eltwise_nodes(d) for d in (fixed, dynamic)]
    assert separate[0] == 0 < separate[1], f"element-wise nodes on the image tokens: {separate} (fixed, dynamic)"
    expected, got = dynamic.logits(embedding.numpy(), boxes.numpy()), fixed.logits(embedding.numpy(), boxes.numpy())
    assert got.shape == (6, 256, 256) and (got > 0).any() and (got < 0).any()
    assert np.array_equal(got, expected), f"max abs difference {np.abs(got - expected).max():.3g}"


def _compiled_output_shapes(decoder, layer_type: str) -> list[list[int]]:
    """The output shapes (-1 for a dynamic axis) of the compiled box part's nodes of one OpenVINO layer type
    ("Eltwise", "Softmax"), in execution order."""
    graph = decoder._decode_request.get_compiled_model().get_runtime_model()
    return [[d.get_length() if d.is_static else -1 for d in op.get_output_partial_shape(0)]
            for op in graph.get_ordered_ops()
            if op.get_rt_info()["layerType"].astype(str) == layer_type and op.get_output_size() > 0]


def _token_wide_eltwise_nodes(decoder) -> int:
    """How many of the compiled box part's nodes are plain element-wise operations on the (4096, 256) image tokens
    (not fused into a neighbour)."""
    return sum(shape[-2:] == [4096, 256] for shape in _compiled_output_shapes(decoder, "Eltwise"))


def test_image_to_token_softmaxes_run_with_the_image_tokens_innermost(checkpoint_path):
    """Format 9: the image -> token scores are laid out (heads, 7 prompt tokens, 4096 image tokens), so each of the
    two layers' softmaxes over a head's 7 prompt tokens runs along 4096 contiguous image tokens instead of 32768
    rows of 7; every compiled softmax that touches the image tokens has them on its last axis."""
    from medsam_lite.engines.box_decoder import compile_box_decoder, decoder_models
    from medsam_lite.engines.openvino_engine import compile_config

    model, _ = load_model(checkpoint_path("seeded"))
    decoder = compile_box_decoder(*decoder_models(model), compile_config("f32", None))
    shapes = _compiled_output_shapes(decoder, "Softmax")
    image_wide = [s for s in shapes if 4096 in s]
    assert image_wide.count([1, 8, 7, 4096]) == 2, shapes  # the two layers' image -> token attention
    assert all(s[-1] == 4096 for s in image_wide), shapes
