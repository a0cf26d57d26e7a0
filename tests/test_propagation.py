"""3D propagation on a seeded checkpoint (runs anywhere): the fast schedule computes what the official
per-box schedule computes with each slice encoded once, and a bounded embedding cache changes only the
number of encoder passes."""
from __future__ import annotations

import numpy as np

from medsam_lite.io.challenge import load_case
from medsam_lite.pipeline.official import segment_3d_official
from medsam_lite.core.preprocess import box_to_256, image_to_model_input, mask_box_256
from medsam_lite.pipeline.segment import segment_3d

from .conftest import ROOT

VOLUME = ROOT / "test_demo/imgs/3DBox_Synthetic_ellipsoids.npz"


def _passes(engine, run, *args, **kwargs):
    before = engine.encoder_passes
    result = run(engine, *args, **kwargs)
    return result, engine.encoder_passes - before


def test_fast_schedule_equals_official_schedule_with_one_pass_per_slice(torch_engines):
    engine = torch_engines("seeded")
    case = load_case(VOLUME)
    fast, fast_passes = _passes(engine, segment_3d, case.image, case.boxes)
    official, official_passes = _passes(engine, segment_3d_official, case.image, case.boxes)
    assert np.array_equal(fast, official)
    assert set(np.unique(fast)) == {0, 1, 2}
    assert official_passes == sum(int(b[5]) - int(b[2]) + 1 for b in case.boxes)
    assert fast_passes == len({z for b in case.boxes for z in range(int(b[2]), int(b[5]) + 1)}) < official_passes


def _slice_mask(engine, image_slice, box_256):
    model_in, resized = image_to_model_input(image_slice)
    return next(iter(engine.masks(engine.encode(model_in), box_256[None], resized, image_slice.shape)))


def test_each_slice_is_prompted_by_the_box_of_its_neighbours_mask(torch_engines):
    """The middle slice gets the 3D box itself; slice middle+1 and middle-1 get the box (at 256, +3 px) of the
    middle slice's mask; nothing outside z_min..z_max is segmented."""
    engine = torch_engines("seeded")
    case = load_case(VOLUME)
    box = case.boxes[:1]
    x0, y0, z0, x1, y1, z1 = (int(v) for v in box[0])
    segs = segment_3d(engine, case.image, box)
    middle = int((z1 - z0) / 2 + z0)
    original = case.image.shape[1:]
    box_256 = box_to_256(np.array([x0, y0, x1, y1]), original)
    assert np.array_equal(segs[middle] == 1, _slice_mask(engine, case.image[middle], box_256))
    from_middle = mask_box_256(segs[middle] == 1, 1)
    assert from_middle is not None and not np.array_equal(from_middle, box_256)
    for z in (middle + 1, middle - 1):
        assert np.array_equal(segs[z] == 1, _slice_mask(engine, case.image[z], from_middle)), z
    assert not segs[:z0].any() and not segs[z1 + 1 :].any()


def test_bounded_cache_reencodes_but_gives_the_same_masks(torch_engines):
    """Two boxes whose sweeps share slices 3..5: with no room for embeddings those are encoded twice."""
    engine = torch_engines("seeded")
    case = load_case(VOLUME)
    x0, y0, _, x1, y1, _ = case.boxes[0]
    boxes = np.array([[x0, y0, 3, x1, y1, 9], [x0 + 5, y0 + 5, 0, x1, y1, 5]])  # middles 6 and 2
    counts, results = [], []
    for cache_bytes in (1 << 30, 0):
        segs, passes = _passes(engine, segment_3d, case.image, boxes, cache_bytes=cache_bytes)
        results.append(segs)
        counts.append(passes)
    assert counts == [10, 13]
    assert np.array_equal(results[0], results[1])
    assert set(np.unique(results[0])) <= {0, 1, 2} and (results[0] == 2).any()


def test_until_empty_stops_each_sweep_at_the_first_empty_slice(torch_engines):
    """A box drawn on one slice (segment --until-empty, the viewers' boxes): the same masks as predict's
    propagation up to and including the first slice where the mask vanishes, nothing beyond, and no slice beyond
    it encoded."""
    from medsam_lite.pipeline.segment import slice_boxes

    engine = torch_engines("demo")
    case = load_case(VOLUME)
    volume = case.image.copy()
    volume[:2] = volume[8:] = 0  # blank slices: the demo weights' masks vanish there
    depth = volume.shape[0]
    x0, y0, z0, x1, y1, z1 = (int(v) for v in case.boxes[0])
    start = (z0 + z1) // 2
    boxes = slice_boxes(np.array([[x0, y0, x1, y1]]), np.array([start]), depth)
    assert boxes.tolist() == [[x0, y0, 0, x1, y1, depth - 1]]
    full, _ = _passes(engine, segment_3d, volume, boxes, z_middle=np.array([start]))
    until, passes = _passes(engine, segment_3d, volume, boxes, z_middle=np.array([start]), until_empty=True)
    present = full.any(axis=(1, 2))
    up_end = next((z for z in range(start, depth) if not present[z]), depth - 1)
    down_end = next((z for z in range(start - 1, -1, -1) if not present[z]), 0) if present[start] else start
    assert present[start] and (not present[up_end] or not present[down_end]), "a sweep must stop in this volume"
    assert np.array_equal(until[down_end:up_end + 1], full[down_end:up_end + 1])
    assert not until[:down_end].any() and not until[up_end + 1:].any()
    assert (down_end, up_end) == (1, 8) and passes == up_end - down_end + 1
