"""Pre/post-processing against the operations the official script uses (cv2, torch)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medsam_lite.core.postprocess import LOGIT_THRESHOLD, foreground, upscale_logits
from medsam_lite.core.case import CaseError
from medsam_lite.core.preprocess import (box_to_256, image_to_model_input, mask_box_256, resize_longest_side,
                                          resized_size)


def test_grey_slice_resize_equals_repeated_rgb_resize():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (317, 211), dtype=np.uint8)
    ours, resized = image_to_model_input(grey)
    rgb, resized_rgb = image_to_model_input(np.repeat(grey[:, :, None], 3, axis=2))
    assert resized == resized_rgb == (256, 170)
    assert np.array_equal(ours, rgb)
    assert ours.shape == (1, 3, 256, 256) and ours.dtype == np.float32
    assert ours[..., 170:].max() == 0 and ours.max() == 1.0


def test_normalisation_is_float64_then_float32_like_official():
    img = np.random.default_rng(1).integers(3, 200, (64, 64, 3), dtype=np.uint8)
    r = resize_longest_side(img)
    expected = ((r - r.min()) / np.clip(r.max() - r.min(), 1e-8, None)).astype(np.float32)
    assert np.array_equal(image_to_model_input(img)[0][0].transpose(1, 2, 0), expected)
    flat = np.full((10, 10, 3), 7, np.uint8)
    assert image_to_model_input(flat)[0].max() == 0


def test_box_scaling_truncates_like_int():
    boxes = np.array([[194, 519, 369, 588], [1, 2, 1023, 1023]])
    expected = [[int(c * 256 / 1024) for c in b] for b in boxes]
    assert box_to_256(boxes, (1024, 1024)).tolist() == expected
    assert box_to_256(np.array([[100, 50, 600, 700]]), (2604, 1726)).tolist() == [
        [int(100 * 256 / 2604), int(50 * 256 / 2604), int(600 * 256 / 2604), int(700 * 256 / 2604)]
    ]


def test_propagated_box_depends_on_label_value():
    """INTER_AREA rounds the mean: a thin structure vanishes for label 1 but survives for label 200."""
    mask = np.zeros((1024, 1024), bool)
    mask[500:503, 300:700] = True  # 3 px in a 4-px cell: 3/4 of a pixel at 256
    mask[100:101, 100:900] = True  # 1 px high -> a quarter pixel at 256
    low, high = mask_box_256(mask, 1), mask_box_256(mask, 200)
    assert low is not None and high is not None
    assert high[1] < low[1]  # the 1-px line only counts for the larger label
    assert mask_box_256(np.zeros((50, 60), bool), 5) is None
    box = mask_box_256(np.ones((1024, 1024), bool), 1)
    assert box.tolist() == [0, 0, 256, 256]  # +3 px clamped to 256, as official


@pytest.mark.parametrize("resized,original", [((256, 256), (1024, 1024)), ((170, 256), (2604, 1726)[::-1]),
                                              ((256, 170), (2604, 1726)), ((200, 200), (200, 200)),
                                              ((256, 213), (218, 182))])
def test_numpy_upsampling_matches_torch(resized, original):
    rng = np.random.default_rng(2)
    logits = (rng.standard_normal((3, 256, 256)) * 4).astype(np.float32)
    cropped = torch.from_numpy(logits)[:, None, : resized[0], : resized[1]]
    expected = F.interpolate(cropped, size=original, mode="bilinear", align_corners=False)[:, 0].numpy()
    ours = upscale_logits(logits, resized, original)
    assert ours.shape == expected.shape
    assert np.abs(ours - expected).max() < 1e-5
    flips = foreground(ours) != (torch.sigmoid(torch.from_numpy(expected)) > 0.5).numpy()
    assert np.all(np.abs(expected[flips]) < 1e-5)
    part = upscale_logits(logits, resized, original, rows=slice(10, 40), cols=slice(5, 77))
    assert np.array_equal(part, ours[:, 10:40, 5:77])


def test_threshold_is_torch_sigmoid_half():
    around = np.arange(-50, 50, dtype=np.int64) + LOGIT_THRESHOLD.view(np.int32)
    values = np.concatenate([around.astype(np.int32).view(np.float32), np.float32([0, -0.0, 1e-3, -1e-3])])
    assert np.array_equal(foreground(values), (torch.sigmoid(torch.from_numpy(values)) > 0.5).numpy())


def test_resize_longest_side_uses_inter_area():
    img = np.random.default_rng(3).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    assert np.array_equal(resize_longest_side(img), cv2.resize(img, (256, 154), interpolation=cv2.INTER_AREA))


def test_an_image_too_elongated_for_the_model_is_a_case_error():
    assert resized_size(1024, 2) == (256, 1)  # 512:1 rounds its short side half up to one pixel
    assert resize_longest_side(np.zeros((1024, 2, 3), np.uint8)).shape == (256, 1, 3)
    with pytest.raises(CaseError, match=r"the image is 3 x 1540 pixels: .* would be 0 pixels .* up to 512:1"):
        resized_size(3, 1540)
