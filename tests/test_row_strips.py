"""The encoder's exported form: its first stage in strips of rows (``modeling.row_strips``), its grids turned
into tokens by one 4-D permutation (``modeling.common.grid_to_tokens``) and each window attention's q, k and v from
linears of their own (``modeling.image_encoder.WindowAttention``): the same sums as SAM's form, so OpenVINO gives
the exported embedding bit for bit and torch within rounding."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from medsam_lite.core.preprocess import image_to_model_input
from medsam_lite.engines.checkpoint import load_model
from medsam_lite.engines.manifest import MODEL_FILES
from medsam_lite.io.challenge import load_case
from medsam_lite.modeling.common import exported_form
from medsam_lite.modeling.row_strips import first_stage_in_strips

from .conftest import op_count, shared_case


def _images(which: str) -> list[np.ndarray]:
    """A random image and a real one (a synthetic picture for the seeded checkpoint): (1, 3, 256, 256)."""
    rng = np.random.default_rng(3)
    if which == "seeded":
        yy, xx = np.mgrid[:300, :420]
        picture = (((xx - 200) ** 2 + (yy - 140) ** 2 < 90**2) * 160 + rng.integers(0, 60, (300, 420))).astype(np.uint8)
    else:
        picture = load_case(shared_case("2DBox_Microscopy_SELMA3D_nuclei_004_z060.npz")).image
    return [rng.random((1, 3, 256, 256), dtype=np.float32), image_to_model_input(picture)[0]]


def _runtime_token_transposes(compiled) -> int:
    """Transpose nodes of a compiled encoder that turn a (1, C, H*W) grid into tokens: copies made after a
    convolution's own layout change back to planar."""
    ops = compiled.get_runtime_model().get_ordered_ops()
    return sum(op.get_rt_info()["layerType"].astype(str) == "Transpose" and len(op.input(0).get_shape()) == 3
               for op in ops)


@pytest.mark.parametrize("which", ["seeded", "official"])
def test_exported_encoder_equals_sams_form_bit_for_bit(exports, checkpoint_path, tmp_path, which):
    """The export (the first stage in strips, grids turned into tokens by one 4-D permutation, q, k and v from
    three linears) against the same encoder converted in SAM's form, both in OpenVINO: the same embedding, with the
    convolutions' layout handed straight to the tokens instead of reordered back and transposed, and no split of
    the attentions' qkv columns."""
    from medsam_lite.engines.openvino_engine import compile_config
    from medsam_lite.engines.openvino_import import import_converter, import_openvino

    convert, ov = import_converter(), import_openvino()
    model, _ = load_model(checkpoint_path(which))
    images = _images(which)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.image_encoder, (torch.from_numpy(images[0]),), tmp_path / "whole.onnx",
                          opset_version=17, dynamo=False)
    core = ov.Core()
    config = compile_config("f32", None)
    whole_model, export_model = convert(tmp_path / "whole.onnx"), core.read_model(exports(which) / MODEL_FILES["encoder"])
    assert op_count(export_model, "Convolution") > op_count(whole_model, "Convolution"), (
        "the export holds the first stage in strips")
    splits = [op_count(m, "VariadicSplit") for m in (whole_model, export_model)]
    assert splits == [10, 0], "SAM's form splits each of the 10 attentions' qkv columns; the export has 3 linears"
    whole, exported = (core.compile_model(m, "CPU", config) for m in (whole_model, export_model))
    # SAM's form: after each of the 10 attention blocks' local convolutions and the 3 patch merges.
    assert _runtime_token_transposes(whole) >= 13 and _runtime_token_transposes(exported) == 0
    for image in images:
        expected, got = whole(image)[0], exported(image)[0]
        assert got.shape == (1, 256, 64, 64)
        assert np.array_equal(got, expected), f"max abs difference {np.abs(got - expected).max():.3g}"


@pytest.mark.parametrize("rows", [32, 64, 128])
def test_strips_differ_from_the_whole_stage_by_rounding_only_in_torch(checkpoint_path, rows):
    """Any strip height that tiles the grid: the tokens after the first stage, within float rounding."""
    model, _ = load_model(checkpoint_path("seeded"))
    encoder = model.image_encoder
    image = torch.from_numpy(_images("seeded")[1])
    with torch.no_grad():
        whole = encoder.layers[0](encoder.patch_embed(image))
        strips = first_stage_in_strips(encoder.patch_embed, encoder.layers[0], image, strip_rows=rows)
    assert strips.shape == whole.shape == (1, 128 * 128, 128)
    assert not torch.equal(strips, whole), "torch's convolutions round strips differently"
    assert float((strips - whole).abs().max()) <= 1e-5 * max(float(whole.abs().max()), 1.0)


def test_strips_that_do_not_tile_the_grid_fall_back_to_the_whole_stage(checkpoint_path):
    model, _ = load_model(checkpoint_path("seeded"))
    encoder = model.image_encoder
    image = torch.from_numpy(_images("seeded")[0])
    with torch.no_grad():
        whole = encoder.layers[0](encoder.patch_embed(image))
        assert torch.equal(first_stage_in_strips(encoder.patch_embed, encoder.layers[0], image, strip_rows=96), whole)


def test_the_encoders_exported_form_is_switched_on_only_in_the_block(checkpoint_path):
    """Training and the torch engine run the whole stage: the embedding outside the block is the plain one."""
    model, _ = load_model(checkpoint_path("seeded"))
    image = torch.from_numpy(_images("seeded")[1])
    with torch.no_grad():
        plain = model.encode(image)
        with exported_form(model.image_encoder):
            exported = model.encode(image)
        again = model.encode(image)
    assert torch.equal(plain, again) and not torch.equal(plain, exported)
    assert float((plain - exported).abs().max()) <= 1e-5 * max(float(plain.abs().max()), 1.0)
