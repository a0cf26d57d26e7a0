"""The point-prompt path (SAM's prompt encoder and all four mask tokens) in torch, in the export, and SAM's
automatic mask generation built on it."""
from __future__ import annotations

import math

import numpy as np
import pytest

from medsam_lite.pipeline.automask import box_nms, crop_boxes, point_grid, remove_small_regions, stability_score
from medsam_lite.pipeline.prompting import sam_prompt

from .conftest import ROOT

DEMO_2D = ROOT / "test_demo/imgs/2DBox_Synthetic_ellipses.npz"


def test_all_four_mask_tokens_equal_sams_own_upscaling(torch_engines):
    """predict_all_masks (per-pixel form) against the decoder's ConvTranspose2d upscaling, token by token."""
    import torch

    model = torch_engines("seeded").model
    torch.manual_seed(0)
    with torch.no_grad():
        image = model.prepare_decoder(model.encode(torch.rand(1, 3, 256, 256)))
        coords, labels = torch.tensor([[[40.0, 60.0], [200.0, 30.0], [0.0, 0.0]]]), torch.tensor([[1.0, 0.0, -1.0]])
        sparse = model.prompt_encoder.embed_points(coords, labels)
        logits, iou = model.mask_decoder.predict_all_masks(image, sparse)
        decoder = model.mask_decoder
        hs, src = decoder._transformer(image, sparse)
        side = math.isqrt(src.shape[1])
        upscaled = decoder.output_upscaling(src.transpose(1, 2).reshape(1, -1, side, side))
        hyper = torch.stack([mlp(hs[:, 1 + i]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1)
        reference = (hyper @ upscaled.flatten(2)).view(1, 4, 256, 256)
        assert logits.shape == (1, 4, 256, 256) and iou.shape == (1, 4)
        assert torch.allclose(logits, reference, atol=1e-4)
        assert torch.allclose(iou, decoder.iou_prediction_head(hs[:, 0]), atol=0)


def test_a_box_as_corner_points_is_the_box_path(torch_engines):
    import torch

    model = torch_engines("seeded").model
    box = torch.tensor([[20.0, 30.0, 120.0, 160.0]])
    assert torch.equal(model.prompt_encoder.embed_boxes(box),
                       model.prompt_encoder.embed_points(box.reshape(1, 2, 2), torch.tensor([[2.0, 3.0]])))


def test_openvino_prompt_decoder_matches_torch(torch_engines, ov_engines):
    from medsam_lite.core.preprocess import image_to_model_input

    image = np.load(DEMO_2D)["imgs"]
    model_in, _ = image_to_model_input(image)
    coords, labels = sam_prompt(image.shape[:2], np.array([[60, 70], [10, 10]]), np.array([1, 0]),
                                np.array([30, 40, 150, 160]))
    assert labels.tolist() == [1, 0, 2, 3]
    torch_logits, torch_iou = torch_engines("seeded").prompt_logits(torch_engines("seeded").encode(model_in), coords, labels)
    ov_logits, ov_iou = ov_engines("seeded").prompt_logits(ov_engines("seeded").encode(model_in), coords, labels)
    assert ov_logits.shape == (4, 256, 256) and np.abs(ov_logits - torch_logits).max() < 2e-3
    assert np.abs(ov_iou - torch_iou).max() < 1e-3
    pad_coords, pad_labels = sam_prompt(image.shape[:2], np.array([[60, 70]]), np.array([1]))
    assert pad_labels.tolist() == [1, -1]  # SAM's padding point without a box
    assert np.allclose(pad_coords[0], np.array([60, 70]) * 256 / max(image.shape[:2]))


def test_amg_helpers_are_sams():
    grid = point_grid(2)
    assert np.allclose(grid, [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])
    crops = crop_boxes(100, 200, 1, 512 / 1500)
    # layer 1: 2x2 crops with overlap int(512/1500 * 100 * 2/2) = 34; crop w = ceil((34 + 200) / 2) = 117, h = 67
    assert crops[0] == ((0, 0, 200, 100), 0)
    assert [c for c, _ in crops[1:]] == [(0, 0, 117, 67), (83, 0, 200, 67), (0, 33, 117, 100), (83, 33, 200, 100)]
    logits = np.array([[-2.0, -0.5, 0.5, 2.0]])
    assert stability_score(logits, 1.0) == pytest.approx(1 / 3)
    boxes = np.array([[0, 0, 9, 9], [1, 1, 10, 10], [50, 50, 60, 60]])
    assert box_nms(boxes, np.array([0.5, 0.9, 0.7]), 0.5) == [1, 2]
    mask = np.zeros((20, 20), bool)
    mask[2:12, 2:12] = True
    mask[5, 5] = False  # a one-pixel hole
    mask[18, 18] = True  # a one-pixel island
    cleaned, changed = remove_small_regions(mask, 3)
    assert changed and cleaned[5, 5] and not cleaned[18, 18] and cleaned.sum() == 100


def test_generate_keeps_the_prompt_masks_that_pass(ov_engines):
    from medsam_lite.pipeline.automask import AutoMaskParams, generate
    from medsam_lite.pipeline.prompting import prompt_masks
    from medsam_lite.pipeline.segment import encode_image

    engine = ov_engines("seeded")
    image = np.load(DEMO_2D)["imgs"]
    embedding = encode_image(engine, image)
    params = AutoMaskParams(points_per_side=3, pred_iou_thresh=-100, stability_score_thresh=0.0, box_nms_thresh=1.0,
                            output_type="Multi-mask (all)")
    found = generate(engine, image, params, lambda crop, part: embedding)
    expected = []
    for px, py in point_grid(3) * np.array([image.shape[1], image.shape[0]]):
        coords, labels = sam_prompt(image.shape[:2], np.array([[px, py]]), np.array([1]))
        expected += [m for m in prompt_masks(engine, embedding, coords, labels, image.shape[:2], True) if m.mask.any()]
    assert len(found) == len(expected)  # nothing filtered: every non-empty candidate, nothing suppressed
    by_iou = sorted(expected, key=lambda m: -m.iou)
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(sorted(found, key=lambda a: -a.iou), by_iou))
    strict = generate(engine, image, AutoMaskParams(points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.5,
                                                    output_type="Multi-mask (all)"), lambda crop, part: embedding)
    assert all(a.iou > 0.0 and a.stability >= 0.5 for a in strict) and len(strict) <= len(found)
