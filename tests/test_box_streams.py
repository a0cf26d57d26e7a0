"""Boxes of one slice decoded side by side on the box part's two streams (``BoxDecoder``: calls of
MIN_SIDE_BY_SIDE boxes or more, once STREAMS_AFTER boxes were decoded): the logits of every box are those of
decoding it alone, bit for bit, whatever the count (an odd one out goes to the request of all threads)."""
from __future__ import annotations

import numpy as np
import pytest

from medsam_lite.core.preprocess import box_to_256, image_to_model_input
from medsam_lite.engines import box_decoder
from medsam_lite.engines.box_decoder import MIN_SIDE_BY_SIDE
from medsam_lite.engines.openvino_engine import OpenVINOEngine
from medsam_lite.io.challenge import load_case

from .conftest import shared_case
from .test_decoder_split import DEMO_CASE


@pytest.mark.parametrize("which", ["seeded", "official"])
def test_boxes_side_by_side_give_each_box_its_own_logits(exports, monkeypatch, which):
    engine = OpenVINOEngine(exports(which))  # a fresh one: no box decoded yet
    case = load_case(DEMO_CASE if which == "seeded" else shared_case("2DBox_Microscopy_SELMA3D_nuclei_004_z060.npz"))
    embedding = engine.encode(image_to_model_input(case.image)[0])
    count = 2 * MIN_SIDE_BY_SIDE + 1
    shifts = np.random.default_rng(0).integers(-3, 4, size=(-(-count // len(case.boxes)), 2))
    boxes = np.concatenate([case.boxes + [dx, dy, -dx, -dy] for dx, dy in shifts])[:count]
    boxes = box_to_256(boxes, case.image.shape[:2]).astype(np.float32)
    alone = np.stack([engine.logits(embedding, box[None])[0] for box in boxes])
    decoder = engine._boxes
    assert np.array_equal(engine.logits(embedding, boxes), alone)
    assert decoder._stream_requests is None  # 2 x 33 boxes decoded: fewer than STREAMS_AFTER, no streams made
    monkeypatch.setattr(box_decoder, "STREAMS_AFTER", 0)
    for n in (MIN_SIDE_BY_SIDE - 1, MIN_SIDE_BY_SIDE, MIN_SIDE_BY_SIDE + 1, count):
        assert np.array_equal(engine.logits(embedding, boxes[:n]), alone[:n]), n
    assert len(decoder._streams()) == (2 if decoder.threads >= 2 else 0)  # the side-by-side path really ran
    assert engine.logits(embedding, boxes[:0]).shape == (0, 256, 256)
