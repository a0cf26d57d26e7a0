"""Segmenting one case with an engine: 2D boxes, and 3D propagation of each box from its middle slice.

Labels: box i gets label i + 1 and later boxes overwrite earlier ones, so a voxel ends with the largest
label whose mask covers it; masks are therefore merged with ``np.maximum`` in any order.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from medsam_lite.engines.base import Engine
from medsam_lite.core.preprocess import box_to_256, image_to_model_input, mask_box_256, resized_size
from medsam_lite.core.timing import stage

EMBEDDING_BYTES = 256 * 64 * 64 * 4
DEFAULT_CACHE_BYTES = 1 << 30  # 256 slice embeddings
# Slices a sweep must encode before they are encoded two side by side (``SliceEncoder``, on the kinds of CPU where
# that pays: the engine's ``slice_pairs``, engines.cpu.PAIR_RULES): the engine's second encoder loads in about 0.2 s
# (from the model cache) and a pair saves about 45 ms on the 2-core AMD EPYC Zen 4, so the CT lesions' 7-13 slices
# stay one at a time. Whole `predict` processes there (export format 10, interleaved one at a time, pairs, pairs,
# one at a time; the same masks): microscopy 3D (120 slices, 24 boxes) encoder stage 66.2 / 66.7 -> 62.0 / 62.0 s,
# case 108.9 / 109.4 -> 103.4 / 102.4 s; AMOS CT (63) 33.5 / 33.2 -> 33.0 / 33.4 s and BraTS MR (70) 35.2 / 42.3 ->
# 36.9 / 38.1 s, within that machine's spread.
PAIRS_FROM = 16
PAIRED_ENCODER_BYTES = 256 << 20  # what that second encoder adds to the peak (microscopy 3D: 644 -> 887 MiB RSS)


def segment_2d(engine: Engine, image: np.ndarray, boxes: np.ndarray, dtype: type = np.uint8,
               embedding: Any | None = None) -> np.ndarray:
    """(H, W, 3) uint8 image, (N, 4) boxes in original pixels -> (H, W) labels; one encoder pass, none when
    ``embedding`` (of this image, e.g. from the service's cache) is given."""
    segs = np.zeros(image.shape[:2], dtype=dtype)
    if len(boxes) == 0:
        return segs
    original = image.shape[:2]
    resized = resized_size(*original)
    if embedding is None:
        embedding = encode_image(engine, image)
    for label, mask in enumerate(engine.masks(embedding, box_to_256(boxes, original), resized, original), 1):
        with stage("postprocess"):
            segs[mask] = label
    return segs


@dataclass
class BoxTrack:
    """One 3D box on its way through the volume: the slices it covers and the prompt for the next one."""

    label: int
    box_2d: np.ndarray  # (4,) original pixels
    z_first: int  # lowest slice, inclusive
    z_middle: int  # where propagation starts, with the box itself
    z_last: int  # highest slice, inclusive
    prompt: np.ndarray | None = None  # box at 256 for the next slice of the current sweep
    prompt_down: np.ndarray | None = None  # box at 256 for slice z_middle - 1
    until_empty: bool = False  # stop a sweep at the first slice where this box's mask is empty
    stopped: bool = False  # the current sweep has stopped (until_empty)

    @classmethod
    def from_box(cls, label: int, box: np.ndarray, depth: int, z_middle: int | None = None) -> "BoxTrack":
        """``z_middle``: where to start (2025 layout); default the official ``int((z_max - z_min) / 2 + z_min)``."""
        x0, y0, z0, x1, y1, z1 = (int(v) for v in box)
        if z_middle is None:
            z_middle = int((z1 - z0) / 2 + z0)
        return cls(label, np.array([x0, y0, x1, y1], dtype=np.int64), max(z0, 0), int(z_middle), min(z1, depth - 1))


class EmbeddingCache:
    """Slice embeddings kept from the upward sweep for the downward one, bounded in bytes.

    The downward sweep asks for slices from the top down, so when full the lowest slice is dropped.
    """

    def __init__(self, max_bytes: int) -> None:
        self.capacity = max(0, max_bytes // EMBEDDING_BYTES)
        self.entries: OrderedDict[int, Any] = OrderedDict()

    def put(self, z: int, embedding: Any) -> None:
        if self.capacity == 0:
            return
        self.entries[z] = embedding
        if len(self.entries) > self.capacity:
            del self.entries[min(self.entries)]

    def pop(self, z: int) -> Any | None:
        return self.entries.pop(z, None)


def _decode_slice(
    engine: Engine,
    embedding: Any,
    tracks: list[BoxTrack],
    original: tuple[int, int],
    resized: tuple[int, int],
    segs_slice: np.ndarray,
) -> list[np.ndarray]:
    """Decode all active tracks on one slice in one engine call; merge their masks into ``segs_slice``."""
    boxes = np.stack([t.prompt for t in tracks])
    masks = []
    for track, mask in zip(tracks, engine.masks(embedding, boxes, resized, original)):
        with stage("postprocess"):
            np.maximum(segs_slice, mask.astype(segs_slice.dtype) * segs_slice.dtype.type(track.label), out=segs_slice)
        masks.append(mask)
    return masks


def encode_image(engine: Engine, image: np.ndarray) -> Any:
    """(H, W, 3) or (H, W) uint8 -> the engine's embedding (one encoder pass)."""
    with stage("preprocess"):
        model_in = image_to_model_input(image)[0]
    return engine.encode(model_in)


class SliceEncoder:
    """Embeddings of a volume's slices asked for in a known ``order`` (a slice may come twice: up, then down),
    two encoded side by side where the engine can (``encode_pair``): asked for slice z, it also encodes the next
    slice of ``order`` that it does not hold already and that ``held`` does not say is kept elsewhere (the sweeps'
    cache), and hands that one out when it is asked for. Each slice is encoded once, as without pairs, as long as
    the slices are asked for in ``order``; one asked for out of it is encoded alone."""

    def __init__(self, engine: Engine, volume: np.ndarray, order: list[int], held: Callable[[int], bool]) -> None:
        self._engine, self._volume, self._order, self._held = engine, volume, order, held
        self._cursor = 0  # where in ``order`` the next slice asked for is looked for
        self._ahead: dict[int, Any] = {}

    def __call__(self, z: int) -> Any:
        if z in self._ahead:
            self._skip_to(z)
            return self._ahead.pop(z)
        following = None
        if self._skip_to(z):
            later = self._order[self._cursor :]
            following = next((n for n in later if n != z and n not in self._ahead and not self._held(n)), None)
        if following is None:
            return encode_image(self._engine, self._volume[z])
        with stage("preprocess"):
            first, second = (image_to_model_input(self._volume[n])[0] for n in (z, following))
        embedding, self._ahead[following] = self._engine.encode_pair(first, second)
        return embedding

    def _skip_to(self, z: int) -> bool:
        """Move the cursor past the next place of ``z`` in ``order``; False (cursor kept) if it has none."""
        try:
            self._cursor = self._order.index(z, self._cursor) + 1
        except ValueError:
            return False
        return True


def _next_prompt(track: BoxTrack, mask: np.ndarray, original: tuple[int, int]) -> np.ndarray:
    """Prompt for the neighbouring slice: the box of this slice's mask, else the box itself."""
    with stage("postprocess"):
        box = mask_box_256(mask, track.label)
    return box if box is not None else box_to_256(track.box_2d, original)


def slice_boxes(boxes_2d: np.ndarray, z_middle: np.ndarray, depth: int, reach: int | None = None) -> np.ndarray:
    """(N, 4) boxes drawn on slices ``z_middle`` (N,) -> (N, 6) boxes whose z range is where ``segment_3d(...,
    until_empty=True)`` may go: ``reach`` slices each way (None: the whole volume), within ``0..depth - 1``."""
    z = np.asarray(z_middle, dtype=np.int64)
    span = depth if reach is None else int(reach)
    boxes = np.asarray(boxes_2d, dtype=np.int64).reshape(-1, 4)
    return np.stack([boxes[:, 0], boxes[:, 1], np.maximum(z - span, 0), boxes[:, 2], boxes[:, 3],
                     np.minimum(z + span, depth - 1)], axis=1)


def segment_3d(
    engine: Engine, volume: np.ndarray, boxes: np.ndarray, dtype: type = np.uint8, cache_bytes: int = DEFAULT_CACHE_BYTES,
    z_middle: np.ndarray | None = None, slice_embedding: Callable[[int], Any] | None = None, until_empty: bool = False,
) -> np.ndarray:
    """(D, H, W) uint8 volume, (N, 6) boxes -> (D, H, W) labels, each slice encoded once.

    ``z_middle`` (N,): the slice each box starts on (the 2025 layout's ``z_mid``); default its middle slice.
    ``slice_embedding(z)``: where embeddings come from (the service's cache); default one encoder pass per slice.

    Per box (as the official script): start on ``z_middle`` with the box itself, go up to z_max and down
    to z_min; every other slice is prompted by the box of the previous slice's mask of that box alone
    (resized to 256, +3 px), or by the box itself where that mask is empty. All boxes advance together:
    an upward sweep over every slice that any box needs going up, then a downward sweep; embeddings the
    downward sweep needs again are kept in a bounded cache.

    ``until_empty``: a box drawn on one slice (nnInteractive, MONAI Label without a z extent, ``segment
    --until-empty``): its z range only bounds the sweeps, and each sweep stops at the first slice where the box's
    mask is empty (so the box itself never prompts a slice other than ``z_middle``); slices no box reaches any more
    are not encoded.
    """
    depth, height, width = volume.shape
    original = (height, width)
    resized = resized_size(height, width)
    segs = np.zeros(volume.shape, dtype=dtype)
    starts = [None] * len(boxes) if z_middle is None else [int(z) for z in z_middle]
    tracks = [BoxTrack.from_box(i + 1, box, depth, start) for i, (box, start) in enumerate(zip(boxes, starts))]
    tracks = [t for t in tracks if t.z_first <= t.z_middle <= t.z_last]
    for t in tracks:
        t.until_empty = until_empty
    if not tracks:
        return segs
    needed_up = [z for z in range(min(t.z_middle for t in tracks), max(t.z_last for t in tracks) + 1)
                 if any(t.z_middle <= z <= t.z_last for t in tracks)]
    needed_down = {z for t in tracks for z in range(t.z_first, t.z_middle)}
    cache = EmbeddingCache(cache_bytes)
    embed = slice_embedding or (lambda z: encode_image(engine, volume[z]))
    if slice_embedding is None and not until_empty and engine.slice_pairs \
            and len(needed_down.union(needed_up)) >= PAIRS_FROM:  # every planned slice is asked for
        order = needed_up + sorted(needed_down, reverse=True)
        embed = SliceEncoder(engine, volume, order, held=lambda z: z in cache.entries)

    for t in tracks:
        t.prompt = box_to_256(t.box_2d, original)
    for z in needed_up:
        active = [t for t in tracks if t.z_middle <= z <= t.z_last and not t.stopped]
        if not active:
            continue
        embedding = embed(z)
        if z in needed_down:
            cache.put(z, embedding)
        for t, mask in zip(active, _decode_slice(engine, embedding, active, original, resized, segs[z])):
            t.prompt = _next_prompt(t, mask, original)
            t.stopped = t.until_empty and not mask.any()
            if z == t.z_middle:
                t.prompt_down = None if t.stopped else t.prompt

    for t in tracks:
        t.prompt, t.stopped = t.prompt_down, t.prompt_down is None
    for z in sorted(needed_down, reverse=True):
        active = [t for t in tracks if t.z_first <= z < t.z_middle and not t.stopped]
        if not active:
            continue
        embedding = cache.pop(z)
        if embedding is None:
            embedding = embed(z)
        for t, mask in zip(active, _decode_slice(engine, embedding, active, original, resized, segs[z])):
            t.prompt = _next_prompt(t, mask, original)
            t.stopped = t.until_empty and not mask.any()
    return segs

