"""Overlay PNGs a person reads at a glance: the web page's label colours, a full-colour outline around each mask
over a lighter fill, and the box in the same colour."""
from __future__ import annotations

import json
import re

import numpy as np

from medsam_lite.io.overlay import FILL_ALPHA, PALETTE, label_colours, overlay_image

from .conftest import ROOT


def test_the_palette_is_the_web_pages():
    script = (ROOT / "medsam_lite/serve/static/labels.js").read_text()
    listed = re.search(r"const PALETTE = (\[.*?\]);", script, re.S).group(1)
    assert [tuple(c) for c in json.loads(re.sub(r",\s*\]$", "]", listed.strip()))] == PALETTE
    colours = label_colours(25)
    assert tuple(colours[0]) == (0, 0, 0)
    assert tuple(colours[1][::-1]) == PALETTE[0] and tuple(colours[21][::-1]) == PALETTE[0]  # BGR, wraps at 20


def test_outline_fill_and_box_in_the_label_colour():
    image = np.full((100, 120, 3), 100, np.uint8)
    segs = np.zeros((100, 120), np.uint8)
    segs[20:60, 30:80] = 1
    segs[70:90, 90:110] = 2
    boxes = np.array([[25, 15, 85, 65], [88, 68, 112, 92]])
    picture = overlay_image(image, segs, boxes)  # BGR
    first, second = label_colours(2)[1], label_colours(2)[2]
    assert np.array_equal(picture[20, 50], first) and np.array_equal(picture[59, 50], first)  # outline
    expected = np.round((1 - FILL_ALPHA) * 100 + FILL_ALPHA * first.astype(np.float32)).astype(int)
    assert np.abs(picture[40, 55].astype(int) - expected).max() <= 1  # fill: blended, the image shows through
    assert np.array_equal(picture[15, 50], first) and np.array_equal(picture[40, 25], first)  # the box
    assert np.array_equal(picture[70, 100], second)
    assert np.array_equal(picture[5, 5], [100, 100, 100])  # untouched elsewhere


def test_3d_draws_the_middle_slice_and_its_boxes():
    volume = np.full((5, 40, 40), 50, np.uint8)
    segs = np.zeros((5, 40, 40), np.uint8)
    segs[2, 10:20, 10:20] = 1
    boxes = np.array([[8, 8, 1, 22, 22, 3], [0, 0, 4, 5, 5, 4]])  # the second does not reach slice 2
    picture = overlay_image(volume, segs, boxes)
    assert picture.shape == (40, 40, 3)
    assert np.array_equal(picture[10, 15], label_colours(1)[1]) and np.array_equal(picture[8, 15], label_colours(1)[1])
    assert np.array_equal(picture[0, 2], [50, 50, 50])
